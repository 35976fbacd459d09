//! The micro engine (`edgehil-micro`, the no_std interpreter for
//! microcontrollers) against the host's tract reference, on the fixtures it
//! takes: outputs per output by the metrics of any board, and the flash and
//! RAM its compiler reports.

use std::path::PathBuf;

use edgehil::accuracy::{compare_full, floats, Accuracy};
use edgehil::inputs::Seeded;
use edgehil::run::host_run;
use edgehil_micro::Model;
use edgehil_onnx::fixtures::{self, Precision};
use edgehil_onnx::graph::write_model;
use edgehil_onnx::micro::{compile_file, MicroReport};

use crate::common::{fixture, scratch_dir};

/// fp32 runs the reference's arithmetic in another order: L2R within 1e-5.
/// int8 has the same codes and scales, but tract packs int8 MatMul weights with
/// their scales rounded to f16 (ARCHITECTURE.md, "tract loads quantized
/// weights packed"): within 2e-3.
fn tolerance(precision: Precision) -> (f64, f64) {
    match precision {
        Precision::F32 => (1e-5, 0.999_999),
        Precision::Int8 => (2e-3, 0.999_99),
    }
}

/// Compiles `path`, runs it with the micro engine and with tract on the same seeded inputs.
fn against_reference(path: &std::path::Path) -> (MicroReport, Vec<Accuracy>) {
    let compiled = compile_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let model = Model::decode(&compiled.bytes).unwrap();
    let (inputs, reference) = host_run(path, None, Seeded::new(7), None).unwrap();
    let inputs: Vec<Vec<f32>> = inputs.iter().map(|t| floats(t).iter().map(|v| *v as f32).collect()).collect();
    let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let outputs = edgehil_micro::run(&model, &views).unwrap();
    assert_eq!(outputs.len(), reference.len());
    let accuracy = outputs
        .iter()
        .zip(&reference)
        .map(|(out, r)| {
            let out: Vec<f64> = out.iter().map(|v| f64::from(*v)).collect();
            compare_full(&out, &floats(r), &r.shape, &r.name)
        })
        .collect();
    (compiled.report, accuracy)
}

fn cases() -> Vec<(String, PathBuf, Precision)> {
    let mut cases: Vec<(String, PathBuf, Precision)> = ["mlp", "ad-autoencoder", "ds-cnn"]
        .iter()
        .flat_map(|m| {
            [(format!("{m}.onnx"), Precision::F32), (format!("{m}-int8.onnx"), Precision::Int8)]
                .map(|(f, p)| (f.clone(), fixture(&f), p))
        })
        .collect();
    let dir = scratch_dir("micro");
    for (name, precision) in [("micro-ops.onnx", Precision::F32), ("micro-ops-int8.onnx", Precision::Int8)] {
        let path = dir.join(name);
        write_model(&fixtures::micro_ops(precision), &path).unwrap();
        cases.push((name.into(), path, precision));
    }
    cases
}

#[test]
fn micro_engine_gives_the_host_reference_outputs() {
    let mut table = String::from("model | flash B | weights B | arena B | peak live B | ops | int8/f32 tensors\n");
    for (name, path, precision) in cases() {
        let (report, accuracy) = against_reference(&path);
        let (l2r_max, cos_min) = tolerance(precision);
        for a in &accuracy {
            let (l2r, cos) = (a.l2r.unwrap(), a.cosine.unwrap());
            eprintln!("{name} {}: L2R {l2r:.2e}, cosine {cos:.8}, top-1 {:?}", a.output, a.top1);
            assert!(l2r <= l2r_max, "{name} {}: L2R {l2r:e} > {l2r_max:e}", a.output);
            assert!(cos >= cos_min, "{name} {}: cosine {cos} < {cos_min}", a.output);
            assert!(a.top1.is_none_or(|t| t == 1.0), "{name} {}: top-1 {:?}", a.output, a.top1);
        }
        let r = report;
        table.push_str(&format!(
            "{name} | {} | {} | {} | {} | {} | {}/{}\n",
            r.flash_bytes, r.weight_bytes, r.arena_bytes, r.peak_live_bytes, r.ops, r.int8_tensors, r.f32_tensors
        ));
    }
    insta::assert_snapshot!(table);
}

#[test]
fn an_op_outside_the_set_is_refused_naming_it_and_its_node() {
    let err = compile_file(&fixture("block.onnx")).unwrap_err();
    insta::assert_snapshot!(err.to_string());
}

/// A firmware reads models it did not compile: any byte of one changed is refused at decode
/// or runs, and never panics (decode checks every op's geometry against its buffers).
#[test]
fn a_corrupted_micro_model_is_refused_or_runs_without_panicking() {
    let path = scratch_dir("micro-corrupt").join("micro-ops-int8.onnx");
    write_model(&fixtures::micro_ops(Precision::Int8), &path).unwrap();
    let bytes = compile_file(&path).unwrap().bytes;
    let input = vec![0.5f32; 4 * 32];
    let (mut refused, mut ran) = (0, 0);
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            match Model::decode(&bad) {
                Err(_) => refused += 1,
                Ok(model) => {
                    let _ = edgehil_micro::run(&model, &[&input]);
                    ran += 1;
                }
            }
        }
    }
    assert!(refused > 0 && ran > 0, "refused {refused}, ran {ran}");
}
