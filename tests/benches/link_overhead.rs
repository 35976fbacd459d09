//! Overhead of the board path: the median latency of a model run by the agent
//! on the emulated board (child process, pty, capped allocator, heartbeat
//! thread) against the same engine called in-process, measured side by side
//! in one run, in alternating rounds so that drift on a shared machine hits
//! both alike. Target: at most 3% for a model whose run takes 5 ms or more.
//!
//! Run: `cargo bench -p edgehil-tests --profile dev` (engines at opt-level 2,
//! the agent the tests built), or `--release` after `cargo build --release --bins`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgehil_hil::{EmulatedBoard, EmulatorConfig, Session, Timeouts};
use edgehil_onnx::fixtures::{mlp_sized, Precision};
use edgehil_runtime::engine::{self, LoadOptions};
use edgehil_runtime::metrics::LatencySummary;
use edgehil_runtime::wire::{EngineKind, OptLevel, OutputMode};

const ROUNDS: usize = 5;
const RUNS_PER_ROUND: u32 = 10;

fn median_ms(samples_ns: &[u64]) -> f64 {
    let us: Vec<f64> = samples_ns.iter().map(|n| *n as f64 / 1e3).collect();
    LatencySummary::from_micros(&us).expect("samples").median_us / 1e3
}

fn bench(engine: EngineKind, model: &std::path::Path, agent: &std::path::Path, ort_library: Option<PathBuf>) {
    let opts = LoadOptions { engine, opt_level: OptLevel::Basic, threads: 1, ort_library: ort_library.clone() };
    let mut local = engine::load(model, &opts).expect("in-process load");
    let inputs = edgehil::inputs::seeded(&local.info().inputs, &edgehil::inputs::Seeded::new(1)).expect("inputs");
    local.set_inputs(&inputs).expect("inputs");

    let board = EmulatedBoard::spawn(&EmulatorConfig {
        agent: agent.into(),
        cap: 0,
        threads: 1,
        ort_library,
        storage: false,
        extra_args: vec![],
    })
    .expect("agent");
    let mut session =
        Session::new(Box::new(board), Timeouts { request: Duration::from_secs(600), ..Timeouts::default() });
    session.hello().expect("hello");
    session.load(&model.display().to_string(), engine, OptLevel::Basic, 1).expect("load");
    session.set_inputs(&inputs).expect("inputs");

    let (mut in_process, mut via_agent) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let warmup = if round == 0 { 3 } else { 0 };
        for _ in 0..warmup {
            local.run().expect("run");
        }
        for _ in 0..RUNS_PER_ROUND {
            let t = Instant::now();
            local.run().expect("run");
            in_process.push(t.elapsed().as_nanos() as u64);
        }
        let r = session.infer(RUNS_PER_ROUND, warmup, OutputMode::Digest, |_, _| {}).expect("infer");
        via_agent.extend(r.latencies_ns);
    }
    session.shutdown().expect("shutdown");
    let (a, b) = (median_ms(&in_process), median_ms(&via_agent));
    let overhead = (b / a - 1.0) * 100.0;
    println!(
        "{:<6} in-process median {a:8.3} ms | agent+pty median {b:8.3} ms | ratio {:.4} | overhead {overhead:+.2}% (target <= 3%: {})",
        engine.name(),
        b / a,
        if a < 5.0 { "model under 5 ms, not applicable" } else if overhead <= 3.0 { "met" } else { "MISSED" }
    );
}

fn main() {
    let exe = std::env::current_exe().expect("exe");
    let bin_dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let agent = bin_dir.join("edgehil-agent");
    assert!(agent.is_file(), "{} missing: build the agent with the same profile first", agent.display());
    let dir = bin_dir.join("edgehil-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let model = dir.join("mlp-bench.onnx");
    // ~1 GFLOP per run: tens of milliseconds on one core.
    edgehil_onnx::graph::write_model(&mlp_sized("bench", 32, &[1024, 2048, 2048, 1024], Precision::F32), &model)
        .expect("write model");
    println!("model: MLP 1024-2048-2048-1024, batch 32, fp32; {ROUNDS} alternating rounds of {RUNS_PER_ROUND} runs, 1 thread");
    bench(EngineKind::Tract, &model, &agent, None);
    match edgehil::run::find_ort_library(None) {
        Ok(lib) => bench(EngineKind::Ort, &model, &agent, Some(lib)),
        Err(e) => println!("ort    skipped: {e}"),
    }
}
