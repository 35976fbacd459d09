//! What goes wrong on a board, provoked for real: a cap too small, frames
//! corrupted on the link, an agent of another protocol version, an agent
//! killed or frozen mid-run.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use edgehil::report::Status;
use edgehil_hil::testing::{Faults, FaultyLink};
use edgehil_hil::{HilError, Session, Timeouts};
use edgehil_onnx::fixtures::Precision;
use edgehil_runtime::engine::{self, LoadOptions};
use edgehil_runtime::wire::{EngineKind, MemLimit, OptLevel, OutputMode, PROTOCOL_VERSION};

#[test]
fn a_cap_below_the_model_gives_does_not_fit_with_the_figures() {
    // The nRF52840's 200 KiB cannot hold the transformer block.
    let r = run_on(&options("block.onnx", EngineKind::Tract), "nrf52840-dk");
    assert_eq!(r.status, Status::DoesNotFit, "{:?}", r.error);
    assert_eq!(r.memory.limit, MemLimit::Heap);
    assert_eq!(r.memory.cap_bytes, 200 * 1024);
    let needed = r.memory.needed_at_least.expect("the refusal says how much was needed");
    assert!(needed > 200 * 1024, "needed {needed}");
    assert!(r.table().contains("does not fit: needed >= "), "{}", r.table());
    assert!(r.latency_ms.is_none() && r.accuracy.is_empty());
}

#[test]
fn onnx_runtime_is_held_by_the_process_data_limit() {
    // 48 MiB of weights: past what a 4 MiB cap leaves, thread stacks included.
    let model = edgehil_onnx::fixtures::mlp_sized("wide", 1, &[2048, 2048, 2048, 2048, 10], Precision::F32);
    let dir = scratch_dir("ort-oom");
    let path = dir.join("wide.onnx");
    edgehil_onnx::graph::write_model(&model, &path).unwrap();
    let mut opts = options("mlp.onnx", EngineKind::Ort);
    opts.model = path;
    opts.board.cap = Some(4 * 1024 * 1024);
    let r = run_on(&opts, "jetson-orin-nano");
    assert_eq!(r.status, Status::DoesNotFit, "{:?} {}", r.error, r.table());
    assert_eq!(r.memory.limit, MemLimit::ProcessData, "{}", r.table());
    assert!(r.error.as_deref().unwrap_or("").contains("out of memory"), "{:?}", r.error);
}

#[test]
fn corrupted_frames_both_ways_are_retried_and_the_result_is_still_right() {
    let faults = Faults::default();
    let link = FaultyLink::new(emulated_board(), faults.clone());
    let timeouts =
        Timeouts { resend_after: Duration::from_millis(500), max_sends: 3, request: Duration::from_secs(60) };
    let mut s = Session::new(Box::new(link), timeouts);
    s.hello().unwrap();
    let model = fixture("block.onnx");
    // The load request, and a frame inside the infer answer.
    faults.corrupt_sent(faults.sent());
    let loaded = s.load(&model.display().to_string(), EngineKind::Tract, OptLevel::All, 1).unwrap();
    let inputs = edgehil::inputs::seeded(&loaded.inputs, &edgehil::inputs::Seeded::new(1)).unwrap();
    s.set_inputs(&inputs).unwrap();
    faults.corrupt_received(faults.received() + 2);
    let got = s.infer(5, 1, OutputMode::Full, |_, _| {}).unwrap();
    assert_eq!(got.latencies_ns.len(), 5);
    let opts = LoadOptions { engine: EngineKind::Tract, opt_level: OptLevel::All, threads: 1, ort_library: None };
    let mut reference = engine::load(&model, &opts).unwrap();
    reference.set_inputs(&inputs).unwrap();
    reference.run().unwrap();
    let want = reference.take_outputs().unwrap();
    assert_eq!(got.outputs.len(), want.len());
    for (board, host) in got.outputs.iter().zip(&want) {
        let a = edgehil::accuracy::compare(board, host);
        assert!(a.max_abs.unwrap() <= 1e-5, "{a:?}");
    }
    assert_eq!(s.stats.bad_frames, 1);
    assert_eq!(s.stats().unwrap().bad_frames, 1);
    assert!(s.stats.resends >= 2, "{:?}", s.stats);
}

#[test]
fn a_version_mismatch_names_both_versions() {
    let mut opts = options("mlp.onnx", EngineKind::Tract);
    opts.board.agent_args = vec!["--protocol-version".into(), "99".into()];
    let r = run_on(&opts, "jetson-orin-nano");
    assert_eq!(r.status, Status::Failed);
    let e = r.error.unwrap();
    assert!(
        e.contains("agent speaks version 99") && e.contains(&format!("host speaks version {PROTOCOL_VERSION}")),
        "{e}"
    );
}

fn loaded_session(resend_after: Duration) -> (Session, u32) {
    let (mut s, pid) = emulated_session(Timeouts { resend_after, max_sends: 3, request: Duration::from_secs(60) });
    let model = fixture("block.onnx");
    let loaded = s.load(&model.display().to_string(), EngineKind::Tract, OptLevel::All, 1).unwrap();
    let inputs = edgehil::inputs::seeded(&loaded.inputs, &edgehil::inputs::Seeded::new(1)).unwrap();
    s.set_inputs(&inputs).unwrap();
    (s, pid)
}

fn signal_after(pid: u32, signal: i32, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        // SAFETY: kill(2) on the agent child this test started.
        unsafe { libc::kill(pid as i32, signal) };
    });
}

#[test]
fn an_agent_killed_mid_run_is_a_clear_error_within_the_timeout() {
    let (mut s, pid) = loaded_session(Duration::from_secs(2));
    signal_after(pid, libc::SIGKILL, Duration::from_millis(300));
    let started = Instant::now();
    let mut runs_seen = 0;
    let e = s.infer(1_000_000, 0, OutputMode::Digest, |_, _| runs_seen += 1).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(e, HilError::AgentExited { .. }), "{e}");
    assert_eq!(e.to_string(), "agent exited during infer: killed by signal 9");
    assert!(runs_seen > 0, "runs before the kill were streamed");
}

#[test]
fn a_frozen_agent_times_out_instead_of_hanging_the_host() {
    let (mut s, pid) = loaded_session(Duration::from_millis(500));
    signal_after(pid, libc::SIGSTOP, Duration::from_millis(300));
    let started = Instant::now();
    let e = s.infer(1_000_000, 0, OutputMode::Digest, |_, _| {}).unwrap_err();
    let took = started.elapsed();
    // SAFETY: as above; the board's drop then kills it.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert!(matches!(e, HilError::Timeout { command: "infer", sends: 3, .. }), "{e}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}
