//! `edgehil calibrate`: the latency model's parameters fitted to measured runs.
//!
//! The model is [`estimate`]'s: latency = FLOPs / compute + bytes /
//! bandwidth + call overhead + ops × op overhead + tokens × token overhead
//! (+ the 4-bit unpack terms), with `compute_int8` in place of `compute`
//! where the engine runs int8 kernels. The fit minimises the squared log
//! error (a relative error, the same for a case measured twice as slow as
//! for one twice as fast) over every usable case: a log grid over the
//! rates, then coordinate descent, then Nelder–Mead.
//! Overheads are kept ≥ 0 and lightly pulled towards 0, so that of two
//! explanations the cases fit equally well, the one with arithmetic wins.
//!
//! A parameter the cases cannot determine is not fitted: a compute rate no
//! case exercises is the other scaled by the profile's peak_int8 /
//! peak_fp32; the token overhead is 0 if no case has prompt tokens, or if
//! the cases' FLOPs per token differ by less than [`SEPARABLE`] (one model's
//! prompts at several lengths): there a per-token overhead would stand in
//! for arithmetic, which grows with the model while the overhead does not.
//! Likewise one model's cases cannot tell a fixed overhead from one per op:
//! it is all counted per op, as a deeper model pays more.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use edgehil_runtime::wire::{EngineKind, OptLevel};

use crate::estimate::{self, GraphCost, Kernels, Params};
use crate::profile::{Calibration, Figure, Profile, ProfileError};
use crate::report::Status;
use crate::suite::record::{self, JournalError};
use crate::units::{human_rate, ByteRate, FlopRate, OpRate, Seconds};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrateError {
    /// the measurements file could not be read
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    /// the file looks like `edgehil run --json` output but is not
    #[error("{path}:{line}: not a list of run reports: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    /// the file looks like a suite journal but is not
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// fewer usable cases than parameters to fit
    #[error(
        "{usable} usable cases for {} parameters ({}): measure more runs (status ok, with a latency and a cost)",
        parameters.len(),
        parameters.join(", ")
    )]
    TooFewCases { usable: usize, parameters: Vec<&'static str> },
    /// the usable cases come from more than one engine or target
    #[error("{path}: cases from several {what}s ({found}); choose one with --{what}")]
    Mixed { path: PathBuf, what: &'static str, found: String },
    /// the calibrated profile does not load
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// One measured call: what it cost and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub label: String,
    pub cost: GraphCost,
    /// Prompt tokens (0 for a model without).
    pub tokens: u64,
    pub kernels: Kernels,
    pub measured_ms: f64,
}

/// Which cases of a file to use: the profile's, of one engine and target.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    pub profile: &'a str,
    pub engine: Option<EngineKind>,
    pub target: Option<&'a str>,
}

/// The usable cases of a measurements file, and why the others were left out.
#[derive(Debug, Clone)]
pub struct Measured {
    pub path: PathBuf,
    pub cases: Vec<Case>,
    pub engine: EngineKind,
    pub target: String,
    /// (reason, count).
    pub skipped: Vec<(String, usize)>,
}

impl Measured {
    /// "runs.json: 18 usable cases (ort on emu); skipped 3: 2 with status failed, 1 of other profiles".
    pub fn summary(&self) -> String {
        let mut s = format!("{}: {} usable cases", self.path.display(), self.cases.len());
        if !self.cases.is_empty() {
            let _ = write!(s, " ({} on {})", self.engine.name(), self.target);
        }
        if !self.skipped.is_empty() {
            let total: usize = self.skipped.iter().map(|(_, n)| n).sum();
            let parts: Vec<String> = self.skipped.iter().map(|(why, n)| format!("{n} {why}")).collect();
            let _ = write!(s, "; skipped {total}: {}", parts.join(", "));
        }
        s
    }
}

/// A measured call as either file form gives it.
struct Entry {
    label: String,
    profile: String,
    target: String,
    engine: String,
    opt_level: Option<String>,
    status: Status,
    latency_ms: Option<f64>,
    cost: Option<GraphCost>,
    tokens: Option<u64>,
}

/// The fields of an `edgehil run --json` report that calibration reads.
#[derive(Deserialize)]
struct RunEntry {
    model: String,
    profile: String,
    target: String,
    engine: String,
    opt_level: String,
    status: Status,
    latency_ms: Option<Median>,
    cost: Option<GraphCost>,
    tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Median {
    median: f64,
}

/// Reads a suite journal (JSON lines of records) or the JSON array of run
/// reports `edgehil run --json` writes, and keeps the cases `filter` selects.
pub fn read(path: &Path, filter: &Filter) -> Result<Measured, CalibrateError> {
    let text = std::fs::read_to_string(path).map_err(|cause| CalibrateError::Read { path: path.into(), cause })?;
    let entries: Vec<Entry> = if text.trim_start().starts_with('[') {
        let reports: Vec<RunEntry> = serde_json::from_str(&text).map_err(|e| CalibrateError::Parse {
            path: path.into(),
            line: e.line(),
            message: e.to_string(),
        })?;
        reports
            .into_iter()
            .map(|r| Entry {
                label: r.model,
                profile: r.profile,
                target: r.target,
                engine: r.engine,
                opt_level: Some(r.opt_level),
                status: r.status,
                latency_ms: r.latency_ms.map(|l| l.median),
                cost: r.cost,
                tokens: r.tokens,
            })
            .collect()
    } else {
        record::read(path)?
            .into_iter()
            .map(|r| Entry {
                label: format!("{} {} {}", r.case.model, r.case.compression, r.case.workload),
                opt_level: r.report.get("opt_level").and_then(|o| o.as_str()).map(str::to_string),
                profile: r.case.profile,
                target: r.case.target,
                engine: r.case.engine,
                status: r.status,
                latency_ms: r.measurements.latency_ms,
                cost: r.measurements.cost,
                tokens: r.measurements.tokens,
            })
            .collect()
    };
    select(path, entries, filter)
}

fn select(path: &Path, entries: Vec<Entry>, filter: &Filter) -> Result<Measured, CalibrateError> {
    let mut skipped: Vec<(String, usize)> = Vec::new();
    let mut skip = |why: String| match skipped.iter_mut().find(|(w, _)| *w == why) {
        Some((_, n)) => *n += 1,
        None => skipped.push((why, 1)),
    };
    let mut kept = Vec::new();
    for e in entries {
        let engine = EngineKind::ALL.into_iter().find(|k| k.name() == e.engine);
        let opt_level = OptLevel::ALL.into_iter().find(|o| Some(o.name()) == e.opt_level.as_deref());
        match (e.status, e.latency_ms, e.cost, engine, opt_level) {
            (Status::Ok, Some(ms), Some(cost), Some(engine), Some(opt_level)) if ms > 0.0 && ms.is_finite() => {
                if e.profile != filter.profile {
                    skip("of other profiles".into());
                } else if filter.engine.is_some_and(|f| f != engine) {
                    skip("of other engines".into());
                } else if filter.target.is_some_and(|t| t != e.target) {
                    skip("on other targets".into());
                } else {
                    let case = Case {
                        label: e.label,
                        cost,
                        tokens: e.tokens.unwrap_or(0),
                        kernels: estimate::kernels(&cost, engine, opt_level, e.tokens.unwrap_or(0)),
                        measured_ms: ms,
                    };
                    kept.push((engine, e.target, case));
                }
            }
            (Status::Ok, ..) => skip("without a latency, a cost (not a run) or a known engine and opt level".into()),
            (status, ..) => skip(format!("with status {}", status.name())),
        }
    }
    let distinct = |names: Vec<String>| {
        let mut names = names;
        names.sort();
        names.dedup();
        names
    };
    let engines = distinct(kept.iter().map(|(e, _, _)| e.name().to_string()).collect());
    let targets = distinct(kept.iter().map(|(_, t, _)| t.clone()).collect());
    for (what, found) in [("engine", &engines), ("target", &targets)] {
        if found.len() > 1 {
            return Err(CalibrateError::Mixed { path: path.into(), what, found: found.join(", ") });
        }
    }
    let (engine, target) = kept.first().map_or((EngineKind::Tract, String::new()), |(e, t, _)| (*e, t.clone()));
    Ok(Measured { path: path.into(), cases: kept.into_iter().map(|(_, _, c)| c).collect(), engine, target, skipped })
}

/// A case as the fit explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct FitRow {
    pub label: String,
    pub tokens: u64,
    pub measured_ms: f64,
    pub fitted_ms: f64,
}

impl FitRow {
    /// (fitted − measured) / measured, in percent.
    pub fn error_pct(&self) -> f64 {
        100.0 * (self.fitted_ms / self.measured_ms - 1.0)
    }
}

/// The fitted parameters and how well they explain the cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub params: Params,
    /// In `PARAMETERS` order: why the cases could not determine a parameter (None: fitted).
    pub not_fitted: [Option<&'static str>; N],
    pub rows: Vec<FitRow>,
    pub median_abs_pct: f64,
    pub max_abs_pct: f64,
}

/// The latency model's parameters, as the calibration section names them.
pub const PARAMETERS: [&str; N] = [
    "compute",
    "compute_int8",
    "bandwidth",
    "call_overhead",
    "op_overhead",
    "token_overhead",
    "unpack",
    "unpack_one_row",
];
const N: usize = 8;

impl Fit {
    /// Per case: measured, fitted and the error; then the median and largest error.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0).max(4);
        let mut s =
            format!("{:<width$} {:>6} {:>12} {:>12} {:>8}\n", "case", "tokens", "measured ms", "fitted ms", "error");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<width$} {:>6} {:>12.3} {:>12.3} {:>7.1}%",
                r.label,
                r.tokens,
                r.measured_ms,
                r.fitted_ms,
                r.error_pct()
            );
        }
        let _ = writeln!(s, "median |error| {:.1}%, max |error| {:.1}%", self.median_abs_pct, self.max_abs_pct);
        let p = &self.params;
        let figures = [
            human_rate(p.compute, "FLOP/s"),
            human_rate(p.compute_int8, "OP/s"),
            human_rate(p.bandwidth, "B/s"),
            format!("{:.1} us", p.call_overhead * 1e6),
            format!("{:.2} us", p.op_overhead * 1e6),
            format!("{:.2} us", p.token_overhead * 1e6),
            format!("{:.4} ns per weight", p.unpack * 1e9),
            format!("{:.4} ns per weight", p.unpack_one_row * 1e9),
        ];
        for ((name, value), why) in PARAMETERS.iter().zip(figures).zip(self.not_fitted) {
            let _ =
                writeln!(s, "  {name:<15} {value}{}", why.map(|w| format!(" (not fitted: {w})")).unwrap_or_default());
        }
        s
    }
}

/// Middle of the sorted values (the upper one of an even count); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The search: x = [ln compute, ln compute_int8, ln bandwidth, call, op and token
/// overhead, unpack, unpack_one_row], the overheads in units of a typical case's
/// latency and its share per op, token or 4-bit weight, so every coordinate moves
/// on a scale of about 1.
struct Problem<'a> {
    cases: &'a [Case],
    int8_ratio: f64,
    free: [bool; N],
    seconds: f64,
    per_op: f64,
    per_token: f64,
    per_weight: f64,
}

/// How strongly overheads are pulled towards 0: far below a 1 % misfit, so
/// it only chooses between explanations the cases fit equally well.
const OVERHEAD_PULL: f64 = 1e-4;

impl Problem<'_> {
    fn params(&self, x: &[f64; N]) -> Params {
        let (mut compute, mut compute_int8) = (x[0].exp(), x[1].exp());
        if !self.free[0] {
            compute = compute_int8 / self.int8_ratio;
        }
        if !self.free[1] {
            compute_int8 = compute * self.int8_ratio;
        }
        Params {
            compute,
            compute_int8,
            bandwidth: x[2].exp(),
            call_overhead: if self.free[3] { x[3].max(0.0) * self.seconds } else { 0.0 },
            op_overhead: if self.free[4] { x[4].max(0.0) * self.per_op } else { 0.0 },
            token_overhead: if self.free[5] { x[5].max(0.0) * self.per_token } else { 0.0 },
            unpack: if self.free[6] { x[6].max(0.0) * self.per_weight } else { 0.0 },
            unpack_one_row: if self.free[7] { x[7].max(0.0) * self.per_weight } else { 0.0 },
        }
    }

    fn objective(&self, x: &[f64; N]) -> f64 {
        let p = self.params(x);
        self.cases
            .iter()
            .map(|c| {
                let measured = c.measured_ms / 1e3;
                let fitted = p.latency_s(&c.cost, c.tokens, c.kernels);
                let overhead = p.overhead_s(&c.cost, c.tokens) / measured;
                (fitted / measured).ln().powi(2) + OVERHEAD_PULL * overhead.powi(2)
            })
            .sum()
    }

    /// The free coordinates of `x` replaced by `y`.
    fn with(&self, x: &[f64; N], y: &[f64]) -> [f64; N] {
        let mut out = *x;
        for (i, v) in (0..N).filter(|i| self.free[*i]).zip(y) {
            out[i] = *v;
        }
        out
    }
}

/// Cases tell a per-token overhead from arithmetic, or a per-op overhead
/// from a fixed one, only if their FLOPs per token, or their op counts,
/// differ by at least this factor (models of different sizes).
pub const SEPARABLE: f64 = 2.0;

/// Largest over smallest of the positive `values`; infinite for none.
fn spread(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.filter(|v| *v > 0.0).collect();
    match v.is_empty() {
        true => f64::INFINITY,
        false => v.iter().copied().fold(0.0, f64::max) / v.iter().copied().fold(f64::INFINITY, f64::min),
    }
}

/// Why each parameter cannot be fitted to `cases` (or is given), None where it can.
fn not_fitted(cases: &[Case], bandwidth_given: bool) -> [Option<&'static str>; N] {
    // No arithmetic at all: nothing for an overhead to be mistaken for.
    let per_token = spread(cases.iter().filter(|c| c.tokens > 0).map(|c| c.cost.flops / c.tokens as f64));
    let counted = cases.iter().any(|c| c.cost.ops > 0);
    let ops = spread(cases.iter().map(|c| c.cost.ops as f64));
    [
        (!cases.iter().any(|c| !c.kernels.int8))
            .then_some("no case ran fp32 kernels; compute_int8 scaled by the profile's peak_fp32 / peak_int8"),
        (!cases.iter().any(|c| c.kernels.int8))
            .then_some("no case ran int8 kernels; compute scaled by the profile's peak_int8 / peak_fp32"),
        bandwidth_given.then_some("given as measured on the board (--bandwidth)"),
        // One model's cases cannot tell a fixed cost from a cost per op. It is
        // all put per op, taking an engine's fixed cost to be mostly handing
        // each op to its threads, so a deeper model pays more: calibrated on
        // pythia-160m, a fixed figure missed pythia-70m at one token by up to
        // 48 %, per op by 11 % (the latency_fidelity bench, one run's data).
        (counted && ops < SEPARABLE).then_some(
            "the cases' op counts differ by less than 2x (one model), so a fixed cost cannot be told from one per op: it is all counted per op; 0",
        ),
        (!counted).then_some("the cases carry no op counts (measured before edgehil recorded them); 0"),
        if !cases.iter().any(|c| c.tokens > 0) {
            Some("no case had prompt tokens; 0")
        } else if per_token < SEPARABLE {
            Some("the cases' FLOPs per token differ by less than 2x (one model), so it cannot be told from arithmetic; 0")
        } else {
            None
        },
        (!cases.iter().any(|c| c.kernels.unpacked > 0)).then_some(
            "no case widened 4-bit weights to fp32 (ONNX Runtime int4 with fp32 activations, more than one token); 0",
        ),
        (!cases.iter().any(|c| c.kernels.one_row > 0))
            .then_some("no case multiplied 4-bit weights one row at a time (ONNX Runtime int4 with fp32 activations, one token); 0"),
    ]
}

/// Fits the latency model to `cases`; `int8_ratio` (the profile's
/// peak_int8 / peak_fp32) gives the compute rate no case exercises. A
/// `bandwidth` measured on the board (B/s) is taken as it is: one model's
/// few weight sizes barely tell bandwidth from a fixed overhead.
pub fn fit(cases: &[Case], int8_ratio: f64, bandwidth: Option<f64>) -> Result<Fit, CalibrateError> {
    let not_fitted = not_fitted(cases, bandwidth.is_some());
    let free = not_fitted.map(|why| why.is_none());
    let parameters: Vec<&'static str> = PARAMETERS.iter().zip(free).filter(|(_, f)| *f).map(|(n, _)| *n).collect();
    if cases.len() < parameters.len() {
        return Err(CalibrateError::TooFewCases { usable: cases.len(), parameters });
    }
    let seconds = median(cases.iter().map(|c| c.measured_ms / 1e3).collect());
    let tokens = median(cases.iter().filter(|c| c.tokens > 0).map(|c| c.tokens as f64).collect()).max(1.0);
    let ops = median(cases.iter().filter(|c| c.cost.ops > 0).map(|c| c.cost.ops as f64).collect()).max(1.0);
    let quantized = |c: &Case| c.kernels.unpacked.max(c.kernels.one_row) as f64;
    let weights = median(cases.iter().map(quantized).filter(|w| *w > 0.0).collect()).max(1.0);
    let problem = Problem {
        cases,
        int8_ratio,
        free,
        seconds,
        per_op: seconds / ops,
        per_token: seconds / tokens,
        per_weight: seconds / weights,
    };

    // Log grid over the rates, overheads at 0: the rate that would make each
    // case bound by it alone, from a tenth of the slowest to 100× the fastest.
    let span = |per_case: Vec<f64>| {
        let v: Vec<f64> = per_case.into_iter().filter(|r| *r > 0.0 && r.is_finite()).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        if v.is_empty() {
            (1e9f64.ln(), 1e9f64.ln())
        } else {
            ((lo / 10.0).ln(), (hi * 100.0).ln())
        }
    };
    let rate = |c: &Case, int8: bool| if c.kernels.int8 == int8 { c.cost.flops / (c.measured_ms / 1e3) } else { 0.0 };
    let primary = if free[0] { 0 } else { 1 };
    let (c_lo, c_hi) = span(cases.iter().map(|c| rate(c, primary == 1)).collect());
    let (w_lo, w_hi) = match bandwidth {
        Some(b) => (b.ln(), b.ln()),
        None => {
            span(cases.iter().map(|c| (c.cost.weight_bytes + c.cost.io_bytes) as f64 / (c.measured_ms / 1e3)).collect())
        }
    };
    // About 8 points a decade; a span of 0 (a bandwidth given) is one point,
    // since a second would move it.
    const STEPS_PER_E: f64 = 3.5;
    let steps = |lo: f64, hi: f64| ((hi - lo) * STEPS_PER_E).ceil() as usize;
    let mut best = ([0.0; N], f64::INFINITY);
    for i in 0..=steps(c_lo, c_hi) {
        for j in 0..=steps(w_lo, w_hi) {
            let c = c_lo + i as f64 / STEPS_PER_E;
            let c8 = if primary == 0 { c + int8_ratio.ln() } else { c };
            let c32 = if primary == 0 { c } else { c - int8_ratio.ln() };
            let x = [c32, c8, w_lo + j as f64 / STEPS_PER_E, 0.0, 0.0, 0.0, 0.0, 0.0];
            let f = problem.objective(&x);
            if f < best.1 {
                best = (x, f);
            }
        }
    }
    let x = coordinate_descent(&problem, best.0);
    let x = nelder_mead(&problem, x);
    let x = coordinate_descent(&problem, x);

    let params = problem.params(&x);
    let rows: Vec<FitRow> = cases
        .iter()
        .map(|c| FitRow {
            label: c.label.clone(),
            tokens: c.tokens,
            measured_ms: c.measured_ms,
            fitted_ms: params.latency_s(&c.cost, c.tokens, c.kernels) * 1e3,
        })
        .collect();
    let errors: Vec<f64> = rows.iter().map(|r| r.error_pct().abs()).collect();
    Ok(Fit {
        params,
        not_fitted,
        median_abs_pct: median(errors.clone()),
        max_abs_pct: errors.iter().copied().fold(0.0, f64::max),
        rows,
    })
}

/// Moves one free coordinate at a time to its best value among steps of
/// several sizes, until no step helps.
fn coordinate_descent(problem: &Problem, mut x: [f64; N]) -> [f64; N] {
    const STEPS: [f64; 10] = [2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.003, 0.001];
    let mut f = problem.objective(&x);
    for _ in 0..500 {
        let before = f;
        for i in (0..N).filter(|i| problem.free[*i]) {
            // Overheads may also drop to exactly 0.
            let zero = (i >= 3).then_some(-x[i]);
            for step in STEPS.iter().flat_map(|s| [*s, -*s]).chain(zero) {
                let mut y = x;
                y[i] = if i >= 3 { (x[i] + step).max(0.0) } else { x[i] + step };
                let fy = problem.objective(&y);
                if fy < f {
                    (x, f) = (y, fy);
                }
            }
        }
        if f >= before * (1.0 - 1e-12) {
            break;
        }
    }
    x
}

/// Nelder–Mead over the free coordinates, from `x`.
fn nelder_mead(problem: &Problem, x: [f64; N]) -> [f64; N] {
    let start: Vec<f64> = (0..N).filter(|i| problem.free[*i]).map(|i| x[i]).collect();
    let n = start.len();
    let f = |y: &[f64]| problem.objective(&problem.with(&x, y));
    let mut simplex: Vec<(Vec<f64>, f64)> = vec![(start.clone(), f(&start))];
    for k in 0..n {
        let mut y = start.clone();
        y[k] += 0.2;
        simplex.push((y.clone(), f(&y)));
    }
    let point = |a: &[f64], b: &[f64], t: f64| -> Vec<f64> { a.iter().zip(b).map(|(a, b)| a + t * (b - a)).collect() };
    for _ in 0..400 * n {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if simplex[n].1 - simplex[0].1 <= 1e-14 * (1.0 + simplex[0].1.abs()) {
            break;
        }
        let centroid: Vec<f64> =
            (0..n).map(|k| simplex[..n].iter().map(|(y, _)| y[k]).sum::<f64>() / n as f64).collect();
        let worst = simplex[n].0.clone();
        let reflected = point(&centroid, &worst, -1.0);
        let fr = f(&reflected);
        if fr < simplex[0].1 {
            let expanded = point(&centroid, &worst, -2.0);
            let fe = f(&expanded);
            simplex[n] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (reflected, fr);
        } else {
            let contracted = point(&centroid, &worst, 0.5);
            let fc = f(&contracted);
            if fc < simplex[n].1 {
                simplex[n] = (contracted, fc);
            } else {
                let best = simplex[0].0.clone();
                for entry in simplex.iter_mut().skip(1) {
                    let y = point(&best, &entry.0, 0.5);
                    *entry = (y.clone(), f(&y));
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    problem.with(&x, &simplex[0].0)
}

/// `value` to four significant digits: what the cases can tell.
fn round4(value: f64) -> f64 {
    if value == 0.0 {
        return 0.0;
    }
    format!("{value:.3e}").parse().unwrap_or(value)
}

/// The default file of the calibrated profile: PROFILE-calibrated.toml.
pub fn default_out(profile: &str) -> PathBuf {
    let base = profile.strip_suffix("-calibrated").unwrap_or(profile);
    PathBuf::from(format!("{base}-calibrated.toml"))
}

/// A calibrated profile, its file text, and the fit that made it.
#[derive(Debug, Clone)]
pub struct Calibrated {
    pub profile: Profile,
    pub toml: String,
    pub fit: Fit,
}

/// `profile` with a calibration section fitted to `measured`, named after
/// `out` (a profile's name is its file's stem) and checked to load from there.
pub fn calibrate(
    measured: &Measured,
    profile: &Profile,
    out: &Path,
    bandwidth: Option<f64>,
) -> Result<Calibrated, CalibrateError> {
    let fit = fit(&measured.cases, profile.peak_int8.value.0 / profile.peak_fp32.value.0, bandwidth)?;
    let source = format!(
        "edgehil calibrate: fitted to {} cases of {} ({} on {}), median |error| {:.1} %, max {:.1} %",
        measured.cases.len(),
        measured.path.display(),
        measured.engine.name(),
        measured.target,
        fit.median_abs_pct,
        fit.max_abs_pct
    );
    let fitted =
        "least squares on log latency of FLOPs / compute + 4-bit weights x unpack (or unpack_one_row) + bytes / bandwidth + call overhead + ops x op overhead + tokens x token overhead";
    let why = |index: usize| fit.not_fitted[index].map_or(fitted.to_string(), |w| format!("not fitted: {w}"));
    fn figure<T>(value: T, source: &str, reasoning: String) -> Figure<T> {
        Figure { value, source: source.to_string(), reasoning: Some(reasoning) }
    }
    let p = &fit.params;
    let calibration = Calibration {
        engine: measured.engine.name().to_string(),
        compute: figure(FlopRate(round4(p.compute)), &source, why(0)),
        compute_int8: figure(OpRate(round4(p.compute_int8)), &source, why(1)),
        bandwidth: figure(ByteRate(round4(p.bandwidth)), &source, why(2)),
        call_overhead: figure(Seconds(round4(p.call_overhead)), &source, why(3)),
        op_overhead: Some(figure(Seconds(round4(p.op_overhead)), &source, why(4))),
        token_overhead: figure(Seconds(round4(p.token_overhead)), &source, why(5)),
        unpack: Some(figure(Seconds(round4(p.unpack)), &source, why(6))),
        unpack_one_row: Some(figure(Seconds(round4(p.unpack_one_row)), &source, why(7))),
    };
    let name = out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let calibrated = Profile {
        display_name: format!("{} (calibrated)", profile.display_name.trim_end_matches(" (calibrated)")),
        name,
        calibration: Some(calibration),
        ..profile.clone()
    };
    let toml = calibrated.to_toml()?;
    // What `--profiles-dir` will read: the file must load as this profile.
    let profile = Profile::parse(&toml, out)?;
    Ok(Calibrated { profile, toml, fit })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUE: Params = Params {
        compute: 150e9,
        compute_int8: 90e9,
        bandwidth: 20e9,
        call_overhead: 300e-6,
        op_overhead: 2e-6,
        token_overhead: 20e-6,
        unpack: 0.1e-9,
        unpack_one_row: 0.03e-9,
    };

    fn cost(flops: f64, bytes: u64, int8: bool, ops: u64) -> GraphCost {
        GraphCost { flops, weight_bytes: bytes, io_bytes: 0, int8_weights: int8, ops, fp32_activation_weights: 0 }
    }

    /// Prefills of three model sizes (more layers, more ops) in fp32, int8 and int4 (fp32
    /// activations) at several lengths, as `truth` times them on ONNX Runtime, times a
    /// deterministic ±`noise` factor.
    fn cases(truth: &Params, noise: f64) -> Vec<Case> {
        let mut out = Vec::new();
        let kinds = [(20e6, "fp32"), (70e6, "fp32"), (160e6, "fp32"), (70e6, "int8"), (160e6, "int8")];
        for (params, kind) in kinds.into_iter().chain([(70e6, "int4"), (160e6, "int4")]) {
            for (k, tokens) in [1u64, 4, 16, 64, 256].into_iter().enumerate() {
                let bytes_per_weight = match kind {
                    "fp32" => 4.0,
                    "int8" => 1.0,
                    _ => 0.625,
                };
                let mut c = cost(
                    2.0 * params * tokens as f64,
                    (params * bytes_per_weight) as u64,
                    kind == "int8",
                    (params / 2e5) as u64,
                );
                c.fp32_activation_weights = if kind == "int4" { params as u64 } else { 0 };
                let kernels = estimate::kernels(&c, EngineKind::Ort, OptLevel::All, tokens);
                let wobble = 1.0 + noise * [1.0, -1.0, 0.5, -0.5, 0.0][k];
                out.push(Case {
                    label: format!("{params} {kind} {tokens}"),
                    cost: c,
                    tokens,
                    kernels,
                    measured_ms: truth.latency_s(&c, tokens, kernels) * 1e3 * wobble,
                });
            }
        }
        out
    }

    fn close(what: &str, got: f64, want: f64, tolerance: f64) {
        assert!((got / want - 1.0).abs() <= tolerance, "{what}: fitted {got:e}, true {want:e}");
    }

    #[test]
    fn recovers_known_parameters_from_exact_points() {
        let f = fit(&cases(&TRUE, 0.0), 4.0, None).unwrap();
        assert_eq!(f.not_fitted, [None; N]);
        close("compute", f.params.compute, TRUE.compute, 0.01);
        close("compute_int8", f.params.compute_int8, TRUE.compute_int8, 0.01);
        close("bandwidth", f.params.bandwidth, TRUE.bandwidth, 0.01);
        close("call", f.params.call_overhead, TRUE.call_overhead, 0.02);
        close("op", f.params.op_overhead, TRUE.op_overhead, 0.02);
        close("token", f.params.token_overhead, TRUE.token_overhead, 0.05);
        close("unpack", f.params.unpack, TRUE.unpack, 0.02);
        close("unpack_one_row", f.params.unpack_one_row, TRUE.unpack_one_row, 0.05);
        assert!(f.max_abs_pct < 0.5, "{}", f.table());
    }

    #[test]
    fn noisy_points_give_parameters_near_the_truth() {
        let f = fit(&cases(&TRUE, 0.05), 4.0, None).unwrap();
        close("compute", f.params.compute, TRUE.compute, 0.1);
        close("compute_int8", f.params.compute_int8, TRUE.compute_int8, 0.1);
        close("bandwidth", f.params.bandwidth, TRUE.bandwidth, 0.1);
        assert!(f.median_abs_pct <= 5.5 && f.max_abs_pct <= 8.0, "{}", f.table());
    }

    #[test]
    fn a_rate_no_case_exercises_follows_the_profiles_ratio() {
        let fp32: Vec<Case> = cases(&TRUE, 0.0).into_iter().filter(|c| !c.kernels.int8).collect();
        let f = fit(&fp32, 4.0, None).unwrap();
        assert_eq!(f.not_fitted.map(|w| w.is_none()), [true, false, true, true, true, true, true, true]);
        close("compute", f.params.compute, TRUE.compute, 0.01);
        close("compute_int8", f.params.compute_int8, 4.0 * f.params.compute, 1e-12);
    }

    #[test]
    fn without_tokens_there_is_no_token_overhead() {
        let mut no_tokens = cases(&Params { token_overhead: 0.0, ..TRUE }, 0.0);
        no_tokens.iter_mut().for_each(|c| c.tokens = 0);
        let f = fit(&no_tokens, 4.0, None).unwrap();
        assert_eq!(f.not_fitted[5], Some("no case had prompt tokens; 0"));
        assert_eq!(f.params.token_overhead, 0.0);
        assert!(f.max_abs_pct < 0.5, "{}", f.table());
    }

    #[test]
    fn one_models_prompts_leave_the_token_overhead_to_arithmetic() {
        // With a token overhead in the truth, one model's prompts are still
        // fitted well, by arithmetic alone; without one, the rates come back.
        let one_model = |truth: &Params| -> Vec<Case> {
            cases(truth, 0.0).into_iter().filter(|c| c.label.starts_with("70000000 ")).collect()
        };
        let f = fit(&one_model(&TRUE), 4.0, None).unwrap();
        assert!(f.not_fitted[5].is_some_and(|w| w.contains("less than 2x")), "{:?}", f.not_fitted);
        assert_eq!(f.params.token_overhead, 0.0);
        // Nor can its fixed overhead be told from its ops': all of it is per op.
        assert!(f.not_fitted[3].is_some_and(|w| w.contains("op counts differ")), "{:?}", f.not_fitted);
        assert_eq!(f.params.call_overhead, 0.0);
        assert!(f.max_abs_pct < 20.0, "{}", f.table());
        let truth = Params { token_overhead: 0.0, ..TRUE };
        let f = fit(&one_model(&truth), 4.0, None).unwrap();
        close("compute", f.params.compute, truth.compute, 0.01);
        close("compute_int8", f.params.compute_int8, truth.compute_int8, 0.01);
        close("bandwidth", f.params.bandwidth, truth.bandwidth, 0.01);
        // The 70M-parameter model has 350 ops.
        close("op", 350.0 * f.params.op_overhead, truth.call_overhead + 350.0 * truth.op_overhead, 0.01);
    }

    #[test]
    fn a_measured_bandwidth_is_kept_and_the_rest_fitted_around_it() {
        let truth = Params { token_overhead: 0.0, op_overhead: 0.0, ..TRUE };
        let one_model: Vec<Case> =
            cases(&truth, 0.0).into_iter().filter(|c| c.label.starts_with("70000000 ")).collect();
        let f = fit(&one_model, 4.0, Some(truth.bandwidth)).unwrap();
        assert_eq!(f.not_fitted[2], Some("given as measured on the board (--bandwidth)"));
        close("bandwidth", f.params.bandwidth, truth.bandwidth, 1e-12);
        close("compute", f.params.compute, truth.compute, 0.01);
        close("compute_int8", f.params.compute_int8, truth.compute_int8, 0.01);
        close("op", 350.0 * f.params.op_overhead, truth.call_overhead, 0.02);
        // Kept as given where a higher figure fits the runs better (the grid
        // search had a second point above a given figure: 20 GB/s became 26.6).
        let f = fit(&one_model, 4.0, Some(truth.bandwidth / 10.0)).unwrap();
        close("given bandwidth", f.params.bandwidth, truth.bandwidth / 10.0, 1e-12);
    }

    #[test]
    fn degenerate_input() {
        let all = cases(&TRUE, 0.0);
        let e = fit(&[&all[..2], &all[20..22]].concat(), 4.0, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "4 usable cases for 6 parameters (compute, compute_int8, bandwidth, call_overhead, op_overhead, token_overhead): \
             measure more runs (status ok, with a latency and a cost)"
        );
        assert!(matches!(fit(&[], 4.0, None), Err(CalibrateError::TooFewCases { usable: 0, .. })));
        // One point measured five times cannot separate the parameters, but
        // the fit still explains it with finite, non-negative figures.
        let same = vec![all[7].clone(); 5];
        let f = fit(&same, 4.0, None).unwrap();
        let p = f.params;
        assert!(p.compute.is_finite() && p.bandwidth.is_finite() && p.call_overhead >= 0.0 && p.token_overhead >= 0.0);
        assert!(f.max_abs_pct < 0.1, "{}", f.table());
        // Graphs without arithmetic or weights: only the overheads explain them.
        let empty: Vec<Case> = (1..=4u64)
            .map(|t| Case {
                label: t.to_string(),
                cost: cost(0.0, 0, false, 0),
                tokens: t,
                kernels: Kernels::default(),
                measured_ms: 0.5 + 0.1 * t as f64,
            })
            .collect();
        let f = fit(&empty, 4.0, None).unwrap();
        assert!(f.not_fitted[4].is_some_and(|w| w.contains("no op counts")), "{:?}", f.not_fitted);
        close("call", f.params.call_overhead, 0.5e-3, 0.01);
        close("token", f.params.token_overhead, 0.1e-3, 0.01);
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edgehil-calibrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn filter(profile: &str) -> Filter<'_> {
        Filter { profile, engine: None, target: None }
    }

    fn run_report(profile: &str, engine: &str, target: &str, status: &str, median: f64, tokens: Option<u64>) -> String {
        let tokens = tokens.map_or(String::new(), |t| format!(r#", "tokens": {t}"#));
        format!(
            r#"{{"model": "m.onnx", "profile": "{profile}", "target": "{target}", "engine": "{engine}", "opt_level": "all",
              "status": "{status}", "latency_ms": {{"median": {median}, "min": 0}},
              "cost": {{"flops": 1e9, "weight_bytes": 1000, "io_bytes": 10, "int8_weights": true}}{tokens}}}"#
        )
    }

    #[test]
    fn reads_run_reports_and_keeps_the_profiles_cases() {
        let reports = [
            run_report("pi", "ort", "emu", "ok", 2.5, Some(16)),
            run_report("pi", "ort", "emu", "does_not_fit", 0.0, None),
            run_report("jetson", "ort", "emu", "ok", 1.0, None),
            run_report("pi", "tract", "emu", "ok", 3.0, None),
        ];
        let path = write("runs.json", &format!("[{}]", reports.join(",\n")));
        let m = read(&path, &Filter { engine: Some(EngineKind::Ort), ..filter("pi") }).unwrap();
        assert_eq!(m.cases.len(), 1);
        let c = &m.cases[0];
        assert_eq!((c.tokens, c.measured_ms, c.kernels.int8), (16, 2.5, true), "ort at all runs int8 kernels");
        assert_eq!((m.engine, m.target.as_str()), (EngineKind::Ort, "emu"));
        assert!(
            m.summary().ends_with("skipped 3: 1 with status does_not_fit, 1 of other profiles, 1 of other engines"),
            "{}",
            m.summary()
        );
        let e = read(&path, &filter("pi")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: cases from several engines (ort, tract); choose one with --engine", path.display())
        );
    }

    #[test]
    fn a_file_that_does_not_parse_is_named_with_its_line() {
        let bad_report =
            write("bad.json", &format!("[{},\n{{\"model\": 3}}]", run_report("pi", "ort", "emu", "ok", 1.0, None)));
        let e = read(&bad_report, &filter("pi")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:4: not a list of run reports: invalid type", bad_report.display())), "{e}");
        let bad_journal = write("bad.jsonl", "{\"suite\": \"s\"\nnot json\n");
        let e = read(&bad_journal, &filter("pi")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:1: not a journal record", bad_journal.display())), "{e}");
    }

    #[test]
    fn the_calibrated_profile_loads_and_predicts_with_its_figures() {
        let builtin = crate::profile::Profiles::builtin().unwrap();
        let pi = builtin.get("raspberry-pi-5").unwrap();
        let measured = Measured {
            path: "runs.json".into(),
            cases: cases(&TRUE, 0.0),
            engine: EngineKind::Ort,
            target: "emu".into(),
            skipped: vec![],
        };
        let out = default_out(&pi.name);
        assert_eq!(out, PathBuf::from("raspberry-pi-5-calibrated.toml"));
        let c = calibrate(&measured, pi, &out, None).unwrap();
        assert_eq!(c.profile.name, "raspberry-pi-5-calibrated");
        assert_eq!(Profile::parse(&c.toml, &out).unwrap(), c.profile);
        let cal = c.profile.calibration.as_ref().unwrap();
        assert!(
            cal.compute.source.contains("35 cases of runs.json (ort on emu), median |error|"),
            "{}",
            cal.compute.source
        );
        let case = &measured.cases[12];
        let at = |engine| estimate::predict(&case.cost, case.tokens, &c.profile, engine, OptLevel::All);
        let ort = at(EngineKind::Ort);
        assert!(ort.calibrated);
        close("ort prediction", ort.latency_ms, case.measured_ms, 0.01);
        // Another engine's rates are not these: the datasheet figures stand.
        let tract = at(EngineKind::Tract);
        assert!(!tract.calibrated);
        assert_eq!(tract, estimate::predict(&case.cost, case.tokens, pi, EngineKind::Tract, OptLevel::All));
    }
}
