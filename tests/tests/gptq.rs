//! GPTQ checkpoints (onnx-models/reference/make_gptq_reference.py): the
//! export of each tiny GPTQ Llama on both engines against transformers on the
//! weights the checkpoint dequantizes to.

use crate::common::{reference_dir, scratch_dir, Reference};
use crate::export::load;
use edgehil_onnx::export::{export, ExportOptions, Prune};
use edgehil_runtime::generate as lm;
use edgehil_runtime::wire::EngineKind;

/// Largest logit difference from transformers on the dequantized weights:
/// the same values on every side, summed in another order (measured up to 3.6e-6).
const TOLERANCE: f32 = 2e-5;

#[test]
fn gptq_checkpoints_give_their_dequantized_logits_on_both_engines() {
    for variant in ["llama-g128", "llama-g128-actorder", "llama-g128-asym"] {
        let src = reference_dir("gptq").join(variant);
        let out = scratch_dir("gptq").join(variant);
        let manifest = export(&src, &out, ExportOptions::default()).unwrap_or_else(|e| panic!("{variant}: {e}"));
        let checkpoint =
            manifest.quantization.checkpoint.clone().expect("the manifest says how the checkpoint was quantized");
        assert!(checkpoint.starts_with("GPTQ 4-bit, group 128"), "{checkpoint}");
        // The layers stay 4-bit: the weights written are well under the fp32 model's.
        assert!(manifest.weight_bytes * 3 < manifest.parameters * 4, "{variant}: {} bytes", manifest.weight_bytes);
        let reference = Reference::open(&src);
        let ids: Vec<u32> = reference.i64s("input_ids").1.iter().map(|t| *t as u32).collect();
        let expected = reference.f32s("logits");
        for engine in EngineKind::ALL {
            let (logits, _) = lm::logits_of(load(&out, engine).as_mut(), &ids).unwrap();
            let err = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            println!("{variant} {engine:?}: max abs error {err:.2e} against the dequantized reference");
            assert!(err <= TOLERANCE, "{variant} {engine:?}: max abs error {err}");
        }
    }
}

#[test]
fn pruning_a_gptq_checkpoint_is_refused_before_anything_is_written() {
    let src = reference_dir("gptq").join("llama-g128");
    let out = scratch_dir("gptq").join("pruned");
    let opts = ExportOptions { prune: Some(Prune::Magnitude(0.5)), ..ExportOptions::default() };
    let err = export(&src, &out, opts).unwrap_err().to_string();
    insta::assert_snapshot!(err, @"cannot export: pruning or a LoRA adapter on a GPTQ checkpoint: its layers are 4-bit codes, which would have to be dequantized and quantized again; export the unquantized model instead");
    assert!(!out.exists());
}
