//! The session's recovery logic against the agent's serve loop on a thread,
//! over an in-memory link with chosen frames lost or repeated: no pty, no
//! agent binary, so each case is exact and quick.

use crate::common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::fixture;
use edgehil_hil::testing::{Faults, FaultyLink, MemoryLink};
use edgehil_hil::{HilError, Session, Timeouts};
use edgehil_runtime::agent::{self, AgentConfig};
use edgehil_runtime::cap::CappedAlloc;
use edgehil_runtime::sys::MapLarge;
use edgehil_runtime::wire::{EngineKind, OptLevel, OutputMode, PROTOCOL_VERSION};

/// The agent's allocator accounting; not this process's allocator, so it counts nothing and caps nothing.
static ALLOC: CappedAlloc<MapLarge> = CappedAlloc::new(MapLarge);

/// A session to an agent serving on a thread, through a link with `faults`.
fn session(faults: &Faults, resend_after: Duration) -> (Session, JoinHandle<std::io::Result<()>>) {
    let (host, reader, writer) = MemoryLink::pair();
    let config = AgentConfig { threads: 1, ort_library: None, protocol_version: PROTOCOL_VERSION, storage: None };
    let agent = std::thread::spawn(move || agent::serve(reader, Box::new(writer), -1, &ALLOC, config));
    let timeouts = Timeouts { resend_after, max_sends: 3, request: Duration::from_secs(30) };
    let mut s = Session::new(Box::new(FaultyLink::new(host, faults.clone())), timeouts);
    s.hello().unwrap();
    (s, agent)
}

/// Ends the agent's serve loop and checks it ended cleanly.
fn shut_down(mut s: Session, agent: JoinHandle<std::io::Result<()>>) {
    s.shutdown().unwrap();
    agent.join().unwrap().unwrap();
}

#[test]
fn a_lost_request_is_sent_again_after_silence() {
    let faults = Faults::default();
    let (mut s, agent) = session(&faults, Duration::from_millis(200));
    faults.drop_sent(faults.sent());
    s.set_prompt(&[1, 2, 3]).unwrap();
    assert_eq!(s.stats.resends, 1);
    let stats = s.stats().unwrap();
    assert_eq!((stats.requests, stats.replays), (3, 0), "the lost request never reached the agent");
    shut_down(s, agent);
}

#[test]
fn a_lost_answer_is_replayed_not_run_again() {
    let faults = Faults::default();
    let (mut s, agent) = session(&faults, Duration::from_millis(200));
    faults.drop_received(faults.received());
    s.set_prompt(&[1, 2, 3]).unwrap();
    assert_eq!(s.stats.resends, 1);
    let stats = s.stats().unwrap();
    assert_eq!((stats.requests, stats.replays), (3, 1), "hello, set-prompt and stats ran once each");
    shut_down(s, agent);
}

#[test]
fn a_repeated_request_id_is_answered_by_replay() {
    let faults = Faults::default();
    let (mut s, agent) = session(&faults, Duration::from_secs(5));
    faults.duplicate_sent(faults.sent());
    s.set_prompt(&[1, 2, 3]).unwrap();
    let stats = s.stats().unwrap();
    assert_eq!((stats.requests, stats.replays), (3, 1), "the second copy was replayed, not run");
    assert_eq!(s.stats.resends, 0);
    shut_down(s, agent);
}

#[test]
fn a_late_frame_of_an_earlier_request_is_ignored() {
    let faults = Faults::default();
    let (mut s, agent) = session(&faults, Duration::from_millis(300));
    // The set-prompt answer comes 450 ms late; its replay answers the resend at 300-400 ms.
    faults.delay_received(faults.received(), Duration::from_millis(450));
    s.set_prompt(&[1, 2, 3]).unwrap();
    // The stats answer is lost, so the late frame arrives while stats waits for its resend.
    faults.drop_received(faults.received());
    let stats = s.stats().unwrap();
    // The stats answer replayed is the one recorded when stats ran.
    assert_eq!((stats.requests, stats.replays), (3, 1));
    assert_eq!(s.stats.resends, 2);
    shut_down(s, agent);
}

#[test]
fn a_gap_in_an_answer_is_asked_for_at_once() {
    let faults = Faults::default();
    // Silence would resend only after 5 s: a quick answer shows the gap was seen.
    let (mut s, agent) = session(&faults, Duration::from_secs(5));
    let model = fixture("mlp.onnx").display().to_string();
    let loaded = s.load(&model, EngineKind::Tract, OptLevel::All, 1).unwrap();
    let inputs = edgehil::inputs::seeded(&loaded.inputs, &edgehil::inputs::Seeded::new(1)).unwrap();
    s.set_inputs(&inputs).unwrap();
    // The infer answer is Run × 5, Output, InferDone: lose the third run.
    faults.drop_received(faults.received() + 2);
    let started = Instant::now();
    let mut runs = Vec::new();
    let got = s.infer(5, 0, OutputMode::Digest, |index, _| runs.push(index)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(runs, [0, 1, 2, 3, 4], "every run, in order, once");
    assert_eq!(got.latencies_ns.len(), 5);
    assert_eq!(s.stats.resends, 1);
    let stats = s.stats().unwrap();
    assert_eq!(stats.replays, 1, "the missing run came from the record");
    shut_down(s, agent);
}

#[test]
fn a_silent_board_is_unresponsive_within_the_timeout() {
    // The board's end is held but nothing serves it.
    let (host, _reader, _writer) = MemoryLink::pair();
    let timeouts =
        Timeouts { resend_after: Duration::from_millis(100), max_sends: 3, request: Duration::from_secs(30) };
    let mut s = Session::new(Box::new(host), timeouts);
    let started = Instant::now();
    let e = s.stats().unwrap_err();
    // Three sends, 100 + 150 + 225 ms of silence after them, read in steps of 100 ms.
    assert!(matches!(e, HilError::Timeout { command: "stats", sends: 3, .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}
