//! The edgehil agent: runs on a board (or as the emulated board) and serves
//! the host over a serial port or stdin/stdout.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use edgehil_runtime::agent::{self, AgentConfig};
use edgehil_runtime::cap::CappedAlloc;
use edgehil_runtime::sys::MapLarge;
use edgehil_runtime::wire::PROTOCOL_VERSION;

#[global_allocator]
static ALLOC: CappedAlloc<MapLarge> = CappedAlloc::new(MapLarge);

#[derive(Parser)]
#[command(version, about = "edgehil board agent: loads ONNX models under a RAM cap and serves the host")]
struct Args {
    /// Serial port to serve on, e.g. /dev/ttyS0 or a pseudo-terminal.
    #[arg(long, conflicts_with = "stdio")]
    port: Option<PathBuf>,
    /// Baud rate of --port.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Serve on stdin/stdout instead of a serial port.
    #[arg(long)]
    stdio: bool,
    /// Heap cap in bytes (0: none): the board's usable RAM.
    #[arg(long, default_value_t = 0)]
    cap: u64,
    /// Most engine threads to use: the board's cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// libonnxruntime.so for the `ort` engine.
    #[arg(long, env = "EDGEHIL_ORT_LIBRARY")]
    ort_library: Option<PathBuf>,
    /// Folder for uploaded models, kept across runs (content-addressed:
    /// DIR/FOLDER-SHA256/NAME). Without it uploads are held in RAM, counted
    /// against --cap, until the agent ends.
    #[arg(long)]
    storage: Option<PathBuf>,
    /// Instead of serving: load this Llama-family Hugging Face folder under
    /// --cap, run LoRA training steps on it and print what they measured
    /// (one JSON line).
    #[arg(long, conflicts_with_all = ["port", "stdio"])]
    train_step: Option<PathBuf>,
    /// LoRA rank of --train-step (alpha twice the rank).
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Tokens of --train-step's sample.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Steps of --train-step; the median step's time is reported.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Protocol version to claim; for testing the host's version check.
    #[arg(long, default_value_t = PROTOCOL_VERSION, hide = true)]
    protocol_version: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    ALLOC.set_refusal_hook(agent::report_refusal);
    ALLOC.set_cap(usize::try_from(args.cap).unwrap_or(usize::MAX));
    let config = AgentConfig {
        threads: args.threads,
        ort_library: args.ort_library,
        protocol_version: args.protocol_version,
        storage: args.storage,
    };
    if let Some(dir) = &args.train_step {
        let heap = || (ALLOC.in_use() as u64, ALLOC.peak() as u64);
        return match edgehil_runtime::train::measure(dir, args.rank, args.tokens, args.steps, &heap, &|| {
            ALLOC.reset_peak()
        }) {
            Ok(report) => {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edgehil-agent: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = match (&args.port, args.stdio) {
        (Some(path), _) => serialport::new(path.to_string_lossy(), args.baud)
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(|e| std::io::Error::other(format!("cannot open {}: {e}", path.display())))
            .and_then(|port| {
                let fd = port.as_raw_fd();
                let writer = port.try_clone_native().map_err(std::io::Error::other)?;
                agent::serve(port, Box::new(writer), fd, &ALLOC, config)
            }),
        (None, true) => agent::serve(std::io::stdin().lock(), Box::new(std::io::stdout()), 1, &ALLOC, config),
        (None, false) => {
            eprintln!("edgehil-agent: give --port PATH or --stdio");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgehil-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
