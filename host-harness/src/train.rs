//! On-device LoRA fine-tuning cost: trainable parameters, training peak RAM
//! and samples per hour, for a catalog model at a precision on a profile.
//!
//! LoRA here is the study's setting: adapters on q, k and v of every layer,
//! AdamW, batch 1. Peak RAM at training =
//!
//! - the frozen weights at their precision ([`ModelConfig::weight_bytes`]),
//! - the LoRA weights, their gradients and AdamW's two moments, all fp32
//!   (16 bytes per trainable parameter),
//! - the activations the backward pass keeps: `k_layers` bytes per
//!   (token · layer · (hidden + intermediate)) and `k_logits` per
//!   (token · vocabulary entry); with gradient checkpointing only each
//!   layer's input (2 bytes per token · hidden) and one layer's activations,
//! - a fixed `runtime` (framework and, on the study's GPU, the CUDA context).
//!
//! Time per sample = `per_layer` seconds a layer (the step's fixed work:
//! kernel launches, the optimizer, the data) + forward and backward FLOPs
//! (4 · parameters · tokens: the frozen base needs activation gradients, not
//! weight gradients; 6 with checkpointing) at an effective share of the peak,
//! plus `gptq` seconds per parameter and token for a 4-bit base's
//! dequantization (never negative, though the study's GPTQ rows ran faster
//! per parameter).
//!
//! The free constants (runtime, k_layers, k_logits; per_layer, efficiency,
//! gptq) are fitted to the study's Table 3, measured on an NVIDIA A10
//! (CUDA context included), with rows kept back to check the fit
//! ([`Calibration::study`]). On a board, the arithmetic scales with the
//! profile's fp32 peak against the A10's and the per-layer work stays: an
//! assumption (the same training stack, as efficient on the board's cores)
//! that a training step measured on the board replaces.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgehil_runtime::train::StepReport;
use serde::Serialize;

use crate::catalog::{ModelConfig, Precision, CATALOG};
use crate::profile::Profile;
use crate::units::human_bytes;

/// LoRA and data settings of one training estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoraSetting {
    /// Rank of the adapters on q, k and v (the study: 8 to 256).
    pub rank: u64,
    /// Tokens of one sample (a LaMP prompt with its profile items and answer).
    pub tokens: u64,
    pub checkpointing: bool,
}

impl Default for LoraSetting {
    /// The study's Table 7 setting (rank 8) on 256-token samples.
    fn default() -> Self {
        Self { rank: 8, tokens: 256, checkpointing: false }
    }
}

/// Trainable parameters: A (rank × in) and B (out × rank) on q, k and v of every layer.
pub fn trainable(m: &ModelConfig, rank: u64) -> u64 {
    let q_out = m.heads * m.head_dim;
    let kv_out = m.kv_heads * m.head_dim;
    m.layers * rank * ((m.hidden + q_out) + 2 * (m.hidden + kv_out))
}

/// The fitted constants of the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Constants {
    pub runtime_bytes: f64,
    pub k_layers: f64,
    pub k_logits: f64,
    pub per_layer_s: f64,
    /// Share of the peak fp32 rate the training step reaches.
    pub efficiency: f64,
    pub gptq_s: f64,
}

/// Peak RAM at training, its parts, and time per sample on a compute peak.
#[derive(Debug, Clone, Serialize)]
pub struct TrainCost {
    pub model: &'static str,
    pub precision: Precision,
    pub setting: LoraSetting,
    pub trainable: u64,
    pub weights: u64,
    /// LoRA weights, gradients and AdamW moments.
    pub optimizer: u64,
    pub activations: u64,
    pub runtime: u64,
    pub peak: u64,
    pub seconds_per_sample: f64,
}

impl TrainCost {
    pub fn samples_per_hour(&self) -> f64 {
        3600.0 / self.seconds_per_sample
    }
}

/// The terms the constants multiply, so that fitting is linear.
struct Terms {
    weights: u64,
    optimizer: u64,
    /// Layer inputs kept under gradient checkpointing.
    checkpoint_bytes: f64,
    layer_units: f64,
    logit_units: f64,
    layers: f64,
    flops: f64,
    gptq_units: f64,
}

impl Terms {
    fn new(m: &ModelConfig, p: Precision, s: &LoraSetting) -> Terms {
        let tokens = s.tokens as f64;
        let width = (m.hidden + m.intermediate) as f64;
        let params = m.parameters() as f64;
        Terms {
            weights: m.weight_bytes(p),
            optimizer: 16 * trainable(m, s.rank),
            checkpoint_bytes: if s.checkpointing { 2.0 * tokens * (m.layers * m.hidden) as f64 } else { 0.0 },
            // Under checkpointing one layer's activations are alive at a time.
            layer_units: tokens * width * if s.checkpointing { 1.0 } else { m.layers as f64 },
            logit_units: tokens * m.vocab as f64,
            // Checkpointing runs each layer's forward pass again in the backward one.
            flops: if s.checkpointing { 6.0 } else { 4.0 } * params * tokens,
            layers: m.layers as f64,
            gptq_units: if p == Precision::Int4 { params * tokens } else { 0.0 },
        }
    }

    /// Bytes that need no constant.
    fn known_bytes(&self) -> f64 {
        (self.weights + self.optimizer) as f64 + self.checkpoint_bytes
    }
}

/// The estimate for `m` at `precision` on a compute of `peak_flops` (fp32 FLOP/s).
pub fn estimate(m: &ModelConfig, precision: Precision, s: &LoraSetting, c: &Constants, peak_flops: f64) -> TrainCost {
    let x = Terms::new(m, precision, s);
    let activations = (c.k_layers * x.layer_units + c.k_logits * x.logit_units + x.checkpoint_bytes) as u64;
    let runtime = c.runtime_bytes as u64;
    // The same training stack on another processor: the arithmetic (and GPTQ's
    // share of it) scales with the peak, the per-layer fixed work does not.
    let scale = A10_PEAK_FP32 / peak_flops;
    let seconds =
        c.per_layer_s * x.layers + scale * (x.flops / (c.efficiency * A10_PEAK_FP32) + c.gptq_s * x.gptq_units);
    TrainCost {
        model: m.name,
        precision,
        setting: *s,
        trainable: trainable(m, s.rank),
        weights: x.weights,
        optimizer: x.optimizer,
        activations,
        runtime,
        peak: x.weights + x.optimizer + activations + runtime,
        seconds_per_sample: seconds,
    }
}

/// NVIDIA A10's fp32 peak (31.2 TFLOP/s, datasheet): the study's training GPU.
pub const A10_PEAK_FP32: f64 = 31.2e12;

/// A row of the study's Table 3 (LoRA training on an A10, CUDA context included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StudyRow {
    /// As the study names it.
    pub checkpoint: &'static str,
    /// Our catalog's model and the precision of the study's checkpoint (GPTQ: int4).
    pub model: &'static str,
    pub precision: Precision,
    pub train_peak_gb: f64,
    pub weights_gb: f64,
    pub samples_per_hour: f64,
    /// Trained with gradient checkpointing: PEFT's `prepare_model_for_kbit_training`,
    /// which quantized (GPTQ) bases go through, turns it on by default.
    pub checkpointing: bool,
    /// Kept back from the fit, to check it.
    pub held_out: bool,
}

const fn row(
    checkpoint: &'static str,
    model: &'static str,
    precision: Precision,
    train_peak_gb: f64,
    weights_gb: f64,
    samples_per_hour: f64,
    held_out: bool,
) -> StudyRow {
    let checkpointing = matches!(precision, Precision::Int4);
    StudyRow { checkpoint, model, precision, train_peak_gb, weights_gb, samples_per_hour, checkpointing, held_out }
}

/// The study's Table 3 ("Empirical guidelines for deploying LLMs onto
/// resource-constrained edge devices"): training peak GB, weights GB,
/// samples per hour. Every third row is held out.
pub const STUDY_TABLE3: &[StudyRow] = &[
    row("EleutherAI/pythia-70m", "pythia-70m", Precision::Fp16, 1.15, 0.17, 825.0, false),
    row("EleutherAI/pythia-410m", "pythia-410m", Precision::Fp16, 2.69, 0.91, 215.0, false),
    row("facebook/opt-1.3b", "opt-1.3b", Precision::Fp16, 5.68, 2.63, 245.0, true),
    row("TheBloke/TinyLlama-1.1B-Chat-v0.3-GPTQ", "tinyllama-1.1b", Precision::Int4, 1.72, 0.77, 110.0, false),
    row("TheBloke/Llama-2-7B-Chat-GPTQ", "llama-2-7b", Precision::Int4, 6.07, 3.90, 82.0, false),
    row("microsoft/phi-1.5", "phi-1.5", Precision::Fp16, 6.76, 2.84, 153.0, true),
    row("google/gemma-2b", "gemma-2b", Precision::Fp16, 13.45, 4.95, 132.0, false),
    row("EleutherAI/pythia-2.8b", "pythia-2.8b", Precision::Fp16, 12.97, 5.68, 106.0, false),
    row("openlm-research/open_llama_3b_v2", "open-llama-3b", Precision::Fp16, 15.11, 6.85, 89.0, true),
    row("meta-llama/Meta-Llama-3-8B", "llama-3-8b", Precision::Fp16, 23.00, 16.07, 50.0, false),
];

impl StudyRow {
    /// `setting` as this row was trained.
    fn setting(&self, setting: LoraSetting) -> LoraSetting {
        LoraSetting { checkpointing: self.checkpointing, ..setting }
    }
}

/// How well the estimate reproduces a set of rows: relative errors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Errors {
    pub rows: usize,
    pub peak_median_pct: f64,
    pub peak_max_pct: f64,
    pub weights_median_pct: f64,
    pub weights_max_pct: f64,
    pub rate_median_pct: f64,
    pub rate_max_pct: f64,
}

/// The constants fitted to the study, and the fit's errors on the rows it
/// used and on those kept back.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub constants: Constants,
    pub setting: LoraSetting,
    pub fitted: Errors,
    pub held_out: Errors,
    /// (row, estimate) for every row of the table.
    pub rows: Vec<(StudyRow, TrainCost)>,
}

fn catalog_model(name: &str) -> &'static ModelConfig {
    CATALOG.iter().find(|m| m.name == name).unwrap_or_else(|| unreachable!("STUDY_TABLE3 names catalog models"))
}

/// Least squares for y ≈ X·c, each row's error relative to its `scale`.
fn relative_least_squares<const N: usize>(xs: &[[f64; N]], ys: &[f64], scales: &[f64]) -> [f64; N] {
    let mut a = [[0.0; N]; N];
    let mut b = [0.0; N];
    for ((x, &y), &scale) in xs.iter().zip(ys).zip(scales) {
        let w = 1.0 / (scale * scale);
        for i in 0..N {
            b[i] += w * x[i] * y;
            for j in 0..N {
                a[i][j] += w * x[i] * x[j];
            }
        }
    }
    // Gauss–Jordan with partial pivoting: N is 3.
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in 0..N {
            if r != col && a[col][col] != 0.0 {
                let f = a[r][col] / a[col][col];
                let pivot_row = a[col];
                for (x, p) in a[r].iter_mut().zip(pivot_row) {
                    *x -= f * p;
                }
                b[r] -= f * b[col];
            }
        }
    }
    std::array::from_fn(|i| if a[i][i] == 0.0 { 0.0 } else { b[i] / a[i][i] })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn errors(rows: &[&(StudyRow, TrainCost)]) -> Errors {
    let pct = |got: f64, want: f64| (got / want - 1.0).abs() * 100.0;
    let of = |f: &dyn Fn(&(StudyRow, TrainCost)) -> f64| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let peak = of(&|(r, c)| pct(c.peak as f64 / 1e9, r.train_peak_gb));
    let weights = of(&|(r, c)| pct(c.weights as f64 / 1e9, r.weights_gb));
    let rate = of(&|(r, c)| pct(c.samples_per_hour(), r.samples_per_hour));
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Errors {
        rows: rows.len(),
        peak_median_pct: median(peak.clone()),
        peak_max_pct: max(&peak),
        weights_median_pct: median(weights.clone()),
        weights_max_pct: max(&weights),
        rate_median_pct: median(rate.clone()),
        rate_max_pct: max(&rate),
    }
}

impl Calibration {
    /// Fits the constants to the study's rows not held out, for `setting`.
    pub fn study(setting: LoraSetting) -> Calibration {
        let fit_rows: Vec<_> = STUDY_TABLE3.iter().filter(|r| !r.held_out).collect();
        let (mut mem_x, mut mem_y, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
        let (mut time_x, mut times) = (Vec::new(), Vec::new());
        for r in &fit_rows {
            let x = Terms::new(catalog_model(r.model), r.precision, &r.setting(setting));
            mem_x.push([1.0, x.layer_units, x.logit_units]);
            mem_y.push(r.train_peak_gb * 1e9 - x.known_bytes());
            peaks.push(r.train_peak_gb * 1e9);
            time_x.push([x.layers, x.flops / A10_PEAK_FP32, x.gptq_units]);
            times.push(3600.0 / r.samples_per_hour);
        }
        let [runtime_bytes, k_layers, k_logits] = relative_least_squares(&mem_x, &mem_y, &peaks);
        let [mut per_layer_s, mut inverse_efficiency, mut gptq_s] = relative_least_squares(&time_x, &times, &times);
        if gptq_s < 0.0 {
            // The study's GPTQ rows run faster per parameter than its fp16 ones (4-bit
            // kernels read a quarter of the bytes on a GPU), but on a board's cores
            // dequantizing is work: no negative cost, so fit without the term.
            time_x.iter_mut().for_each(|x| x[2] = 0.0);
            [per_layer_s, inverse_efficiency, gptq_s] = relative_least_squares(&time_x, &times, &times);
        }
        let constants =
            Constants { runtime_bytes, k_layers, k_logits, per_layer_s, efficiency: 1.0 / inverse_efficiency, gptq_s };
        let rows: Vec<_> = STUDY_TABLE3
            .iter()
            .map(|r| {
                (*r, estimate(catalog_model(r.model), r.precision, &r.setting(setting), &constants, A10_PEAK_FP32))
            })
            .collect();
        let part = |held: bool| errors(&rows.iter().filter(|(r, _)| r.held_out == held).collect::<Vec<_>>());
        Calibration { constants, setting, fitted: part(false), held_out: part(true), rows }
    }

    /// The study's rows beside the estimate, and the errors.
    pub fn table(&self) -> String {
        let c = &self.constants;
        let mut s = format!(
            "LoRA training cost fitted to the study's Table 3 (A10 GPU; rank {}, {} tokens a sample, batch 1)\n\
             constants: runtime {}, {:.3} B per token·layer·(hidden+intermediate), {:.3} B per token·vocab entry; \
             {:.3} s a layer + FLOPs at {:.2}% of the fp32 peak + {}\n\n",
            self.setting.rank,
            self.setting.tokens,
            human_bytes(c.runtime_bytes),
            c.k_layers,
            c.k_logits,
            c.per_layer_s,
            c.efficiency * 100.0,
            match c.gptq_s {
                0.0 => "no GPTQ dequantization cost (the study's GPTQ rows run faster per parameter)".to_string(),
                g => format!("{g:.2e} s per parameter·token of GPTQ dequantization"),
            }
        );
        let _ = writeln!(
            s,
            "{:<40} {:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  USE",
            "CHECKPOINT", "PREC", "PEAK GB", "EST", "WEIGHTS", "EST", "SAMPLES/H", "EST"
        );
        for (r, e) in &self.rows {
            let _ = writeln!(
                s,
                "{:<40} {:<6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>9.0}  {}",
                r.checkpoint,
                r.precision.name(),
                r.train_peak_gb,
                e.peak as f64 / 1e9,
                r.weights_gb,
                e.weights as f64 / 1e9,
                r.samples_per_hour,
                e.samples_per_hour(),
                if r.held_out { "held out" } else { "fit" }
            );
        }
        for (what, e) in [("fit rows", &self.fitted), ("held-out rows", &self.held_out)] {
            let _ = writeln!(
                s,
                "{what} ({}): peak RAM error median {:.1}%, max {:.1}%; weights median {:.1}%, max {:.1}%; \
                 samples/h median {:.1}%, max {:.1}%",
                e.rows,
                e.peak_median_pct,
                e.peak_max_pct,
                e.weights_median_pct,
                e.weights_max_pct,
                e.rate_median_pct,
                e.rate_max_pct
            );
        }
        s
    }
}

/// Training cost of every catalog model at fp16, int8 and int4 on `profile`:
/// whether it fits its usable RAM, samples per hour on its fp32 peak, and how
/// many samples a night of `night_hours` covers.
pub fn profile_table(profile: &Profile, calibration: &Calibration, night_hours: f64) -> String {
    let usable = profile.ram_usable.value.0;
    let peak = profile.peak_fp32.value.0;
    let s = &calibration.setting;
    let mut out = format!(
        "LoRA on q,k,v (rank {}, {} tokens a sample, checkpointing {}) on {} ({} usable, {:.0} GFLOP/s fp32)\n",
        s.rank,
        s.tokens,
        if s.checkpointing { "on" } else { "off" },
        profile.name,
        human_bytes(usable as f64),
        peak / 1e9
    );
    let _ = writeln!(
        out,
        "{:<20} {:<6} {:>11} {:>10} {:>10} {:>10} {:>10} {:<5} {:>10} {:>12}",
        "MODEL", "PREC", "TRAINABLE", "WEIGHTS", "OPTIMIZER", "ACTIVATION", "PEAK", "FITS", "SAMPLES/H", "PER NIGHT"
    );
    for m in CATALOG {
        for p in [Precision::Fp16, Precision::Int8, Precision::Int4] {
            let e = estimate(m, p, s, &calibration.constants, peak);
            let _ = writeln!(
                out,
                "{:<20} {:<6} {:>10.2}M {:>10} {:>10} {:>10} {:>10} {:<5} {:>10.1} {:>12.0}",
                m.name,
                p.name(),
                e.trainable as f64 / 1e6,
                human_bytes(e.weights as f64),
                human_bytes(e.optimizer as f64),
                human_bytes(e.activations as f64),
                human_bytes(e.peak as f64),
                if e.peak <= usable { "yes" } else { "no" },
                e.samples_per_hour(),
                e.samples_per_hour() * night_hours
            );
        }
    }
    out
}

/// Why a training step could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainStepError {
    /// the model folder's configuration
    #[error(transparent)]
    Model(#[from] edgehil_onnx::hf::HfError),
    /// the agent could not be started, failed, overran its time or printed no report
    #[error("{agent}: {reason}")]
    Agent { agent: PathBuf, reason: String },
}

/// A LoRA training step measured by the agent under a profile's cap, beside
/// the estimate for the same model, setting and profile.
#[derive(Debug, Clone, Serialize)]
pub struct MeasuredStep {
    pub model: String,
    pub profile: String,
    pub cap: u64,
    pub measured: StepReport,
    pub estimate: TrainCost,
}

/// The longest a training step of a tiny model may take on this machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `agent --train-step` on the Llama-family folder `dir` under `cap`
/// bytes (the profile's usable RAM, or a cap given) and estimates the same
/// step: the model at fp32, as the agent trains it, on the profile's peak.
pub fn measure_step(
    agent: &Path,
    dir: &Path,
    profile: &Profile,
    cap: u64,
    setting: &LoraSetting,
    steps: usize,
    constants: &Constants,
) -> Result<MeasuredStep, TrainStepError> {
    let hf = edgehil_onnx::hf::Config::read(&dir.join("config.json"))?;
    let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let model = ModelConfig {
        // One model a command: the catalog's names are static, and so is this one once leaked.
        name: Box::leak(name.clone().into_boxed_str()),
        arch: crate::catalog::CatalogFamily::Llama,
        hidden: hf.hidden,
        layers: hf.layers,
        heads: hf.heads,
        kv_heads: hf.kv_heads,
        head_dim: hf.head_dim(),
        intermediate: hf.intermediate,
        vocab: hf.vocab,
        max_positions: hf.max_positions,
        tied_embeddings: hf.tied_embeddings,
        sliding_window: hf.sliding_window,
        embed_dim: hf.embed_dim,
        post_norm: false,
    };
    let failed = |reason: String| TrainStepError::Agent { agent: agent.to_path_buf(), reason };
    let mut child = std::process::Command::new(agent)
        .arg("--train-step")
        .arg(dir)
        .args(["--cap", &cap.to_string(), "--rank", &setting.rank.to_string()])
        .args(["--tokens", &setting.tokens.to_string(), "--steps", &steps.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot start: {e}")))?;
    let started = std::time::Instant::now();
    // The report is one short line, so the pipes cannot fill while we wait.
    while child.try_wait().map_err(|e| failed(e.to_string()))?.is_none() {
        if started.elapsed() > STEP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("no report within {} s", STEP_TIMEOUT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if out.status.code() == Some(edgehil_runtime::wire::EXIT_OUT_OF_MEMORY) {
        return Err(failed(format!(
            "out of memory: the training step needs more than the cap of {}",
            human_bytes(cap as f64)
        )));
    }
    if !out.status.success() {
        return Err(failed(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status)));
    }
    let measured: StepReport = serde_json::from_slice(&out.stdout)
        .map_err(|e| failed(format!("its report `{}`: {e}", String::from_utf8_lossy(&out.stdout).trim())))?;
    let estimate = estimate(&model, Precision::Fp32, setting, constants, profile.peak_fp32.value.0);
    Ok(MeasuredStep { model: name, profile: profile.name.clone(), cap, measured, estimate })
}

impl MeasuredStep {
    /// Measured beside estimated, part by part where the measurement has one.
    pub fn table(&self) -> String {
        let (m, e) = (&self.measured, &self.estimate);
        let b = |v: u64| human_bytes(v as f64);
        let optimizer = 16 * m.trainable as u64;
        let activations = m.peak_heap.saturating_sub(m.base_bytes + optimizer);
        let mut s = format!(
            "LoRA training step of {} on the emulated board (rank {}, {} tokens, AdamW lr 5e-4, {} steps) under {}'s cap of {}
",
            self.model,
            m.rank,
            m.tokens,
            m.steps,
            self.profile,
            b(self.cap)
        );
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "", "MEASURED", "ESTIMATED");
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "trainable parameters", m.trainable, e.trainable);
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "frozen weights (fp32)", b(m.base_bytes), b(e.weights));
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "LoRA + grads + AdamW (16 B)", b(optimizer), b(e.optimizer));
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "activations and the rest", b(activations), b(e.activations));
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "runtime", "-", b(e.runtime));
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "peak heap", b(m.peak_heap), b(e.peak));
        let _ = writeln!(s, "{:<28} {:>12} {:>12}", "peak heap without runtime", b(m.peak_heap), b(e.peak - e.runtime));
        let _ = writeln!(
            s,
            "{:<28} {:>12} {:>12}",
            "step time",
            format!("{:.2} ms", m.step_seconds * 1e3),
            format!("{:.2} ms", e.seconds_per_sample * 1e3)
        );
        let _ = writeln!(
            s,
            "loss over the steps: {}",
            m.losses.iter().map(|l| format!("{l:.4}")).collect::<Vec<_>>().join(" → ")
        );
        let _ = writeln!(
            s,
            "The estimate's runtime and per-layer time are the study's A10 (CUDA context, kernel launches); \
             the agent trains on the CPU with neither, at this machine's speed, not the profile's."
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainable_parameters_follow_the_lora_shapes() {
        // Llama-2-7B, rank 8 on q, k, v: 32 layers × 8 × 3 × (4096 + 4096) = 6.29 M, as PEFT prints.
        assert_eq!(trainable(catalog_model("llama-2-7b"), 8), 6_291_456);
        // Grouped KV heads shrink k and v's B: TinyLlama has 4 of 32 heads.
        assert_eq!(trainable(catalog_model("tinyllama-1.1b"), 8), 22 * 8 * ((2048 + 2048) + 2 * (2048 + 256)));
    }

    #[test]
    fn the_fit_reproduces_the_study_within_its_scatter() {
        let c = Calibration::study(LoraSetting::default());
        let k = c.constants;
        assert!(k.runtime_bytes > 0.0 && k.k_layers > 0.0 && k.k_logits > 0.0, "{k:?}");
        assert!(k.efficiency > 0.0 && k.efficiency < 1.0 && k.per_layer_s > 0.0, "{k:?}");
        // Weights come from the configuration, not the fit: GPTQ int4 included.
        assert!(
            c.fitted.weights_max_pct < 25.0 && c.held_out.weights_max_pct < 25.0,
            "{:?} {:?}",
            c.fitted,
            c.held_out
        );
        assert!(c.fitted.peak_median_pct < 20.0, "{:?}", c.fitted);
        assert!(c.held_out.peak_median_pct < 35.0, "{:?}", c.held_out);
        // Time is what the study's rows agree on least: per-layer work and FLOPs explain them to a third.
        assert!(
            c.fitted.rate_median_pct < 30.0 && c.held_out.rate_median_pct < 40.0,
            "{:?} {:?}",
            c.fitted,
            c.held_out
        );
    }

    #[test]
    fn checkpointing_lowers_the_peak_and_rank_raises_it() {
        let c = Calibration::study(LoraSetting::default()).constants;
        let m = catalog_model("phi-1.5");
        let base = estimate(m, Precision::Fp16, &LoraSetting::default(), &c, A10_PEAK_FP32);
        let ckpt =
            estimate(m, Precision::Fp16, &LoraSetting { checkpointing: true, ..Default::default() }, &c, A10_PEAK_FP32);
        let wide = estimate(m, Precision::Fp16, &LoraSetting { rank: 256, ..Default::default() }, &c, A10_PEAK_FP32);
        assert!(ckpt.peak < base.peak && wide.peak > base.peak, "{} {} {}", ckpt.peak, base.peak, wide.peak);
        assert_eq!(wide.optimizer, 16 * trainable(m, 256));
    }
}
