//! A link that flips, drops and duplicates bytes in both directions: a
//! [`RelayedBoard`] whose relay damages bytes with a seeded generator, so a
//! run is repeatable. The session must recover, and never hand back a wrong
//! result.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use edgehil_hil::{OutputData, SerialLink, Session, Timeouts};
use edgehil_runtime::wire::{EngineKind, OptLevel, OutputMode};

/// The agent behind a noisy relay, and the host's session to it.
struct NoisyBoard {
    session: Session,
    relayed: RelayedBoard,
}

impl NoisyBoard {
    fn open(rate: f64, seed: u64) -> Self {
        let relayed = RelayedBoard::start(&["--cap", "0", "--threads", "1"], seed);
        let link = SerialLink::open(&relayed.port, 115_200).unwrap();
        // The MLP answers within a millisecond, so 200 ms of silence means a
        // lost frame; the default 1.5 s would make 200 runs take minutes.
        let timeouts = Timeouts { resend_after: Duration::from_millis(200), ..Timeouts::default() };
        let session = Session::new(Box::new(link), timeouts);
        let board = NoisyBoard { session, relayed };
        board.set_noise(rate);
        board
    }

    fn set_noise(&self, rate: f64) {
        self.relayed.noise.store((rate * u64::MAX as f64) as u64, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Tally {
    completed: u32,
    failed: u32,
    wrong: u32,
}

/// One inference on the staged inputs, compared with the clean answer.
fn one_run(s: &mut Session, expected: &[OutputData], tally: &mut Tally) {
    match s.infer(2, 1, OutputMode::Full, |_, _| {}) {
        Ok(r) if r.outputs == expected && r.latencies_ns.len() == 2 => tally.completed += 1,
        Ok(r) => {
            println!("WRONG: {:?} ({} latencies)", r.outputs, r.latencies_ns.len());
            tally.wrong += 1;
        }
        Err(e) => {
            println!("failed: {e}");
            tally.failed += 1;
        }
    }
}

/// `runs` runs of the MLP fixture on one agent through a link damaging `rate` of the bytes.
fn runs_on_one_board(rate: f64, seed: u64, runs: u32) -> Tally {
    // The setup and the expected outputs go over a clean link: the MLP's
    // input is one 1.1 KB frame, which 1% byte noise lets through once in
    // 60000 tries whatever the protocol does. The runs (about 200 bytes of
    // answer each) cross the noise.
    let model = fixture("mlp.onnx").display().to_string();
    let mut noisy = NoisyBoard::open(0.0, seed);
    let s = &mut noisy.session;
    s.hello().unwrap();
    let loaded = s.load(&model, EngineKind::Tract, OptLevel::All, 1).unwrap();
    let inputs = edgehil::inputs::seeded(&loaded.inputs, &edgehil::inputs::Seeded::new(1)).unwrap();
    s.set_inputs(&inputs).unwrap();
    let expected = s.infer(2, 1, OutputMode::Full, |_, _| {}).unwrap().outputs;
    noisy.set_noise(rate);
    let mut tally = Tally::default();
    for _ in 0..runs {
        one_run(&mut noisy.session, &expected, &mut tally);
    }
    println!("seed {seed}: {tally:?}; link {:?}", noisy.session.stats);
    tally
}

/// 200 runs through a link damaging `rate` of the bytes, on four boards at
/// once: the runs mostly wait out lost frames, which takes no core.
fn runs_through_noise(rate: f64, seed: u64) -> Tally {
    let started = Instant::now();
    let boards: Vec<_> =
        (0..4).map(|b| std::thread::spawn(move || runs_on_one_board(rate, seed * 10 + b, 50))).collect();
    let mut total = Tally::default();
    for t in boards.into_iter().map(|b| b.join().unwrap()) {
        total.completed += t.completed;
        total.failed += t.failed;
        total.wrong += t.wrong;
    }
    println!(
        "{:.1}% byte noise: {} completed, {} failed, {} wrong of 200 runs in {:.1?}",
        rate * 100.0,
        total.completed,
        total.failed,
        total.wrong,
        started.elapsed()
    );
    total
}

#[test]
fn one_percent_byte_noise_costs_at_most_one_run_in_twenty_and_none_is_wrong() {
    let t = runs_through_noise(0.01, 18);
    assert_eq!(t.wrong, 0, "{t:?}");
    assert!(t.completed >= 190, "{t:?}");
}

#[test]
fn a_tenth_of_a_percent_byte_noise_costs_no_run() {
    let t = runs_through_noise(0.001, 19);
    assert_eq!(t.wrong, 0, "{t:?}");
    assert_eq!(t.completed, 200, "{t:?}");
}
