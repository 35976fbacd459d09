//! Memory and speed of export and of running its output, at true size: the
//! TinyLlama 1.1B configuration with random weights (`edgehil models synth`),
//! exported to int4, then run with `edgehil run` on the Jetson Orin Nano
//! profile with each engine (a 128-token prefill on an empty cache); ONNX
//! Runtime also on the export with `--ort-int8-activations`, which is faster
//! but keeps each block's scale three times (see BENCHMARKS.md).
//!
//! Targets: export peak RSS at most 1.5× the output size; each engine's
//! agent peak RSS at most 1.15 × weight bytes + KV cache + 30 MB.
//!
//! Run: `cargo bench -p edgehil-tests --profile dev --bench export_memory`
//! after `cargo build --workspace --bins` (it drives those binaries). It
//! writes about 5 GB under target/bench-tinyllama (kept for reruns).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const PROMPT: u64 = 128;
const MB: f64 = 1e6;

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent().and_then(Path::parent).expect("target dir").join(name)
}

/// Runs a command to completion; returns its wall time and peak RSS (bytes), from wait4.
// wait4 reaps the child, where `Child::wait` would not give its rusage.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> (f64, u64) {
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed: {status}");
    (started.elapsed().as_secs_f64(), usage.ru_maxrss as u64 * 1024)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn main() {
    let dir = bin("bench-tinyllama");
    let hf = dir.join("hf");
    let out = dir.join("int4");
    if !hf.join("model.safetensors").is_file() {
        let (secs, _) =
            measure(Command::new(bin("edgehil")).args(["models", "synth", "tinyllama-1.1b", "--out"]).arg(&hf));
        println!("synth tinyllama-1.1b: {secs:.1} s");
    }
    let export = |out: &Path, extra: &[&str]| {
        let (secs, rss) = measure(
            Command::new(bin("edgehil"))
                .arg("export")
                .arg(&hf)
                .arg("--out")
                .arg(out)
                .args(["--quant", "int4"])
                .args(extra),
        );
        let output = size(&out.join("model.onnx")) + size(&out.join("model.onnx.data"));
        println!(
            "export int4 {extra:?}: {secs:.1} s, source {:.0} MB, output {:.0} MB, peak RSS {:.0} MB = {:.2}× the output (target ≤ 1.5)",
            size(&hf.join("model.safetensors")) as f64 / MB,
            output as f64 / MB,
            rss as f64 / MB,
            rss as f64 / output as f64
        );
        output
    };
    let output = export(&out, &[]);
    let int8_activations = dir.join("int4-ort-int8-activations");
    export(&int8_activations, &["--ort-int8-activations"]);

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("edgehil.json")).expect("manifest")).expect("json");
    let kv_heads: u64 = manifest["kv_heads"].as_array().expect("kv_heads").iter().filter_map(|v| v.as_u64()).sum();
    let kv_bytes = 2 * kv_heads * manifest["head_dim"].as_u64().expect("head_dim") * PROMPT * 4;
    for (engine, out) in [("tract", &out), ("ort", &out), ("ort", &int8_activations)] {
        let json = dir.join(format!("run-{engine}.json"));
        let (secs, _) = measure(
            Command::new(bin("edgehil"))
                .args(["run", "--profile", "jetson-orin-nano", "--runs", "2", "--warmup", "1", "--engine", engine])
                .args(["--prompt-tokens", &PROMPT.to_string(), "--outputs", "digest", "--model"])
                .arg(out)
                .arg("--json")
                .arg(&json),
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
        let r = &report[0];
        let rss = r["memory"]["peak_rss"].as_u64().expect("peak RSS");
        let budget = 1.15 * output as f64 + kv_bytes as f64 + 30.0 * MB;
        println!(
            "run {engine} on {}: {secs:.1} s in all, median prefill {:.0} ms; agent peak RSS {:.0} MB = {:.2} of (1.15 × {:.0} MB weights + {:.1} MB KV cache + 30 MB) (target ≤ 1)",
            out.display(),
            r["latency_ms"]["median"].as_f64().unwrap_or(f64::NAN),
            rss as f64 / MB,
            rss as f64 / budget,
            output as f64 / MB,
            kv_bytes as f64 / MB,
        );
    }
}
