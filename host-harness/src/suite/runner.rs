//! Running a suite: exports first, then one worker process per case.
//!
//! A case runs in its own process group (`edgehil suite worker`), so a case
//! that overruns its timeout is killed with its agent and nothing else, and
//! a crash on the host side fails one case, not the night. Each record is
//! appended to the journal and synced before the next case starts.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgehil_hil::{ExitCause, Target, Timeouts};
use edgehil_onnx::export::{export, ExportOptions};
use edgehil_runtime::wire::{EngineKind, OptLevel, OutputMode};

use crate::eval::{eval, EvalOptions, EvalReport};
use crate::generate::{generate, GenerateOptions, GenerateReport};
use crate::profile::Profiles;
use crate::report::{Memory, RunReport, Status};
use crate::run::{self, BoardOptions, RunOptions};

use super::file::{Model, Source, Suite, Workload};
use super::record::{self, Case, JournalError, Measurements, Record, WorkloadReport, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuiteRunError {
    /// a journal is there and --resume was not given
    #[error("{0} already holds results: pass --resume to go on with it, or choose another --out")]
    JournalExists(PathBuf),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// the output folder or a report could not be written
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
}

pub struct RunSuiteOptions {
    pub out: PathBuf,
    pub resume: bool,
    /// The command that runs one case: the `edgehil` executable and the
    /// arguments before `suite worker` (e.g. --profiles-dir).
    pub worker: Vec<std::ffi::OsString>,
}

/// What the caller shows as the suite goes.
pub enum Progress<'a> {
    /// `total` cases, `done` of them already in the journal.
    Start {
        total: usize,
        done: usize,
    },
    Exporting(&'a str),
    Case(&'a Case),
    Done(&'a Record),
    /// The journal ended in a partial line (a killed write): cut off, its bytes kept.
    Repaired {
        journal: &'a Path,
        repaired: &'a record::Repaired,
    },
}

pub fn journal_path(out: &Path) -> PathBuf {
    out.join("journal.jsonl")
}

/// Where a model of the suite is exported to, or its own path.
pub fn model_path(out: &Path, model: &Model, compression: &str) -> PathBuf {
    match &model.source {
        Source::Path(p) => p.clone(),
        Source::Hf { .. } => out.join("models").join(format!("{}-{}", model.name, compression.replace(':', "_"))),
    }
}

/// The embedder as the board loads it: an export, or where the suite exports a Hugging Face folder to.
pub fn embedder_path(out: &Path, given: &Path) -> PathBuf {
    match given.join("edgehil.json").is_file() {
        true => given.to_path_buf(),
        false => out.join("models").join(format!(
            "embedder-{}",
            given.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned())
        )),
    }
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A record for a case that ended without a report.
fn failed(suite: &Suite, case: &Case, reason: String, started: f64, took: Duration) -> Record {
    Record {
        schema_version: SCHEMA_VERSION,
        suite: suite.name.clone(),
        case: case.clone(),
        status: Status::Failed,
        reason: Some(reason),
        started_unix_s: started,
        duration_s: took.as_secs_f64(),
        measurements: Measurements::default(),
        report: None,
    }
}

/// Exports `hf` into `dir` unless a complete export is already there (the
/// manifest is written last). Errors are kept as text: they fail cases.
fn ensure_export(hf: &Path, dir: &Path, opts: ExportOptions) -> Result<(), String> {
    if dir.join("edgehil.json").is_file() {
        return Ok(());
    }
    export(hf, dir, opts).map(|_| ()).map_err(|e| format!("exporting {}: {e}", hf.display()))
}

/// Every export the pending cases need; the error of each that failed.
fn prepare(
    suite: &Suite,
    out: &Path,
    pending: &[&Case],
    progress: &mut dyn FnMut(Progress),
) -> std::collections::BTreeMap<PathBuf, String> {
    let mut failures = std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for case in pending {
        let Some(model) = suite.model(&case.model) else { continue };
        if let Source::Hf { dir, compressions } = &model.source {
            for c in compressions.iter().filter(|c| c.name == case.compression || c.name == "none") {
                let target = model_path(out, model, &c.name);
                if seen.insert(target.clone()) {
                    progress(Progress::Exporting(&format!("{} {}", model.name, c.name)));
                    let opts = ExportOptions { quant: c.quant, prune: c.prune, ..ExportOptions::default() };
                    if let Err(e) = ensure_export(dir, &target, opts) {
                        failures.insert(target, e);
                    }
                }
            }
        }
        if let Some(Workload::Eval(w)) = suite.workload(&case.workload) {
            if let Some(given) = &w.embedder {
                let target = embedder_path(out, given);
                if target != *given && seen.insert(target.clone()) {
                    progress(Progress::Exporting(&format!("embedder {}", given.display())));
                    if let Err(e) = ensure_export(given, &target, ExportOptions::default()) {
                        failures.insert(target, e);
                    }
                }
            }
        }
    }
    failures
}

/// Runs every case not yet in the journal; returns the whole journal.
pub fn run_suite(
    suite: &Suite,
    opts: &RunSuiteOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Record>, SuiteRunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| SuiteRunError::Io { path, cause }
    };
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let journal = journal_path(&opts.out);
    let done: std::collections::BTreeSet<String> = match (journal.exists(), opts.resume) {
        (true, false) => return Err(SuiteRunError::JournalExists(journal)),
        (true, true) => {
            if let Some(repaired) = record::repair(&journal)? {
                progress(Progress::Repaired { journal: &journal, repaired: &repaired });
            }
            record::read(&journal)?.iter().map(|r| r.case.id()).collect()
        }
        (false, _) => Default::default(),
    };
    let cases = suite.cases();
    let pending: Vec<&Case> = cases.iter().filter(|c| !done.contains(&c.id())).collect();
    progress(Progress::Start { total: cases.len(), done: cases.len() - pending.len() });
    let export_failures = prepare(suite, &opts.out, &pending, progress);

    for case in pending {
        progress(Progress::Case(case));
        let started = now_unix();
        let clock = Instant::now();
        let model = suite.model(&case.model).expect("cases come from the suite's models");
        let needed = model_path(&opts.out, model, &case.compression);
        let record = match export_failures.get(&needed) {
            Some(e) => failed(suite, case, e.clone(), started, clock.elapsed()),
            None => run_worker(suite, opts, case, started),
        };
        record::append(&journal, &record)?;
        progress(Progress::Done(&record));
    }
    Ok(record::read(&journal)?)
}

/// The reports of a finished (or resumed) suite, beside its journal.
pub fn write_reports(out: &Path, suite: &str, records: &[Record]) -> Result<Vec<PathBuf>, SuiteRunError> {
    let json = serde_json::to_string_pretty(records)
        .map_err(|e| SuiteRunError::Io { path: out.join("report.json"), cause: e.into() })?;
    let files = [
        ("report.json", json),
        ("junit.xml", super::reports::junit(suite, records)),
        ("summary.md", super::reports::markdown(suite, records)),
        ("report.html", super::html::html(suite, records)),
    ];
    files
        .into_iter()
        .map(|(name, text)| {
            let path = out.join(name);
            std::fs::write(&path, text).map_err(|cause| SuiteRunError::Io { path: path.clone(), cause })?;
            Ok(path)
        })
        .collect()
}

/// Runs one case in a worker process, killed with its process group at the timeout.
fn run_worker(suite: &Suite, opts: &RunSuiteOptions, case: &Case, started: f64) -> Record {
    let clock = Instant::now();
    let (program, args) = opts.worker.split_first().expect("a worker command");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args(["suite", "worker"])
        .arg(&suite.path)
        .arg("--out")
        .arg(&opts.out)
        .arg("--case")
        .arg(serde_json::to_string(case).expect("a case encodes"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the
    // worker if this process dies, so a killed suite leaves no case running.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return failed(suite, case, format!("cannot start the worker {program:?}: {e}"), started, clock.elapsed())
        }
    };
    // Read both pipes as the worker writes, so a large report cannot block it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let limit = Duration::from_secs_f64(suite.timeout_s);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if clock.elapsed() >= limit => {
                // SAFETY: the worker leads its own process group; this signals it and its agent only.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break Err(format!(
                    "timed out after {:.0} s (the case's timeout); the worker and its board were killed",
                    suite.timeout_s
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(format!("waiting for the worker: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let took = clock.elapsed();
    let last_words = || {
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    match status {
        Err(reason) => failed(suite, case, reason, started, took),
        Ok(status) => match out.lines().last().map(serde_json::from_str::<Record>) {
            Some(Ok(mut r)) => {
                r.started_unix_s = started;
                r.duration_s = took.as_secs_f64();
                r
            }
            _ => failed(
                suite,
                case,
                format!("the worker ended ({}) without a result: {}", ExitCause::from(status), last_words()),
                started,
                took,
            ),
        },
    }
}

/// The board options of a case.
fn board(suite: &Suite, case: &Case) -> Result<BoardOptions, String> {
    let (target, engine) = (case.target.clone(), case.engine);
    let agent = match (&suite.agent, &target) {
        (Some(a), _) => a.clone(),
        (None, Target::Emulated) => run::find_agent().map_err(|e| e.to_string())?,
        (None, Target::Serial { .. }) => PathBuf::new(),
        (None, Target::QemuMcu { .. }) => crate::mcu::find_firmware().map_err(|e| e.to_string())?,
    };
    let ort_library = match engine {
        EngineKind::Ort => Some(run::find_ort_library(None).map_err(|e| e.to_string())?),
        EngineKind::Tract | EngineKind::Micro => None,
    };
    Ok(BoardOptions {
        target,
        engine,
        opt_level: OptLevel::All,
        cap: None,
        agent,
        ort_library,
        timeouts: Timeouts { request: Duration::from_secs_f64(suite.timeout_s), ..Timeouts::default() },
        agent_args: Vec::new(),
    })
}

/// Runs one case in this process (the worker's job).
pub fn run_case(suite: &Suite, profiles: &Profiles, out: &Path, case: Case) -> Record {
    let started = now_unix();
    let clock = Instant::now();
    match measure(suite, profiles, out, &case) {
        Ok((status, reason, measurements, report)) => Record {
            schema_version: SCHEMA_VERSION,
            suite: suite.name.clone(),
            case,
            status,
            reason,
            started_unix_s: started,
            duration_s: clock.elapsed().as_secs_f64(),
            measurements,
            report: Some(report),
        },
        Err(reason) => failed(suite, &case, reason, started, clock.elapsed()),
    }
}

type Outcome = (Status, Option<String>, Measurements, WorkloadReport);

fn measure(suite: &Suite, profiles: &Profiles, out: &Path, case: &Case) -> Result<Outcome, String> {
    let profile = profiles.get(&case.profile).map_err(|e| e.to_string())?;
    let model = suite.model(&case.model).ok_or("unknown model")?;
    let workload = suite.workload(&case.workload).ok_or("unknown workload")?;
    let board = board(suite, case)?;
    let dir = model_path(out, model, &case.compression);
    // Compressed exports are judged against the suite's fp32 export of the same model.
    let reference = match &model.source {
        Source::Hf { compressions, .. }
            if case.compression != "none" && compressions.iter().any(|c| c.name == "none") =>
        {
            Some(model_path(out, model, "none"))
        }
        _ => None,
    };
    match workload {
        Workload::Run(w) => {
            let file = if dir.is_dir() { dir.join("model.onnx") } else { dir.clone() };
            let opts = RunOptions {
                model: file,
                reference: reference.map(|r| r.join("model.onnx")),
                board,
                runs: w.runs,
                warmup: w.warmup,
                inputs: None,
                seed: 1,
                sequence: w.prompt_tokens,
                outputs: OutputMode::Full,
            };
            let r = run::run(&opts, profile).map_err(|e| e.to_string())?;
            let language_model = dir.join("edgehil.json").is_file();
            let measurements = of_run(&r, language_model.then_some(w.prompt_tokens));
            Ok((r.status, r.error.clone(), measurements, WorkloadReport::Run(r)))
        }
        Workload::Generate(w) => {
            let opts = GenerateOptions {
                model: dir,
                reference,
                prompt: w.prompt.clone(),
                params: w.params(),
                stop_at_eos: !w.ignore_eos,
                tokenize_on_board: false,
                reps: w.reps,
                board,
            };
            let r = generate(&opts, profile, |_| {}).map_err(|e| e.to_string())?;
            Ok((r.status, r.error.clone(), of_generate(&r), WorkloadReport::Generate(r)))
        }
        Workload::Eval(w) => {
            let clock = Instant::now();
            let items = out.join("items").join(format!("{}.jsonl", case.id().replace(['/', ':'], "_")));
            if let Some(parent) = items.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let opts = EvalOptions {
                task: w.task.clone(),
                method: w.method,
                model: dir,
                embedder: w.embedder.as_deref().map(|e| embedder_path(out, e)),
                params: edgehil_runtime::wire::GenParams {
                    max_new: w.max_new,
                    ..edgehil_runtime::wire::GenParams::STUDY
                },
                stop_at_eos: true,
                board,
                journal: Some(items),
            };
            let r = eval(&opts, profile).map_err(|e| e.to_string())?;
            Ok((r.status, r.error.clone(), of_eval(&r, clock.elapsed()), WorkloadReport::Eval(r)))
        }
    }
}

/// What every workload's report gives alike: its memory and one accuracy figure.
fn measured(memory: &Memory, accuracy: Option<(f64, &str)>) -> Measurements {
    Measurements {
        peak_heap: memory.peak_heap,
        peak_rss: memory.peak_rss,
        budget_bytes: Some(memory.cap_bytes),
        accuracy: accuracy.map(|(a, _)| a),
        accuracy_metric: accuracy.map(|(_, metric)| metric.to_string()),
        ..Measurements::default()
    }
}

fn of_run(r: &RunReport, tokens: Option<u64>) -> Measurements {
    // Logits are judged by top-1 agreement, other outputs by cosine; the worst output counts.
    let worst = |f: fn(&crate::accuracy::Accuracy) -> Option<f64>| {
        r.accuracy.iter().filter_map(f).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
    };
    let accuracy = match worst(|a| a.top1) {
        Some(t) => Some((t, "top1")),
        None => worst(|a| a.cosine).map(|c| (c, "cosine")),
    };
    Measurements {
        latency_ms: r.latency_ms.as_ref().map(|l| l.median),
        predicted_ms: r.predicted.map(|p| p.latency_ms),
        cost: r.cost,
        tokens,
        ..measured(&r.memory, accuracy)
    }
}

fn of_generate(r: &GenerateReport) -> Measurements {
    let tg = r.speed.as_ref().and_then(|s| s.generation_tok_s).map(|m| m.mean);
    let accuracy = r.agreement.as_ref().map(|a| match a.teacher_forced_top1 {
        Some(t) => (t, "teacher_forced_top1"),
        None => (f64::from(u8::from(a.same_tokens)), "same_tokens_as_host"),
    });
    Measurements {
        latency_ms: tg.filter(|t| *t > 0.0).map(|t| 1e3 / t),
        tokens_per_s: tg,
        ..measured(&r.memory, accuracy)
    }
}

fn of_eval(r: &EvalReport, took: Duration) -> Measurements {
    let accuracy = match (r.scores.accuracy, r.scores.rouge_l) {
        (Some(a), _) => Some((a, "accuracy")),
        (None, Some(l)) => Some((l, "rouge_l")),
        (None, None) => None,
    };
    Measurements {
        latency_ms: (r.scores.items > 0).then(|| took.as_secs_f64() * 1e3 / r.scores.items as f64),
        ..measured(&r.memory, accuracy)
    }
}
