//! Reading measured runs: a suite journal or `edgehil run --json` output,
//! filtered to one profile, engine and target.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use edgehil_runtime::wire::{EngineKind, OptLevel};

use crate::estimate::{self, GraphCost, Kernels};
use crate::report::Status;
use crate::suite::record;

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
}
