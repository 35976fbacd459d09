//! Every fixture through the real agent binary on a real pseudo-terminal,
//! with both engines, compared with the host reference.

use crate::common;

use common::*;
use edgehil::estimate::Peak;
use edgehil::report::Status;
use edgehil_runtime::wire::{EngineKind, OptLevel};

const FIXTURES: [&str; 4] = ["mlp.onnx", "mlp-int8.onnx", "block.onnx", "block-int8.onnx"];

/// `tolerance` for the fp32 fixtures; the int8 ones get `tolerance_int8`.
fn assert_matches_reference(engine: EngineKind, opt_level: OptLevel, tolerance: f64, tolerance_int8: f64) {
    for model in FIXTURES {
        let tolerance = if model.contains("int8") { tolerance_int8 } else { tolerance };
        let mut opts = options(model, engine);
        opts.board.opt_level = opt_level;
        let r = run_on(&opts, "jetson-orin-nano");
        assert_eq!(r.status, Status::Ok, "{model} on {engine:?}: {:?}", r.error);
        assert_eq!(r.latency_ms.as_ref().map(|l| l.runs), Some(5));
        assert!(r.memory.fits && r.memory.peak_heap.unwrap() > 0 && r.memory.peak_rss.unwrap() > 0);
        assert_eq!(r.accuracy.len(), 1, "{model}: one output");
        for a in &r.accuracy {
            let max_abs = a.max_abs.unwrap();
            assert!(max_abs <= tolerance, "{model} {engine:?} {opt_level:?}: max |err| {max_abs} > {tolerance}");
            assert!(a.cosine.unwrap() > 0.99999, "{model}: cosine {:?}", a.cosine);
        }
    }
}

#[test]
fn tract_on_the_board_equals_tract_on_the_host() {
    assert_matches_reference(EngineKind::Tract, OptLevel::All, 1e-5, 1e-5);
}

#[test]
fn onnx_runtime_basic_matches_the_tract_reference() {
    // The reference runs int8 weights as tract's Q8_1 blocks, whose f16 scales
    // round the file's fp32 ones by up to 2^-11 relative: measured 4.7e-4 on
    // block-int8, whose outputs are about 1.
    assert_matches_reference(EngineKind::Ort, OptLevel::Basic, 1e-4, 2e-3);
}

#[test]
fn onnx_runtime_all_is_reported_and_close() {
    let mut opts = options("block-int8.onnx", EngineKind::Ort);
    opts.board.opt_level = OptLevel::All;
    let r = run_on(&opts, "jetson-orin-nano");
    assert_eq!(r.status, Status::Ok, "{:?}", r.error);
    assert_eq!(r.opt_level, OptLevel::All);
    assert_eq!(r.predicted.unwrap().peak, Peak::Int8, "ORT at All runs int8 kernels");
    // Level 3 quantizes activations too: close, not exact.
    assert!(r.accuracy[0].l2r.unwrap() < 0.05, "{:?}", r.accuracy[0]);
}

#[test]
fn int8_against_its_fp32_reference() {
    for (model, reference) in [("mlp-int8.onnx", "mlp.onnx"), ("block-int8.onnx", "block.onnx")] {
        let mut opts = options(model, EngineKind::Tract);
        opts.reference = Some(fixture(reference));
        let r = run_on(&opts, "raspberry-pi-5");
        let a = &r.accuracy[0];
        println!("{model} vs {reference}: cos {:?} l2r {:?} top1 {:?}", a.cosine, a.l2r, a.top1);
        assert!(a.cosine.unwrap() > 0.999, "{model}: {a:?}");
        assert!(a.l2r.unwrap() < 0.05 && a.l2r.unwrap() > 0.0, "{model}: quantized, so different but close: {a:?}");
        assert!(a.top1.unwrap() >= 0.75, "{model}: {a:?}");
    }
}

#[test]
fn report_snapshot() {
    let r = run_on(&options("mlp.onnx", EngineKind::Tract), "jetson-orin-nano");
    insta::assert_json_snapshot!(r, {
        ".model" => "[fixtures]/mlp.onnx",
        ".reference" => "[fixtures]/mlp.onnx",
        ".load.load_ms" => "[ms]",
        ".latency_ms.*" => insta::dynamic_redaction(|v, p| if p.to_string().ends_with("runs") || p.to_string().ends_with("warmup") { v } else { "[ms]".into() }),
        ".memory.peak_heap" => "[bytes]",
        ".memory.peak_rss" => "[bytes]",
        ".memory.headroom_bytes" => "[bytes]",
        ".memory.headroom_pct" => "[pct]",
        ".board.threads" => "[threads]",
        ".board.arch" => "[arch]",
        // Kernels differ between CPUs in the last bits.
        ".accuracy[].*" => insta::rounded_redaction(6),
        ".predicted.*" => insta::rounded_redaction(6),
    });
}
