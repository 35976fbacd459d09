//! The HIL suite (tests/hil/suite.toml) on the board EDGEHIL_HIL_TARGET
//! names (default `emu`), with EDGEHIL_HIL_ENGINE (default tract) and
//! EDGEHIL_HIL_PROFILE (default jetson-orin-nano). What must not depend on
//! the board is snapshot-tested: each case's status, its accuracy against the
//! host reference, a generation's greedy tokens and text. Timings and memory
//! vary by board and are left out; `cargo insta review` shows any change.
//!
//! For a real board, the agent reads model paths on the board: EDGEHIL_HIL_OUT
//! must be a folder the board sees at the same path (NFS, sshfs).

use std::path::{Path, PathBuf};
use std::process::Command;

use edgehil::report::Status;
use edgehil::suite::record::{self, Record, WorkloadReport};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// target/debug, where `cargo build --workspace --bins` put edgehil and its agent.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Runs the HIL suite once per test binary run and returns its records.
fn records() -> &'static [Record] {
    static RECORDS: std::sync::OnceLock<Vec<Record>> = std::sync::OnceLock::new();
    RECORDS.get_or_init(|| {
        let edgehil = bin_dir().join("edgehil");
        assert!(edgehil.is_file(), "{} is missing: run `cargo build --workspace --bins` first", edgehil.display());
        let out = std::env::var_os("EDGEHIL_HIL_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| bin_dir().join("edgehil-hil").join(std::process::id().to_string()));
        let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("suite.toml");
        let o = Command::new(&edgehil)
            .arg("suite")
            .arg("run")
            .arg(&suite)
            .arg("--out")
            .arg(&out)
            .args(["--target", &env_or("EDGEHIL_HIL_TARGET", "emu")])
            .args(["--engine", &env_or("EDGEHIL_HIL_ENGINE", "tract")])
            .args(["--profile", &env_or("EDGEHIL_HIL_PROFILE", "jetson-orin-nano")])
            .output()
            .unwrap();
        let journal = out.join("journal.jsonl");
        assert!(
            journal.is_file(),
            "the suite did not start: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        record::read(&journal).unwrap()
    })
}

/// Model, compression, engine and workload: what the outputs depend on (not
/// the board, target or profile), so one snapshot holds for every board.
fn name(r: &Record) -> String {
    let c = &r.case;
    format!("{}__{}__{}__{}", c.model, c.compression, c.engine.name(), c.workload)
}

/// The part of a record that is the same on every board.
fn board_independent(r: &Record) -> serde_json::Value {
    let round = |v: Option<f64>| v.map(|v| (v * 1e4).round() / 1e4);
    let generated = match &r.report {
        Some(WorkloadReport::Generate(g)) => Some(g),
        _ => None,
    };
    serde_json::json!({
        "case": name(r),
        "status": r.status,
        "reason": r.reason,
        "accuracy": round(r.measurements.accuracy),
        "accuracy_metric": r.measurements.accuracy_metric,
        "tokens": generated.map(|g| &g.tokens),
        "text": generated.map(|g| &g.text),
    })
}

fn check(workload: &str) {
    let cases: Vec<&Record> = records().iter().filter(|r| r.case.workload == workload).collect();
    assert!(!cases.is_empty(), "the suite has {workload} cases");
    for r in cases {
        insta::assert_json_snapshot!(name(r), board_independent(r));
        assert_eq!(r.status, Status::Ok, "{r:#?}");
        let m = &r.measurements;
        assert!(m.latency_ms.is_some_and(|l| l > 0.0), "timed: {r:#?}");
        assert!(m.peak().zip(m.budget_bytes).is_some_and(|(p, b)| p <= b), "within the budget: {r:#?}");
    }
}

#[test]
fn run_outputs_match_the_snapshots() {
    check("run");
}

#[test]
fn generation_outputs_match_the_snapshots() {
    check("generate");
}
