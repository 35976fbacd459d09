//! Reading measured runs: a suite journal or `edgehil run --json` output,
//! filtered to one profile, engine and target.

use std::path::{Path, PathBuf};

use edgehil_hil::{Target, Timing};
use edgehil_runtime::wire::EngineKind;

use crate::estimate::{self, GraphCost, Kernels};
use crate::report::{RunReport, Status};
use crate::suite::record::{self, WorkloadReport};

use super::CalibrateError;

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
    pub target: Option<&'a Target>,
    /// Use runs on emulated-instruction targets (QEMU under TCG) as if they were device timings.
    pub emulated_timings_as_real: bool,
}

/// The usable cases of a measurements file, and why the others were left out.
#[derive(Debug, Clone)]
pub struct Measured {
    pub path: PathBuf,
    pub cases: Vec<Case>,
    /// The cases' engine and target (tract on emu if there are none).
    pub engine: EngineKind,
    pub target: Target,
    /// (reason, count).
    pub skipped: Vec<(String, usize)>,
}

/// Reads a suite journal (JSON lines of records) or the JSON array of run
/// reports `edgehil run --json` writes, and keeps the cases `filter` selects.
pub fn read(path: &Path, filter: &Filter) -> Result<Measured, CalibrateError> {
    let text = std::fs::read_to_string(path).map_err(|cause| CalibrateError::Read { path: path.into(), cause })?;
    // Each run with its label; a journal's other records (by their status) are only counted as skipped.
    let mut runs: Vec<(String, Result<RunReport, Status>)> = Vec::new();
    if text.trim_start().starts_with('[') {
        let reports: Vec<RunReport> = serde_json::from_str(&text).map_err(|e| CalibrateError::Parse {
            path: path.into(),
            line: e.line(),
            message: e.to_string(),
        })?;
        runs.extend(reports.into_iter().map(|r| (r.model.clone(), Ok(r))));
    } else {
        for r in record::read(path)? {
            let label = format!("{} {} {}", r.case.model, r.case.compression, r.case.workload);
            let report = match r.report {
                Some(WorkloadReport::Run(report)) => Ok(report),
                _ => Err(r.status),
            };
            runs.push((label, report));
        }
    }
    select(path, runs, filter)
}

fn select(
    path: &Path,
    runs: Vec<(String, Result<RunReport, Status>)>,
    filter: &Filter,
) -> Result<Measured, CalibrateError> {
    let mut skipped: Vec<(String, usize)> = Vec::new();
    let mut skip = |why: String| match skipped.iter_mut().find(|(w, _)| *w == why) {
        Some((_, n)) => *n += 1,
        None => skipped.push((why, 1)),
    };
    let mut kept: Vec<(EngineKind, Target, Case)> = Vec::new();
    for (label, r) in runs {
        let r = match r {
            Ok(r) => r,
            Err(Status::Ok) => {
                skip("not runs".into());
                continue;
            }
            Err(status) => {
                skip(format!("with status {}", status.name()));
                continue;
            }
        };
        let ms = r.latency_ms.as_ref().map(|l| l.median);
        match (r.status, ms, r.cost) {
            (Status::Ok, Some(ms), Some(cost)) if ms > 0.0 && ms.is_finite() => {
                if r.profile != filter.profile {
                    skip("of other profiles".into());
                } else if filter.engine.is_some_and(|f| f != r.engine) {
                    skip("of other engines".into());
                } else if filter.target.is_some_and(|t| *t != r.target) {
                    skip("on other targets".into());
                } else if r.target.timing() == Timing::EmulatedInstructions && !filter.emulated_timings_as_real {
                    skip(
                        "with emulated-instruction timings (QEMU under TCG; --emulated-timings-as-real uses them)"
                            .into(),
                    );
                } else {
                    let tokens = r.tokens.unwrap_or(0);
                    let kernels = estimate::kernels(&cost, r.engine, r.opt_level, tokens);
                    kept.push((r.engine, r.target, Case { label, cost, tokens, kernels, measured_ms: ms }));
                }
            }
            (Status::Ok, ..) => skip("without a latency or a cost".into()),
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
    let targets = distinct(kept.iter().map(|(_, t, _)| t.to_string()).collect());
    for (what, found) in [("engine", &engines), ("target", &targets)] {
        if found.len() > 1 {
            return Err(CalibrateError::Mixed { path: path.into(), what, found: found.join(", ") });
        }
    }
    let (engine, target) = kept.first().map_or((EngineKind::Tract, Target::Emulated), |(e, t, _)| (*e, t.clone()));
    Ok(Measured { path: path.into(), cases: kept.into_iter().map(|(_, _, c)| c).collect(), engine, target, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edgehil-calibrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn filter(profile: &str) -> Filter<'_> {
        Filter { profile, engine: None, target: None, emulated_timings_as_real: false }
    }

    /// What every run report has, the figures calibration does not read.
    const MEMORY_AND_LINK: &str = r#""memory": {"cap_bytes": 1000, "limit": "heap cap", "measured_by": "peak heap", "fits": true}, "link": {"frames_sent": 0, "frames_received": 0, "bad_frames_host": 0, "resends": 0}"#;

    fn run_report(profile: &str, engine: &str, target: &str, status: &str, median: f64, tokens: Option<u64>) -> String {
        let tokens = tokens.map_or(String::new(), |t| format!(r#", "tokens": {t}"#));
        format!(
            r#"{{"model": "m.onnx", "reference": "m.onnx", "profile": "{profile}", "target": "{target}", "engine": "{engine}", "opt_level": "all", "accuracy": [],
              "status": "{status}", "latency_ms": {{"runs": 1, "warmup": 0, "min": 0, "median": {median}, "p90": {median}, "max": {median}, "mean": {median}}}, {MEMORY_AND_LINK},
              "cost": {{"flops": 1e9, "weight_bytes": 1000, "io_bytes": 10, "int8_weights": true}}{tokens}}}"#
        )
    }

    #[test]
    fn qemu_timings_are_left_out_unless_told_they_stand_for_the_device() {
        let reports = [run_report("pi", "tract", "qemu:aarch64", "ok", 40.0, None)];
        let path = write("qemu-runs.json", &format!("[{}]", reports.join(",\n")));
        let m = read(&path, &filter("pi")).unwrap();
        assert!(m.cases.is_empty());
        assert!(m.summary().contains("1 with emulated-instruction timings (QEMU under TCG"), "{}", m.summary());
        let told = read(&path, &Filter { emulated_timings_as_real: true, ..filter("pi") }).unwrap();
        assert_eq!(told.cases.len(), 1);
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
        assert_eq!((m.engine, m.target.to_string().as_str()), (EngineKind::Ort, "emu"));
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
}
