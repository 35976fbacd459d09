//! What the end-to-end tests share: where the binaries, fixtures and the
//! ONNX Runtime library are, and a run on the emulated board.
#![allow(dead_code)] // each test file uses its own part of this module

use std::path::PathBuf;
use std::time::Duration;

use edgehil::profile::{Profile, Profiles};
use edgehil::report::RunReport;
use edgehil::run::{self, RunOptions};
use edgehil_hil::{Faults, Target, Timeouts};
use edgehil_runtime::wire::{EngineKind, OptLevel, OutputMode};

/// target/debug (or the profile folder the tests were built in).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn fixture(name: &str) -> PathBuf {
    edgehil_onnx::fixtures::dir().join(name)
}

pub fn ort_library() -> PathBuf {
    run::find_ort_library(None).expect("ONNX Runtime: scripts/test.sh installs it with pip")
}

pub fn profile(name: &str) -> Profile {
    Profiles::builtin().unwrap().get(name).unwrap().clone()
}

pub fn options(model: &str, engine: EngineKind) -> RunOptions {
    RunOptions {
        model: fixture(model),
        reference: None,
        target: Target::Emulated,
        engine,
        opt_level: OptLevel::Basic,
        runs: 5,
        warmup: 1,
        inputs: None,
        seed: 1,
        sequence: 16,
        outputs: OutputMode::Full,
        cap: None,
        agent: binary("edgehil-agent"),
        ort_library: (engine == EngineKind::Ort).then(ort_library),
        timeouts: Timeouts {
            resend_after: Duration::from_millis(1500),
            max_sends: 3,
            request: Duration::from_secs(120),
        },
        faults: Faults::default(),
        agent_args: Vec::new(),
    }
}

pub fn run_on(opts: &RunOptions, profile_name: &str) -> RunReport {
    run::run(opts, &profile(profile_name)).expect("host side of the run")
}

/// A fresh folder under target/ for what a test writes.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = bin_dir().join("edgehil-test-scratch").join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
