//! Running a suite: exports first, then one worker process per case.
//!
//! A case runs in its own process group (`edgehil suite worker`), so a case
//! that overruns its timeout is killed with its agent and nothing else, and
//! a crash on the host side fails one case, not the night. Each record is
//! appended to the journal and synced as its case ends.
//!
//! With `jobs` above 1, cases on distinct boards (one board per target: a
//! labgrid place, a serial port, the emulated board) run at once, each board
//! one case at a time, taken in the suite's order. Before its first case a
//! board that outlives a case (a serial port, a labgrid place) is checked as
//! LAVA checks a device: its link opened and a hello answered in
//! [`HEALTH_CHECK`]'s time. A board that fails is marked unhealthy and its
//! cases are skipped with the reason; the suite goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgehil_hil::{process, ExitCause, Target, Timeouts};
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
    /// Boards that run cases at once (at least 1).
    pub jobs: usize,
}

/// A board's health check: its link opened and a hello answered within
/// `request` (sends at 0, 1 and 2.5 s, then 2.25 s of silence).
pub const HEALTH_CHECK: Timeouts =
    Timeouts { resend_after: Duration::from_secs(1), max_sends: 3, request: Duration::from_secs(10) };

/// What the caller shows as the suite goes.
pub enum Progress<'a> {
    /// `total` cases, `done` of them already in the journal.
    Start {
        total: usize,
        done: usize,
    },
    Exporting(&'a str),
    Case(&'a Case),
    /// A board failed its health check: its cases are skipped.
    Unhealthy {
        target: &'a Target,
        reason: &'a str,
    },
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
) -> BTreeMap<PathBuf, String> {
    let mut failures = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for case in pending {
        let Some(model) = suite.model(&case.model).filter(|m| m.unavailable.is_none()) else { continue };
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

/// Runs every case not yet in the journal, `opts.jobs` boards at a time;
/// returns the whole journal in the suite's case order.
pub fn run_suite(
    suite: &Suite,
    profiles: &Profiles,
    opts: &RunSuiteOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Vec<Record>, SuiteRunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| SuiteRunError::Io { path, cause }
    };
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let journal = journal_path(&opts.out);
    let done: BTreeSet<String> = match (journal.exists(), opts.resume) {
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

    let schedule = Mutex::new(Schedule { queue: pending, busy: BTreeSet::new(), health: BTreeMap::new() });
    let idle = Condvar::new();
    // One lock for the journal and the caller: a record is appended whole and shown once.
    let journal_lock = Mutex::new(progress);
    let run_one = |case: &Case, health: &mut Option<Result<(), String>>| -> Result<(), SuiteRunError> {
        let started = now_unix();
        let clock = Instant::now();
        let model = suite.model(&case.model).expect("cases come from the suite's models");
        let needed = model_path(&opts.out, model, &case.compression);
        let record = if let Some(why) = &model.unavailable {
            Record { status: Status::Skipped, ..failed(suite, case, why.clone(), started, clock.elapsed()) }
        } else if let Some(e) = export_failures.get(&needed) {
            failed(suite, case, e.clone(), started, clock.elapsed())
        } else {
            let checked = match outlives_a_case(&case.target) {
                true => health
                    .get_or_insert_with(|| {
                        let outcome = health_check(suite, profiles, case);
                        if let Err(reason) = &outcome {
                            let mut say = journal_lock.lock().unwrap_or_else(PoisonError::into_inner);
                            say(Progress::Unhealthy { target: &case.target, reason });
                        }
                        outcome
                    })
                    .clone(),
                false => Ok(()),
            };
            match checked {
                Ok(()) => {
                    journal_lock.lock().unwrap_or_else(PoisonError::into_inner)(Progress::Case(case));
                    run_worker(suite, opts, case, now_unix())
                }
                Err(reason) => Record {
                    status: Status::Skipped,
                    ..failed(
                        suite,
                        case,
                        format!("board {} failed its health check: {reason}", case.target),
                        started,
                        clock.elapsed(),
                    )
                },
            }
        };
        let mut say = journal_lock.lock().unwrap_or_else(PoisonError::into_inner);
        record::append(&journal, &record)?;
        say(Progress::Done(&record));
        Ok(())
    };
    let jobs = opts.jobs.max(1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> Result<(), SuiteRunError> {
                    while let Some((case, mut health)) = Schedule::take(&schedule, &idle) {
                        let outcome = run_one(case, &mut health);
                        let mut s = schedule.lock().unwrap_or_else(PoisonError::into_inner);
                        s.busy.remove(&case.target.to_string());
                        if let Some(h) = health {
                            s.health.insert(case.target.to_string(), h);
                        }
                        if outcome.is_err() {
                            // The journal cannot be written: start nothing more.
                            s.queue.clear();
                        }
                        drop(s);
                        idle.notify_all();
                        outcome?;
                    }
                    Ok(())
                })
            })
            .collect();
        threads.into_iter().try_for_each(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })?;

    let order: BTreeMap<String, usize> = cases.iter().enumerate().map(|(i, c)| (c.id(), i)).collect();
    let mut records = record::read(&journal)?;
    records.sort_by_key(|r| order.get(&r.case.id()).copied().unwrap_or(usize::MAX));
    Ok(records)
}

/// Which case runs next on which board.
struct Schedule<'a> {
    /// Pending cases in the suite's order.
    queue: Vec<&'a Case>,
    /// Boards (targets as written) running a case or their health check now.
    busy: BTreeSet<String>,
    /// Each checked board's health: the reason if it failed.
    health: BTreeMap<String, Result<(), String>>,
}

impl<'a> Schedule<'a> {
    /// The first pending case whose board is idle, with its board's health
    /// if checked; waits while every pending case's board is busy, `None`
    /// once nothing is pending. The board is busy until the taker frees it.
    fn take(schedule: &Mutex<Self>, idle: &Condvar) -> Option<(&'a Case, Option<Result<(), String>>)> {
        let mut s = schedule.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if s.queue.is_empty() {
                return None;
            }
            if let Some(i) = s.queue.iter().position(|c| !s.busy.contains(&c.target.to_string())) {
                let case = s.queue.remove(i);
                let board = case.target.to_string();
                let health = s.health.get(&board).cloned();
                s.busy.insert(board);
                return Some((case, health));
            }
            s = idle.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Whether a board is there between cases and so gets a health check: the
/// emulated board is started anew for each case, whose own run checks it.
fn outlives_a_case(target: &Target) -> bool {
    matches!(target, Target::Serial { .. } | Target::Labgrid { .. })
}

/// Opens `case`'s board and says hello, as its cases would; the reason if it does not answer.
fn health_check(suite: &Suite, profiles: &Profiles, case: &Case) -> Result<(), String> {
    let profile = profiles.get(&case.profile).map_err(|e| e.to_string())?;
    // A hello needs no engine: tract, so no engine library is looked for.
    let board = BoardOptions { timeouts: HEALTH_CHECK, ..board(suite, &case.target, EngineKind::Tract)? };
    run::health_check(&board, profile).map(|_| ()).map_err(|e| e.to_string())
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
    let limit = Duration::from_secs_f64(suite.timeout_s);
    let finished = process::wait_until(&mut child, clock + limit, |worker| {
        // SAFETY: the worker leads its own process group; this signals it and its agent only.
        unsafe { libc::kill(-(worker.id() as i32), libc::SIGKILL) };
    });
    let (status, out, err) = match finished {
        Ok(f) => (f.status.ok_or_else(|| timed_out(suite, case)), f.stdout, f.stderr),
        Err(e) => (Err(format!("waiting for the worker: {e}")), String::new(), String::new()),
    };
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

/// Why a case killed at its timeout ended; a labgrid place its killed worker
/// held is released here, or it would stay acquired.
fn timed_out(suite: &Suite, case: &Case) -> String {
    let place = match &case.target {
        Target::Labgrid { place } => match edgehil_hil::labgrid::release(place) {
            Ok(()) => format!("; labgrid place {place} released"),
            Err(e) => format!("; {e}"),
        },
        _ => String::new(),
    };
    format!(
        "timed out after {:.0} s (the case's timeout); the worker and its board were killed{place}",
        suite.timeout_s
    )
}

/// The board options of a case on `target` with `engine`.
fn board(suite: &Suite, target: &Target, engine: EngineKind) -> Result<BoardOptions, String> {
    let target = target.clone();
    let agent = match &suite.agent {
        Some(a) => a.clone(),
        None => run::agent_for(&target).map_err(|e| e.to_string())?,
    };
    let qemu_image = run::board_image(&target, &agent).map_err(|e| e.to_string())?;
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
        qemu_image,
        upload: run::Upload::Auto,
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
    let board = board(suite, &case.target, case.engine)?;
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
                // Scored against the uncompressed export, as the teacher-forced top-1 is.
                text: w.text.clone(),
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
                history_fraction: w.history_fraction,
                chat: w.chat,
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
    let accuracy = r.agreement.as_ref().map(|a| match (&a.text, a.teacher_forced_top1) {
        // A fixed text is a steadier measure than the few tokens generated.
        (Some(t), _) => (t.top1, "text_teacher_forced_top1"),
        (None, Some(t)) => (t, "teacher_forced_top1"),
        (None, None) => (f64::from(u8::from(a.same_tokens)), "same_tokens_as_host"),
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
