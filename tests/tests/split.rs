//! Cloud/device split inference: the split graphs against the unsplit
//! model, the emulated network against SPA's formula, each mode through
//! real agents, and the sweep's table and chart.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgehil::split::net::{EmulatedNet, NetParams};
use edgehil::split::{as_past, empty_cache, html, split, step_inputs, sweep, Mode, SplitOptions, SplitReport};
use edgehil_onnx::hf::{write_random, Config};
use edgehil_onnx::split::{export_part, Part};
use edgehil_runtime::engine::{self, LoadOptions};
use edgehil_runtime::wire::{EngineKind, OptLevel, Tensor, Values};

fn load(model: &Path) -> Box<dyn engine::Engine> {
    let opts = LoadOptions { engine: EngineKind::Tract, opt_level: OptLevel::All, threads: 1, ort_library: None };
    engine::load(model, &opts).unwrap()
}

/// Runs `model` on `first` after `past` positions with `cache`; gives its first output and the new cache.
fn step(e: &mut dyn engine::Engine, first: Tensor, past: u64, cache: Vec<Tensor>) -> (Tensor, Vec<Tensor>) {
    e.set_inputs(&step_inputs(first, past, cache)).unwrap();
    e.run().unwrap();
    let mut out = e.take_outputs().unwrap();
    let rest = as_past(out.split_off(1), &e.info().inputs);
    (out.remove(0), rest)
}

fn ids(v: &[i64]) -> Tensor {
    Tensor { name: "input_ids".into(), shape: vec![1, v.len() as u64], values: Values::I64(v.to_vec()) }
}

/// The logits of each step of a prefill and two decoding steps through
/// `parts` in turn (each keeping its own cache), as the host's tract gives them.
fn chain(parts: &[PathBuf]) -> Vec<Tensor> {
    let mut engines: Vec<_> = parts.iter().map(|p| load(p)).collect();
    let mut caches: Vec<_> = engines.iter().map(|e| empty_cache(&e.info().inputs)).collect();
    let mut past = 0;
    let mut logits = Vec::new();
    for tokens in [vec![5, 17, 3, 99, 42], vec![7], vec![11]] {
        let mut x = ids(&tokens);
        for (e, cache) in engines.iter_mut().zip(&mut caches) {
            let name = e.info().inputs[0].name.clone();
            let (out, next) = step(e.as_mut(), Tensor { name, ..x }, past, std::mem::take(cache));
            assert_eq!(out.shape[..2], [1, tokens.len() as u64], "one row per token crosses");
            (x, *cache) = (out, next);
        }
        logits.push(x);
        past += tokens.len() as u64;
    }
    logits
}

#[test]
fn split_logits_equal_their_unsplit_graphs_exactly() {
    for model in ["llama-gqa", "llama-tied", "gpt2", "neox", "opt"] {
        let src = common::reference_dir(model);
        let dir = common::scratch_dir("split-exact").join(model);
        let path = |name: &str, part: Part| -> PathBuf {
            export_part(&src, &dir.join(name), part).unwrap();
            dir.join(name).join("model.onnx")
        };
        let whole = chain(&[path("whole", Part::Whole)]);
        let layer = chain(&[path("board", Part::Board(1)), path("cloud", Part::Cloud(1))]);
        assert_eq!(layer, whole, "{model}: layer mode, K = 1");
        let adapters = chain(&[path("adapter-whole", Part::AdapterWhole { rank: 4 })]);
        let split = chain(&[
            path("ac0", Part::AdapterCloud { layer: 0 }),
            path("ab0", Part::AdapterBoard { layer: 0, rank: 4 }),
            path("ac1", Part::AdapterCloud { layer: 1 }),
            path("ab1", Part::AdapterBoard { layer: 1, rank: 4 }),
        ]);
        assert_eq!(split, adapters, "{model}: adapter mode against the model with its adapters");
        assert_ne!(adapters, whole, "{model}: the adapters change the logits");
        let side = chain(&[path("lst-whole", Part::LstWhole { reduction: 4 })]);
        let lst = chain(&[
            path("lst-cloud", Part::LstCloud { reduction: 4 }),
            path("lst-board", Part::LstBoard { reduction: 4 }),
        ]);
        assert_eq!(lst, side, "{model}: lst mode against the model with its side network");
    }
}

#[test]
fn a_cut_must_leave_a_layer_on_each_side() {
    let src = common::reference_dir("llama-gqa");
    let dir = common::scratch_dir("split-bad-cut");
    for k in [0, 2] {
        let err = export_part(&src, &dir.join(k.to_string()), Part::Board(k)).unwrap_err().to_string();
        assert!(err.contains(&format!("--layers-on-board {k}")) && err.contains("1..=1"), "{err}");
    }
    let err = export_part(&common::minilm_dir(), &dir.join("bert"), Part::Cloud(1)).unwrap_err().to_string();
    assert!(err.contains("encoder"), "{err}");
}

/// τ and the rate as SPA's formula has them: an exchange takes at least
/// τ + bytes/rate, and the fastest of five is within 30 % of it (the
/// fastest: this machine is shared, and a relay thread may wake late).
#[test]
fn the_emulated_network_follows_rtt_and_bandwidth() {
    for (rtt_ms, rate, bytes) in [(50.0, 100e6, 256), (10.0, 1e6, 12_500), (5.0, 10e6, 50_000)] {
        let params = NetParams { rtt: Duration::from_secs_f64(rtt_ms / 1e3), bits_per_s: rate };
        let mut net = EmulatedNet::start(params).unwrap();
        let mut took: Vec<Duration> =
            (0..5).map(|_| net.up(&vec![7u8; bytes]).unwrap() + net.down(&[1, 2, 3, 4]).unwrap()).collect();
        took.sort();
        let predicted = params.predicted(1, bytes as u64 + 4);
        let ratio = took[0].as_secs_f64() / predicted.as_secs_f64();
        assert!(
            took[0] >= params.rtt && (0.99..1.3).contains(&ratio),
            "{rtt_ms} ms, {rate} bit/s, {bytes} B: {took:?} vs {predicted:?}"
        );
    }
}

fn options(model: &Path, name: &str, mode: Mode, rtt_ms: f64) -> SplitOptions {
    SplitOptions {
        model: model.to_path_buf(),
        work: common::scratch_dir("split").join(name),
        board: common::board(EngineKind::Tract),
        mode,
        k: None,
        rank: 4,
        reduction: 4,
        net: NetParams { rtt: Duration::from_secs_f64(rtt_ms / 1e3), bits_per_s: 10e6 },
        prompt: 6,
        tokens: 5,
        seed: 3,
    }
}

fn run(model: &Path, name: &str, mode: Mode, rtt_ms: f64) -> SplitReport {
    split(
        &options(model, name, mode, rtt_ms),
        &common::profile("raspberry-pi-5"),
        &common::profile("jetson-orin-nx-16gb"),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn each_mode_generates_the_unsplit_models_tokens_with_its_exchanges() {
    let model = common::reference_dir("llama-gqa");
    let board = run(&model, "board", Mode::Board, 20.0);
    let cloud = run(&model, "cloud", Mode::Cloud, 20.0);
    let layer = run(&model, "layer", Mode::Layer, 50.0);
    let adapter = run(&model, "adapter", Mode::Adapter, 20.0);
    let lst = run(&model, "lst", Mode::Lst, 20.0);
    for r in [&board, &cloud, &layer, &adapter, &lst] {
        assert_eq!(r.max_abs_logit_diff, 0.0, "{:?}: logits against the unsplit graph on the host", r.mode);
        assert_eq!(r.generated.len(), 5);
        assert!(r.board_cap > r.board_peak_heap.unwrap_or(0), "{:?}", r.mode);
    }
    for r in [&cloud, &layer] {
        assert_eq!(r.generated, board.generated, "{:?}: the unsplit model's tokens", r.mode);
    }
    // All on the board: nothing crosses, no cloud time.
    assert_eq!((board.m, board.bytes_up, board.bytes_down, board.measured.net_ms), (0, 0, 0, 0.0));
    assert!(board.measured.dev_ms > 0.0 && board.measured.cloud_ms == 0.0);
    // All in the cloud: the token id (int64) up, the next (u32) down.
    assert_eq!((cloud.m, cloud.bytes_up, cloud.bytes_down), (1, 8, 4));
    assert!(cloud.measured.dev_ms == 0.0 && cloud.measured.cloud_ms > 0.0);
    // Layer 1 of 2 on the board: one token's hidden state (64 fp32) up.
    assert_eq!((layer.k, layer.layers, layer.m, layer.bytes_up, layer.bytes_down), (1, 2, 1, 64 * 4, 4));
    assert!(layer.measured.dev_ms > 0.0 && layer.measured.cloud_ms > 0.0);
    assert!(layer.net_min_ms >= 50.0 && layer.measured.net_ms >= layer.net_min_ms, "{}", layer.table());
    let ratio = layer.net_min_ms / layer.formula.net_ms;
    assert!((0.99..1.3).contains(&ratio), "{}", layer.table());
    // The board is the slower device: its predicted compute for the whole model is above the cloud's.
    assert!(board.predicted.dev_ms > cloud.predicted.cloud_ms, "{}\n{}", board.table(), cloud.table());
    assert!(layer.network.contains("shaper"), "{}", layer.network);
    // An adapter per layer: 2 exchanges, each layer's hidden state down and (but the last) back up.
    assert_eq!((adapter.m, adapter.bytes_up, adapter.bytes_down), (2, 8 + 64 * 4, 2 * 64 * 4), "{}", adapter.table());
    // Four transfers a token, each a relay thread's wake-up on a shared machine: a looser bound than
    // the network's own test.
    let ratio = adapter.net_min_ms / adapter.formula.net_ms;
    assert!(adapter.net_min_ms >= 2.0 * 20.0 && (0.99..1.5).contains(&ratio), "{}", adapter.table());
    // A side network of width 64/4: the token id up, both layers' 16-wide states down, the token stays.
    assert_eq!((lst.m, lst.bytes_up, lst.bytes_down), (1, 8, 2 * 16 * 4), "{}", lst.table());
    assert!(lst.measured.dev_ms > 0.0 && lst.measured.cloud_ms > 0.0 && lst.net_min_ms >= 20.0, "{}", lst.table());
}

/// A llama of four layers, so the sweep has three cuts.
fn four_layers() -> PathBuf {
    let dir = common::scratch_dir("split-synth").join("llama-4");
    let family = edgehil_onnx::arch::ModelFamily::lookup("llama").unwrap();
    write_random(&Config::new(family, 64, 4, 4, 2, 128, 256, 32, false), &dir, 7).unwrap();
    dir
}

#[test]
fn sweep_gives_the_best_placement_per_network_as_a_table_and_a_chart() {
    let model = four_layers();
    let opts = options(&model, "sweep", Mode::Layer, 1.0);
    // A microcontroller's PSRAM board: slow enough that the cloud wins on a fast link.
    let report =
        sweep::sweep(&opts, &common::profile("esp32-s3-psram"), &common::profile("jetson-orin-nx-16gb")).unwrap();
    let names: Vec<String> = report.placements.iter().map(sweep::label).collect();
    assert_eq!(names, ["board", "cloud", "adapter r=4", "lst r=4", "layer K=1", "layer K=2", "layer K=3"]);
    assert_eq!(report.cells.len(), sweep::RTTS_MS.len() * sweep::RATES.len());
    for c in &report.cells {
        let best = c.total_ms[c.best];
        assert!(c.total_ms.iter().all(|t| best <= *t), "{c:?}");
    }
    let best = |rtt_ms: f64| report.cells.iter().find(|c| c.rtt_ms == rtt_ms).map(|c| names[c.best].as_str());
    assert_eq!((best(1.0), best(200.0)), (Some("cloud"), Some("board")), "{}", report.table());
    let table = report.table();
    let mut settings = insta::Settings::clone_current();
    // Measured columns: this machine's timings.
    settings.add_filter(r"\| (\d+\+\d+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", "| $1 | [ms] | [ms] | [ms] |");
    settings.bind(|| insta::assert_snapshot!(table));

    let page = html::html("llama-4", &report);
    assert!(page.contains("<svg id=\"best\""), "{page}");
    let cells: Vec<&str> = page.match_indices("data-best=\"").map(|(i, _)| &page[i + 11..]).collect();
    assert_eq!(cells.len(), report.cells.len());
    for (cell, c) in cells.iter().zip(&report.cells) {
        assert!(cell.starts_with(&format!("{}\"", names[c.best])), "{cell}");
    }
    assert!(!page.contains("<script"), "the page needs no script");
}
