//! Export against an independent reference: tiny random Hugging Face models
//! and logits from transformers (onnx-models/reference/make_reference.py),
//! run through tract and ONNX Runtime; MiniLM against sentence-transformers.

use crate::common;

use std::path::Path;

use common::{export_to, minilm_dir, reference_dir, Reference, DECODERS};
use edgehil::accuracy::{compare_full, Accuracy};
use edgehil_onnx::export::{export, ExportOptions, Prune, Quant};
use edgehil_runtime::engine::{self, Engine, LoadOptions};
use edgehil_runtime::wire::{EngineKind, OptLevel, Tensor, Values};

/// The export in `dir` on `engine`, as the reference tests load it (one thread, Level1 for ONNX Runtime).
pub(crate) fn load(dir: &Path, engine: EngineKind) -> Box<dyn Engine> {
    let opts = LoadOptions {
        engine,
        // Level1 keeps DequantizeLinear → MatMul as written (see DESIGN: Level3 also quantizes activations).
        opt_level: OptLevel::Basic,
        threads: 1,
        ort_library: (engine == EngineKind::Ort).then(common::ort_library),
    };
    engine::load(&dir.join("model.onnx"), &opts).unwrap_or_else(|e| panic!("{} on {engine:?}: {e}", dir.display()))
}

fn i64_tensor(name: &str, shape: &[u64], v: Vec<i64>) -> Tensor {
    Tensor { name: name.into(), shape: shape.to_vec(), values: Values::I64(v) }
}

/// One decoder call: `ids [batch, t]` after `past` (the previous call's
/// present tensors, or none). Returns (logits, present).
fn step(
    e: &mut dyn Engine,
    ids: &[i64],
    batch: u64,
    mask: &[i64],
    positions: &[i64],
    past: Option<Vec<Tensor>>,
) -> (Vec<f32>, Vec<Tensor>) {
    let t = ids.len() as u64 / batch;
    let mut inputs = vec![
        i64_tensor("input_ids", &[batch, t], ids.to_vec()),
        i64_tensor("attention_mask", &[batch, mask.len() as u64 / batch], mask.to_vec()),
        i64_tensor("position_ids", &[batch, t], positions.to_vec()),
    ];
    match past {
        Some(p) => inputs.extend(p.into_iter().zip(&e.info().inputs[3..]).map(|(mut t, info)| {
            t.name = info.name.clone();
            t
        })),
        None => inputs.extend(e.info().inputs[3..].iter().map(|info| Tensor {
            name: info.name.clone(),
            shape: vec![batch, info.shape[1].unwrap(), 0, info.shape[3].unwrap()],
            values: Values::F32(Vec::new()),
        })),
    }
    e.set_inputs(&inputs).unwrap();
    e.run().unwrap();
    let mut out = e.take_outputs().unwrap();
    let present = out.split_off(1);
    let Values::F32(logits) = out.remove(0).values else { panic!("logits are f32") };
    (logits, present)
}

fn prefill(e: &mut dyn Engine, ids: &[i64]) -> Vec<f32> {
    let positions: Vec<i64> = (0..ids.len() as i64).collect();
    step(e, ids, 1, &vec![1; ids.len()], &positions, None).0
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn agreement(board: &[f32], reference: &[f32], vocab: u64) -> Accuracy {
    let f = |v: &[f32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>();
    compare_full(&f(board), &f(reference), &[reference.len() as u64 / vocab, vocab], "logits")
}

#[test]
fn prefill_logits_match_transformers_on_both_engines() {
    for model in DECODERS {
        let (dir, manifest) = export_to(model, "fp32", ExportOptions::default());
        let reference = Reference::open(&reference_dir(model));
        let (_, ids) = reference.i64s("input_ids");
        let expected = reference.f32s("logits");
        let (shape, batch_ids) = reference.i64s("input_ids_batch");
        let (_, mask) = reference.i64s("attention_mask_batch");
        let (_, positions) = reference.i64s("position_ids_batch");
        let expected_batch = reference.f32s("logits_batch");
        for engine in [EngineKind::Tract, EngineKind::Ort] {
            let mut e = load(&dir, engine);
            let err = max_abs(&prefill(e.as_mut(), &ids), &expected);
            println!("{model} {engine:?}: max abs error {err:.2e}");
            assert!(err <= 1e-4, "{model} on {engine:?}: max abs error {err} against transformers");

            // A left-padded batch: compared where the mask keeps the token.
            let (logits, _) = step(e.as_mut(), &batch_ids, shape[0], &mask, &positions, None);
            let vocab = manifest.config.vocab as usize;
            for row in (0..mask.len()).filter(|r| mask[*r] == 1) {
                let err =
                    max_abs(&logits[row * vocab..(row + 1) * vocab], &expected_batch[row * vocab..(row + 1) * vocab]);
                assert!(err <= 1e-4, "{model} on {engine:?}: padded batch, token {row}: max abs error {err}");
            }
        }
    }
}

/// Hub models carry config.json as transformers 4.x wrote it (`rope_theta` and
/// `partial_rotary_factor` top-level, `torch_dtype`): the same weights under
/// that config (`config.v4.json`, which transformers reads into the same
/// model) export to the same logits.
#[test]
fn transformers_4_configs_export_the_same_model() {
    let with_v4: Vec<_> = DECODERS.iter().filter(|m| reference_dir(m).join("config.v4.json").is_file()).collect();
    assert_eq!(with_v4.len(), 6, "{with_v4:?}");
    for model in with_v4 {
        let from = reference_dir(model);
        let v4 = common::reference_copy(model, &format!("{model}-v4-source"));
        std::fs::copy(from.join("config.v4.json"), v4.join("config.json")).unwrap();
        let text = std::fs::read_to_string(v4.join("config.json")).unwrap();
        assert!(text.contains("torch_dtype") && !text.contains("rope_parameters"), "{model}: a 4.x config");
        let dir = common::scratch_dir("export").join(format!("{model}-v4"));
        let manifest = export(&v4, &dir, ExportOptions::default()).unwrap_or_else(|e| panic!("{model} 4.x: {e}"));
        let ours = export_to(model, "v5", ExportOptions::default()).1;
        assert_eq!(manifest.config, ours.config, "{model}: both configs read the same");
        let reference = Reference::open(&from);
        let (_, ids) = reference.i64s("input_ids");
        for engine in [EngineKind::Tract, EngineKind::Ort] {
            let err = max_abs(&prefill(load(&dir, engine).as_mut(), &ids), &reference.f32s("logits"));
            assert!(err <= 1e-4, "{model} 4.x config on {engine:?}: max abs error {err}");
        }
    }
}

/// StableLM with `use_parallel_residual: true`: attention and MLP read the
/// one input norm (the reference's `logits_parallel`, same weights).
#[test]
fn stablelm_parallel_residual_matches_transformers() {
    let from = reference_dir("stablelm");
    let src = common::reference_copy("stablelm", "stablelm-parallel-source");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    config["use_parallel_residual"] = true.into();
    std::fs::write(src.join("config.json"), config.to_string()).unwrap();
    let dir = common::scratch_dir("export").join("stablelm-parallel");
    export(&src, &dir, ExportOptions::default()).unwrap();
    let reference = Reference::open(&from);
    let (_, ids) = reference.i64s("input_ids");
    let expected = reference.f32s("logits_parallel");
    assert!(
        max_abs(&expected, &reference.f32s("logits")) > 0.1,
        "the two wirings differ, so the test tells them apart"
    );
    for engine in [EngineKind::Tract, EngineKind::Ort] {
        let err = max_abs(&prefill(load(&dir, engine).as_mut(), &ids), &expected);
        assert!(err <= 1e-4, "stablelm parallel on {engine:?}: max abs error {err} against transformers");
    }
}

#[test]
fn decoding_with_the_cache_equals_recomputing() {
    for model in DECODERS {
        let (dir, manifest) = export_to(model, "cache", ExportOptions::default());
        let (_, ids) = Reference::open(&reference_dir(model)).i64s("input_ids");
        let vocab = manifest.config.vocab as usize;
        for engine in [EngineKind::Tract, EngineKind::Ort] {
            let mut e = load(&dir, engine);
            let full = prefill(e.as_mut(), &ids);
            // Prefill 5 tokens, then one token at a time with the cache.
            let (mut logits, mut present) = step(e.as_mut(), &ids[..5], 1, &[1; 5], &[0, 1, 2, 3, 4], None);
            for t in 5..ids.len() {
                let last = &logits[logits.len() - vocab..];
                let err = max_abs(last, &full[(t - 1) * vocab..t * vocab]);
                assert!(err <= 1e-4, "{model} on {engine:?}: step {t}: cached logits differ by {err}");
                let kv_len = present[0].shape[2];
                assert_eq!(kv_len, t as u64, "the cache holds every token so far");
                (logits, present) = step(e.as_mut(), &ids[t..t + 1], 1, &vec![1; t + 1], &[t as i64], Some(present));
            }
            let err = max_abs(&logits, &full[(ids.len() - 1) * vocab..]);
            assert!(err <= 1e-4, "{model} on {engine:?}: last step differs by {err}");
        }
    }
}

/// Bounds for the quantized exports against transformers' fp32 logits on the 8
/// reference tokens: (cosine at least, top-1 agreement at least). The tiny models'
/// weights are wide Gaussians (std 0.15) and their logits close together, so 4 bits
/// cost them more than they cost a trained model; measured: int8 cosine ≥ 0.9995,
/// top-1 ≥ 75%; int4 cosine 0.938–0.985, top-1 38–75%.
const BOUNDS: [(Quant, f64, f64); 2] = [(Quant::Int8, 0.999, 0.75), (Quant::Int4, 0.9, 0.25)];

/// The int4 top-1 bound of `model`: the tiny Gemma's int4 logits pick 1 of 8
/// tokens as its fp32 logits do, and transformers with the same 4-bit
/// rounding (symmetric blocks of 32) picks the same 1 of 8 (cosine 0.919):
/// the rounding's cost on this model, not the export's.
fn int4_top1(model: &str, bound: f64) -> f64 {
    if model == "gemma" {
        0.125
    } else {
        bound
    }
}

#[test]
fn quantized_exports_stay_within_bounds_and_engines_agree() {
    for model in DECODERS {
        let reference = Reference::open(&reference_dir(model));
        let (_, ids) = reference.i64s("input_ids");
        let fp32 = reference.f32s("logits");
        for (quant, min_cos, min_top1) in BOUNDS {
            let min_top1 = if quant == Quant::Int4 { int4_top1(model, min_top1) } else { min_top1 };
            // By default ONNX Runtime keeps fp32 activations, so both engines do the same arithmetic.
            let (dir, manifest) =
                export_to(model, &format!("{quant:?}"), ExportOptions { quant, ..Default::default() });
            let vocab = manifest.config.vocab;
            let tract = prefill(load(&dir, EngineKind::Tract).as_mut(), &ids);
            let ort = prefill(load(&dir, EngineKind::Ort).as_mut(), &ids);
            for (engine, logits) in [("tract", &tract), ("ort", &ort)] {
                let a = agreement(logits, &fp32, vocab);
                let (cos, top1) = (a.cosine.unwrap(), a.top1.unwrap());
                println!(
                    "{model} {quant:?} {engine}: cosine {cos:.5}, top-1 {:.0}% vs fp32 transformers",
                    top1 * 100.0
                );
                assert!(
                    cos >= min_cos && top1 >= min_top1,
                    "{model} {quant:?} on {engine}: cosine {cos}, top-1 {top1}"
                );
            }
            let between = agreement(&tract, &ort, vocab);
            println!(
                "{model} {quant:?}: tract vs ort cosine {:.6}, max abs {:.2e}",
                between.cosine.unwrap(),
                between.max_abs.unwrap()
            );
            // tract keeps both as blocks with fp16 scales (int8 as Q8_1, int4 as Q4_0), ONNX
            // Runtime (Level1) the file's fp32 scales. Measured on the five models: int8 cosine
            // ≥ 0.9999997, max abs 2.1e-3–4.5e-3 (it was ≤ 1e-4 while tract dequantized to fp32).
            let (min_cos, max_abs) = if quant == Quant::Int8 { (0.99999, 1e-2) } else { (0.9999, 0.05) };
            assert!(
                between.cosine.unwrap() >= min_cos && between.max_abs.unwrap() <= max_abs,
                "{model} {quant:?}: engines differ: {between:?}"
            );
            assert_eq!(between.top1, Some(1.0), "{model} {quant:?}: engines pick different tokens");
        }
    }
}

#[test]
fn int4_with_ort_int8_activations_stays_within_the_int4_bounds() {
    let (_, min_cos, min_top1) = BOUNDS[1];
    let opts = || ExportOptions { quant: Quant::Int4, ort_int8_activations: true, ..Default::default() };
    for model in DECODERS {
        let reference = Reference::open(&reference_dir(model));
        let (_, ids) = reference.i64s("input_ids");
        let (dir, manifest) = export_to(model, "int4-int8-act", opts());
        assert!(manifest.quantization.engines.contains("accuracy_level 4"), "{:?}", manifest.quantization);
        let a = agreement(
            &prefill(load(&dir, EngineKind::Ort).as_mut(), &ids),
            &reference.f32s("logits"),
            manifest.config.vocab,
        );
        println!(
            "{model} int4, ONNX Runtime int8 activations: cosine {:.5}, top-1 {:.0}%",
            a.cosine.unwrap(),
            100.0 * a.top1.unwrap()
        );
        assert!(a.cosine.unwrap() >= min_cos && a.top1.unwrap() >= int4_top1(model, min_top1), "{model}: {a:?}");
    }
    let int8 = ExportOptions { quant: Quant::Int8, ..opts() };
    let err = export(&reference_dir("gpt2"), &common::scratch_dir("export").join("refused"), int8).unwrap_err();
    assert!(err.to_string().contains("int8 activations are a choice for int4"), "{err}");
}

#[test]
fn lora_merged_export_matches_peft() {
    let adapter = reference_dir("llama-gqa-lora");
    let (dir, manifest) =
        export_to("llama-gqa", "lora", ExportOptions { lora: Some(adapter.clone()), ..Default::default() });
    let lora = manifest.lora.as_ref().unwrap();
    assert_eq!((lora.rank, lora.modules_merged), (4, 14), "every targeted module of both layers is merged");
    let reference = Reference::open(&adapter);
    let (_, ids) = reference.i64s("input_ids");
    let expected = reference.f32s("logits");
    let base = Reference::open(&reference_dir("llama-gqa")).f32s("logits");
    assert!(max_abs(&base, &expected) > 0.1, "the adapter changes the logits, so the test means something");
    for engine in [EngineKind::Tract, EngineKind::Ort] {
        let err = max_abs(&prefill(load(&dir, engine).as_mut(), &ids), &expected);
        assert!(err <= 1e-4, "LoRA merge on {engine:?}: max abs error {err} against transformers + peft");
    }
}

/// The same adapter saved in fp16 and in bf16 merges to PEFT's logits with
/// the rounded weights (which differ from the fp32 adapter's by 2e-3 and 1e-2).
#[test]
fn half_precision_lora_adapters_merge_like_peft() {
    let fp32 = Reference::open(&reference_dir("llama-gqa-lora")).f32s("logits");
    for suffix in ["fp16", "bf16"] {
        let adapter = reference_dir(&format!("llama-gqa-lora-{suffix}"));
        let (dir, manifest) = export_to(
            "llama-gqa",
            &format!("lora-{suffix}"),
            ExportOptions { lora: Some(adapter.clone()), ..Default::default() },
        );
        assert_eq!(manifest.lora.as_ref().unwrap().modules_merged, 14, "{suffix}");
        let reference = Reference::open(&adapter);
        let (_, ids) = reference.i64s("input_ids");
        let expected = reference.f32s("logits");
        assert!(
            max_abs(&fp32, &expected) > 1e-3,
            "{suffix}: rounding shows in the reference, so the test tells them apart"
        );
        for engine in [EngineKind::Tract, EngineKind::Ort] {
            let err = max_abs(&prefill(load(&dir, engine).as_mut(), &ids), &expected);
            assert!(err <= 1e-4, "{suffix} LoRA on {engine:?}: max abs error {err} against transformers + peft");
        }
    }
}

#[test]
fn pruned_exports_run_on_both_engines_and_say_what_shrank() {
    let reference = Reference::open(&reference_dir("gpt2"));
    let (_, ids) = reference.i64s("input_ids");
    let fp32 = reference.f32s("logits");
    let (_, dense) = export_to("gpt2", "dense", ExportOptions::default());
    for prune in [Prune::Magnitude(0.5), Prune::Heads(1), Prune::Mlp(0.25)] {
        let (dir, m) = export_to(
            "gpt2",
            &prune.to_string().replace(':', "-"),
            ExportOptions { prune: Some(prune), ..Default::default() },
        );
        let p = m.pruning.as_ref().unwrap();
        match prune {
            Prune::Magnitude(_) => {
                // Half of every layer weight is zero, and the files are as large as before.
                let layer_weights = 2 * (64 * 192 + 64 * 64 + 2 * 64 * 128) as u64;
                assert!(p.zeros >= layer_weights / 2, "{} zeros", p.zeros);
                assert_eq!(m.weight_bytes, dense.weight_bytes);
            }
            Prune::Heads(_) => {
                assert_eq!(m.kv_heads, vec![3, 3]);
                // q, k, v rows (and biases) and o columns of one 16-wide head, in two layers.
                assert_eq!(p.parameters_removed, 2 * (3 * 16 * 65 + 16 * 64));
                assert_eq!(m.parameters_exported, dense.parameters_exported - p.parameters_removed);
            }
            Prune::Mlp(_) => assert_eq!(p.parameters_removed, 2 * (32 * 65 + 32 * 64)),
        }
        let tract = prefill(load(&dir, EngineKind::Tract).as_mut(), &ids);
        let ort = prefill(load(&dir, EngineKind::Ort).as_mut(), &ids);
        assert!(max_abs(&tract, &ort) <= 1e-4, "{prune}: engines differ");
        let a = agreement(&tract, &fp32, 512);
        println!("gpt2 {prune}: cosine {:.4}, top-1 {:.0}% vs unpruned", a.cosine.unwrap(), a.top1.unwrap() * 100.0);
    }
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let reference = Reference::open(&reference_dir("minilm"));
    let (shape, _) = reference.i64s("input_ids");
    let inputs = ["input_ids", "attention_mask", "token_type_ids"].map(|n| i64_tensor(n, &shape, reference.i64s(n).1));
    let expected = reference.f32s("embeddings");
    for (quant, min_cos) in [(Quant::None, 0.9999), (Quant::Int8, 0.99)] {
        let out = common::scratch_dir("export").join(format!("minilm-{quant:?}"));
        let m = export(&minilm_dir(), &out, ExportOptions { quant, ..Default::default() }).unwrap();
        assert_eq!(m.tokenizer.as_deref(), Some("tokenizer.json"));
        assert!(out.join("tokenizer.json").is_file());
        for engine in [EngineKind::Tract, EngineKind::Ort] {
            let mut e = load(&out, engine);
            e.set_inputs(&inputs).unwrap();
            e.run().unwrap();
            let Values::F32(got) = e.take_outputs().unwrap().remove(0).values else { panic!() };
            let worst = got
                .chunks(384)
                .zip(expected.chunks(384))
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>())
                .fold(1.0, f64::min);
            println!("MiniLM {quant:?} on {engine:?}: lowest cosine {worst:.6} over {} sentences", shape[0]);
            assert!(worst >= min_cos, "MiniLM {quant:?} on {engine:?}: cosine {worst}");
        }
    }
}
