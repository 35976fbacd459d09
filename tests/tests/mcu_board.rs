//! The microcontroller firmware (runtime/firmware) on QEMU's Cortex-M4 board
//! (`qemu:mps2-an386`) standing for the nRF52840-DK: the micro-model in its
//! flash, outputs against the host reference, its heap cap refusing a model
//! too big for the profile's RAM, a fault reported as one.
//!
//! Skipped, with the reason printed, where the firmware toolchain
//! (rustc-web, cargo-web, rust-web-src, rustup's rust-lld) or
//! qemu-system-arm is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edgehil::report::{RunReport, Status};
use edgehil::run::{self, RunOptions};
use edgehil_hil::{HilError, McuConfig, McuMachine, QemuMcu, Session, Target, Timeouts};
use edgehil_onnx::fixtures::{self, Precision};
use edgehil_onnx::graph::write_model;
use edgehil_runtime::wire::{AgentError, EngineKind, OptLevel};

use crate::common::{binary, options, profile, scratch_dir};

const MACHINE: McuMachine = McuMachine::Mps2An386;

/// The firmware, built once (cargo's cache makes a rebuild seconds); `None`
/// with the reason printed where it cannot be built or run here.
fn firmware() -> Option<&'static Path> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if Command::new(QemuMcu::QEMU).arg("--version").output().is_err() {
            return Err(format!("{} is not installed (apt-get install qemu-system-arm)", QemuMcu::QEMU));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/firmware.sh");
        let out = Command::new(&script).output().map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
            // The script's exit code for a missing toolchain.
            Some(2) => Err(err.trim().to_string()),
            _ => panic!("scripts/firmware.sh failed:\n{err}"),
        }
    });
    match built {
        Ok(path) => Some(path),
        Err(why) => {
            eprintln!("skipped: the microcontroller firmware cannot run here: {why}");
            None
        }
    }
}

fn mcu_options(model: PathBuf, firmware: &Path, machine: McuMachine) -> RunOptions {
    let mut opts = options("mlp.onnx", EngineKind::Micro);
    opts.model = model;
    opts.board.target = Target::QemuMcu { machine };
    opts.board.agent = firmware.to_path_buf();
    opts
}

fn run_mcu(model: PathBuf, firmware: &Path) -> RunReport {
    run::run(&mcu_options(model, firmware, MACHINE), &profile("nrf52840-dk")).expect("host side of the run")
}

/// Outputs within the micro engine's tolerances (tests/micro.rs): fp32 runs
/// tract's arithmetic in another order, int8 has tract's f16-rounded scales against it.
fn assert_accurate(r: &RunReport, precision: Precision) {
    let (l2r, cosine) = match precision {
        Precision::F32 => (1e-5, 0.999_999),
        Precision::Int8 => (2e-3, 0.999_99),
    };
    assert_eq!(r.status, Status::Ok, "{}", r.table());
    assert!(!r.accuracy.is_empty());
    for a in &r.accuracy {
        assert!(a.l2r.unwrap() < l2r && a.cosine.unwrap() > cosine, "{}: {a:?}", r.model);
    }
}

#[test]
fn mlp_int8_fits_the_nrf52840_with_the_host_outputs() {
    let Some(fw) = firmware() else { return };
    let r = run_mcu(crate::common::fixture("mlp-int8.onnx"), fw);
    assert_accurate(&r, Precision::Int8);
    assert!(r.memory.fits);
    let board = r.board.as_ref().unwrap();
    assert_eq!(board.engines, ["micro"]);
    assert!(board.arch.contains("Cortex-M4F"), "{}", board.arch);
    let mcu = r.mcu.as_ref().unwrap();
    // The model in flash is what `edgehil micro` writes; the RAM peak holds the heap's.
    let compiled = edgehil_onnx::micro::compile_file(&crate::common::fixture("mlp-int8.onnx")).unwrap();
    assert_eq!(mcu.flash_model_bytes, compiled.bytes.len() as u64);
    assert!(mcu.flash_firmware_bytes > 0 && mcu.flash_firmware_bytes + mcu.flash_model_bytes < 1 << 20);
    let (heap, ram) = (r.memory.peak_heap.unwrap(), mcu.ram_peak_bytes.unwrap());
    assert!(heap >= compiled.report.arena_bytes && ram > heap && ram < 256 << 10, "heap {heap}, RAM {ram}");
    // QEMU's instruction count (-icount), read at the nRF52840's 64 MHz: the latency is the count's time.
    let counted = mcu.cycles_median.unwrap();
    let median_ms = r.latency_ms.as_ref().unwrap().median;
    assert!(counted > 10_000, "{counted} instructions for a 64-256-10 MLP");
    assert!((counted as f64 / 64e6 * 1e3 - median_ms).abs() < 1e-9, "{counted} vs {median_ms} ms");
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\S*/onnx-models/", "onnx-models/");
    settings.add_filter(r"(latency|predicted|load) .*", "$1 [timing]");
    settings.add_filter(r"firmware \d+\.\d+ KiB", "firmware [bytes]");
    settings.add_filter(r"flash      \d+\.\d+ KiB", "flash      [bytes]");
    settings.add_filter(r"(RSS|RAM        peak) \d+\.\d+ KiB", "$1 [bytes]");
    settings.add_filter(r"  +[0-9.e-]+ +[0-9.e-]+ +[0-9.e-]+ +1\.000000 +[0-9.e-]+", " [metrics]");
    settings.add_filter(r"median \d+ instructions (.*), \d+\.\d+ ms", "median [count] instructions $1, [timing] ms");
    settings.bind(|| insta::assert_snapshot!(r.table()));
}

#[test]
fn ds_cnn_fp32_and_int8_match_the_host_on_the_board() {
    let Some(fw) = firmware() else { return };
    for (file, precision) in [("ds-cnn.onnx", Precision::F32), ("ds-cnn-int8.onnx", Precision::Int8)] {
        let r = run_mcu(crate::common::fixture(file), fw);
        assert_accurate(&r, precision);
        assert_eq!(r.accuracy[0].top1, Some(1.0), "{}", r.table());
    }
}

#[test]
fn the_same_firmware_runs_on_the_cortex_m7_board_for_the_stm32h7() {
    let Some(fw) = firmware() else { return };
    let opts = mcu_options(crate::common::fixture("mlp-int8.onnx"), fw, McuMachine::Mps2An500);
    let r = run::run(&opts, &profile("stm32h747i-disco")).expect("host side of the run");
    assert_accurate(&r, Precision::Int8);
    // The firmware names the core from its CPUID register.
    assert!(r.board.as_ref().unwrap().arch.contains("Cortex-M7"), "{}", r.table());
    assert_eq!(r.mcu.as_ref().unwrap().machine, "QEMU mps2-an500 (Cortex-M7)");
}

#[test]
fn activations_past_the_nrf52840_ram_are_refused_by_the_firmware_allocator() {
    let Some(fw) = firmware() else { return };
    // A 256-row batch: its 256 × 256 hidden layer alone is 256 KiB of f32.
    let model = scratch_dir("mcu-board").join("mlp-wide.onnx");
    write_model(&fixtures::mlp_sized("mlp-wide", 256, &[64, 256, 10], Precision::Int8), &model).unwrap();
    let o = Command::new(binary("edgehil"))
        .args(["run", "--target", "qemu:mps2-an386", "--profile", "nrf52840-dk", "--model"])
        .arg(&model)
        .env("EDGEHIL_FIRMWARE", fw)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("does not fit: needed >= ") && out.contains(", cap 200.0 KiB (heap cap)"), "{out}");
    assert!(out.contains("board error during load: out of memory:"), "{out}");
}

#[test]
fn a_firmware_fault_is_reported_as_a_fault_not_a_timeout() {
    let Some(fw) = firmware() else { return };
    let config = McuConfig { machine: MACHINE, firmware: fw.to_path_buf(), model: None, cap: 200 << 10 };
    let timeouts = Timeouts { resend_after: Duration::from_secs(5), max_sends: 2, request: Duration::from_secs(30) };
    let mut session = Session::new(Box::new(QemuMcu::boot(&config).unwrap()), timeouts);
    assert_eq!(session.hello().unwrap().engines, [EngineKind::Micro]);
    let started = Instant::now();
    // The firmware's test-only path: it executes an undefined instruction.
    let e = session.load("test:undefined-instruction", EngineKind::Micro, OptLevel::All, 1).unwrap_err();
    match &e {
        HilError::Agent { error: AgentError::Engine(m), .. } => {
            assert!(m.starts_with("firmware fault: undefined instruction (CFSR 0x00010000"), "{m}")
        }
        other => panic!("expected the fault's error frame, got {other}"),
    }
    assert!(started.elapsed() < timeouts.resend_after, "answered before any resend: {:?}", started.elapsed());
}

#[test]
fn the_mcu_suite_runs_on_the_emulated_board_and_the_mcu_and_compare_pairs_them() {
    let Some(fw) = firmware() else { return };
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host-harness/suites/mcu.toml");
    let dir = scratch_dir("mcu-suite");
    let out = dir.join("out");
    let edgehil = |args: &[&std::ffi::OsStr]| {
        let o = Command::new(binary("edgehil")).args(args).env("EDGEHIL_FIRMWARE", fw).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        (o.status.code(), said)
    };
    let (code, said) = edgehil(&[
        "suite".as_ref(),
        "run".as_ref(),
        suite.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--jobs".as_ref(),
        "2".as_ref(),
    ]);
    // Some cases do not fit (the Linux agent's tract in the nRF52840's RAM): exit 3, every case run.
    assert_eq!(code, Some(3), "{said}");
    let records = crate::suite::journal(&out);
    assert_eq!(records.len(), 10, "{said}");
    for r in records.iter().filter(|r| r.case.target != Target::Emulated) {
        // Every MCU case ran engine micro from flash, matched the host and fit.
        assert_eq!((r.case.engine, r.status), (EngineKind::Micro, Status::Ok), "{}: {:?}", r.case.id(), r.reason);
        assert_eq!(r.measurements.accuracy, Some(1.0), "{}: top-1 against the host", r.case.id());
    }
    let pairs = dir.join("pairs.json");
    let journal = out.join("journal.jsonl");
    let (code, said) = edgehil(&["compare".as_ref(), journal.as_os_str(), "--json".as_ref(), pairs.as_os_str()]);
    assert_eq!(code, Some(0), "{said}");
    let pairing: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pairs).unwrap()).unwrap();
    assert_eq!(pairing["pairs"].as_array().unwrap().len(), 5, "{pairing:#}");
    assert_eq!(pairing["pairs"][0]["b_timing"], "emulated-instruction");
    insta::assert_snapshot!(said);
}
