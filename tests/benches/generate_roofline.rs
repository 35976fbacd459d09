//! Generation speed against this machine's memory-bandwidth roofline.
//!
//! Decoding one token reads every weight once, so tokens/s can be no more
//! than bandwidth / weight bytes. This measures the bandwidth (reading a
//! buffer far larger than the caches, on the engine's threads, before each
//! export and after the last, keeping the highest), and the generation tok/s
//! of the GPT-2-small configuration (synth, 124M) in int8 and int4, on tract
//! and ONNX Runtime, in-process and through the agent on
//! the emulated board, all in one run.
//!
//! Targets: the best engine at least 0.5 of the roofline; through agent +
//! link at least 0.97 of the same engine in-process, judged on the median
//! decode step of each of five loads a side.
//!
//! Run: `cargo bench -p edgehil-tests --profile dev --bench generate_roofline`
//! after `cargo build --workspace --bins` (it drives those binaries).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgehil_hil::{EmulatedBoard, EmulatorConfig, Session, Timeouts};
use edgehil_runtime::engine::{self, LoadOptions};
use edgehil_runtime::generate;
use edgehil_runtime::wire::{EngineKind, GenParams, GenReport, OptLevel};

#[path = "common/bandwidth.rs"]
mod bandwidth;

const THREADS: usize = 2;
const NEW_TOKENS: u32 = 32;
/// Copies of the model each side holds at once, and rounds after the warm-up.
const LOADS: usize = 5;
const ROUNDS: usize = 4;
const PROMPT: [u32; 8] = [464, 3290, 318, 257, 1332, 286, 262, 1175];

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent().and_then(Path::parent).expect("target dir").join(name)
}

fn edgehil(args: &[&str]) {
    let status = Command::new(bin("edgehil")).args(args).status().expect("edgehil");
    assert!(status.success(), "edgehil {args:?}");
}

fn params() -> GenParams {
    GenParams { max_new: NEW_TOKENS + 1, temperature: 0.0, eos: None, ..GenParams::STUDY }
}

/// Generation tok/s of one generation: the tokens after the first over their time.
fn tg(r: &GenReport) -> f64 {
    f64::from(r.generated - 1) / (r.decode_nanos as f64 / 1e9)
}

/// The middle value (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The nanoseconds of each decode step of one generation, from the
/// cumulative times its tokens arrived at: every token after the first.
fn steps(arrivals: &[u64]) -> impl Iterator<Item = f64> + '_ {
    arrivals.windows(2).map(|w| (w[1] - w[0]) as f64)
}

/// One engine in-process and through the agent, measured side by side.
struct SideBySide {
    /// Generation tok/s in-process and through the agent: medians over every
    /// generation of every load.
    local: f64,
    agent: f64,
    /// Agent over in-process speed: the median over each side's loads of the
    /// load's median decode step. A step is tens of milliseconds, so another
    /// tenant's burst lands in a few steps and leaves the median, where it
    /// would move a whole generation's mean; a cost of the link in every step
    /// stays in. Over loads the median too, because a load is slow or fast
    /// for the whole of a run (see `side_by_side`): with the mean of three,
    /// one slow load moved a ratio by 2%, so it missed on where the pages of
    /// one load happened to land.
    step_ratio: f64,
    /// The fastest and slowest load's median step, in ms, in-process and agent.
    local_loads: (f64, f64),
    agent_loads: (f64, f64),
}

/// One loaded copy of the model: in this process, or in an agent of its own.
enum Load {
    Local(Box<dyn engine::Engine>),
    Agent(Box<Session>),
}

impl Load {
    /// One greedy generation: its tok/s and the cumulative nanoseconds at which its tokens came.
    fn generate(&mut self) -> (f64, Vec<u64>) {
        let mut arrivals = Vec::new();
        let report = match self {
            Load::Local(e) => {
                let on_token = |_, _, nanos| {
                    arrivals.push(nanos);
                    Ok::<(), ()>(())
                };
                generate::generate(e.as_mut(), &PROMPT, &params(), on_token).expect("generate").expect("no stop").1
            }
            Load::Agent(s) => s.generate(params(), |_, _, nanos| arrivals.push(nanos)).expect("generate").1,
        };
        (tg(&report), arrivals)
    }
}

/// Each side holds LOADS copies of the model at once, and every round runs
/// each copy once in a rotating order, so drift on a shared machine hits all
/// alike; the first round is a warm-up. Several loads, because one load's
/// speed differs from another's of the same file by up to 12% here, for the
/// whole of a run and on both sides (two agents differ as much as agent and
/// in-process): with one load a side, that difference was the ratio.
fn side_by_side(model: &Path, engine: EngineKind, ort: Option<PathBuf>) -> SideBySide {
    let opts = LoadOptions { engine, opt_level: OptLevel::All, threads: THREADS, ort_library: ort.clone() };
    let mut loads = Vec::new();
    for _ in 0..LOADS {
        loads.push(Load::Local(engine::load(model, &opts).expect("load")));
        let board = EmulatedBoard::spawn(&EmulatorConfig {
            agent: bin("edgehil-agent"),
            cap: 0,
            threads: THREADS,
            ort_library: ort.clone(),
            extra_args: vec![],
        })
        .expect("agent");
        let mut s =
            Session::new(Box::new(board), Timeouts { request: Duration::from_secs(600), ..Timeouts::default() });
        s.hello().expect("hello");
        s.load(&model.display().to_string(), engine, OptLevel::All, THREADS as u16).expect("load");
        s.set_prompt(&PROMPT).expect("prompt");
        loads.push(Load::Agent(Box::new(s)));
    }
    let mut tok_s: Vec<Vec<f64>> = vec![Vec::new(); loads.len()];
    let mut step_nanos: Vec<Vec<f64>> = vec![Vec::new(); loads.len()];
    for round in 0..=ROUNDS {
        for k in 0..loads.len() {
            let i = (k + round) % loads.len();
            let (tg, arrivals) = loads[i].generate();
            if round > 0 {
                tok_s[i].push(tg);
                step_nanos[i].extend(steps(&arrivals));
            }
        }
    }
    for load in loads {
        if let Load::Agent(mut s) = load {
            s.shutdown().expect("shutdown");
        }
    }
    // Loads alternate local, agent: even indices are in-process.
    let side = |agent: usize| {
        let pick = |v: &[Vec<f64>]| v.iter().skip(agent).step_by(2).cloned().collect::<Vec<_>>();
        let step_ms: Vec<f64> = pick(&step_nanos).into_iter().map(|s| median(s) / 1e6).collect();
        let range =
            (step_ms.iter().copied().fold(f64::INFINITY, f64::min), step_ms.iter().copied().fold(0.0, f64::max));
        (median(pick(&tok_s).concat()), median(step_ms), range)
    };
    let ((local, local_step, local_loads), (agent, agent_step, agent_loads)) = (side(0), side(1));
    SideBySide { local, agent, step_ratio: local_step / agent_step, local_loads, agent_loads }
}

fn main() {
    let dir = bin("bench-gpt2");
    let hf = dir.join("hf");
    if !hf.join("model.safetensors").is_file() {
        edgehil(&["models", "synth", "gpt2", "--out", &hf.display().to_string()]);
    }
    let ort = edgehil::run::find_ort_library(None).ok();
    // Decoding reads the weights, so the roofline is the read bandwidth. Other
    // tenants of a shared machine take some of it at times (12.7 to 22.4 GB/s
    // in one day), so it is read before each export and after the last, and
    // every ratio is judged against the highest: the roofline is what the
    // machine can do, not what was left of it at one moment.
    let mut reads = Vec::new();
    // int4 twice: as exported by default (ONNX Runtime keeps fp32 activations), and with
    // `--ort-int8-activations`; the best engine of a precision is the best over its exports.
    let exports = [("int8", None), ("int4", None), ("int4-ort-int8-act", Some("--ort-int8-activations"))];
    let mut measured = Vec::new();
    for (name, extra) in exports {
        let out = dir.join(name);
        let quant = &name[..4];
        if !out.join("model.onnx").is_file() {
            let (hf, out) = (hf.display().to_string(), out.display().to_string());
            edgehil(&[&["export", &hf, "--out", &out, "--quant", quant][..], extra.as_slice()].concat());
        }
        reads.push(bandwidth::read(THREADS));
        let model = out.join("model.onnx");
        let bytes = engine::model_file_bytes(&model) as f64;
        for engine in EngineKind::ALL {
            let lib = (engine == EngineKind::Ort).then(|| ort.clone()).flatten();
            if engine == EngineKind::Ort && lib.is_none() {
                println!("{name}: ort skipped, no ONNX Runtime library (pip install onnxruntime)");
                continue;
            }
            measured.push((name, quant, bytes, engine, side_by_side(&model, engine, lib)));
        }
    }
    reads.push(bandwidth::read(THREADS));
    let bw = bandwidth::highest(&reads, THREADS, "before each export and after", "is the roofline's");
    let mut best: Vec<(&str, f64)> = Vec::new();
    for (i, (name, quant, bytes, engine, m)) in measured.iter().enumerate() {
        let SideBySide { local, agent, step_ratio, local_loads, agent_loads } = m;
        let roofline = bw / bytes;
        if i == 0 || measured[i - 1].0 != *name {
            println!("gpt2 {name}: {:.0} MB of weights, roofline {roofline:.1} tok/s", bytes / 1e6);
        }
        best.push((quant, local / roofline));
        println!(
            "  {:<5} tg{NEW_TOKENS}: in-process {local:.1} tok/s = {:.2} of roofline | agent+pty {agent:.1} tok/s, {step_ratio:.3} of in-process by median step (target ≥ 0.97: {}) | median step per load: in-process {:.1}–{:.1} ms, agent {:.1}–{:.1} ms",
            engine.name(),
            local / roofline,
            if *step_ratio >= 0.97 { "met" } else { "MISSED" },
            local_loads.0,
            local_loads.1,
            agent_loads.0,
            agent_loads.1
        );
    }
    for quant in ["int8", "int4"] {
        let share = best.iter().filter(|(q, _)| *q == quant).map(|(_, s)| *s).fold(0.0, f64::max);
        println!(
            "{quant}: best engine and export {share:.2} of roofline (target ≥ 0.5: {})",
            if share >= 0.5 { "met" } else { "MISSED" }
        );
    }
}
