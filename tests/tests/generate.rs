//! Generation with the KV cache: against transformers' greedy continuation,
//! and on the emulated board against the same loop on the host.

use crate::common;

use common::{board, export_to, profile, reference_dir, scratch_dir, Reference, DECODERS};
use edgehil::generate::{generate, GenerateHostError, GenerateOptions, TextTokenizer};
use edgehil::report::Status;
use edgehil_onnx::export::{ExportOptions, Manifest, Quant};
use edgehil_runtime::engine::{self, LoadOptions};
use edgehil_runtime::generate as lm;
use edgehil_runtime::wire::{EngineKind, GenParams, OptLevel};

fn greedy(max_new: u32) -> GenParams {
    GenParams { max_new, temperature: 0.0, ..GenParams::STUDY }
}

/// Bytes of the cache after `tokens` positions.
fn kv_bytes(m: &Manifest, tokens: u64) -> u64 {
    let heads: u64 = m.kv_heads.iter().sum();
    2 * heads * m.head_dim * tokens * 4
}

#[test]
fn greedy_generation_matches_transformers_on_both_engines() {
    for model in DECODERS {
        let (dir, manifest) = export_to(model, "generate", ExportOptions::default());
        let (_, ids) = Reference::open(&reference_dir(model)).i64s("greedy_ids");
        let (prompt, expected) = ids.split_at(8);
        let prompt: Vec<u32> = prompt.iter().map(|t| *t as u32).collect();
        let expected: Vec<u32> = expected.iter().map(|t| *t as u32).collect();
        for engine in EngineKind::ALL {
            let opts = LoadOptions {
                engine,
                opt_level: OptLevel::Basic,
                threads: 1,
                ort_library: (engine == EngineKind::Ort).then(common::ort_library),
            };
            let mut e = engine::load(&dir.join("model.onnx"), &opts).unwrap();
            let (tokens, report) =
                lm::generate(e.as_mut(), &prompt, &greedy(16), |_, _, _| Ok::<(), ()>(())).unwrap().unwrap();
            assert_eq!(tokens, expected, "{model} on {engine:?}: greedy tokens vs transformers");
            // The last token is picked, not fed: the cache holds 8 + 15 positions.
            assert_eq!(report.kv_bytes, kv_bytes(&manifest, 8 + 15), "{model}");
        }
    }
}

fn options(dir: &std::path::Path, engine: EngineKind, params: GenParams) -> GenerateOptions {
    GenerateOptions {
        model: dir.to_path_buf(),
        reference: None,
        text: None,
        prompt: "the board writes".into(),
        params,
        stop_at_eos: false,
        tokenize_on_board: true,
        reps: 2,
        board: board(engine),
    }
}

#[test]
fn board_generation_equals_the_host_token_for_token() {
    let (dir, manifest) = export_to("llama-gqa", "board", ExportOptions::default());
    let sampled = GenParams { max_new: 12, temperature: 1.0, top_k: 50, top_p: 0.95, seed: 11, eos: None };
    for engine in EngineKind::ALL {
        let mut outputs = Vec::new();
        for params in [greedy(12), sampled] {
            let mut streamed = Vec::new();
            let r =
                generate(&options(&dir, engine, params), &profile("jetson-orin-nano"), |id| streamed.push(id)).unwrap();
            assert_eq!(r.status, Status::Ok, "{engine:?}: {:?}", r.error);
            let a = r.agreement.as_ref().unwrap();
            assert!(
                a.same_tokens,
                "{engine:?} {params:?}: board {:?} vs host, first difference {:?}",
                r.tokens, a.first_difference
            );
            assert_eq!(r.tokens.len(), 12);
            assert_eq!(streamed, r.tokens, "tokens streamed as they came are the report's");
            let kv = kv_bytes(&manifest, u64::from(r.prompt_tokens) + 11);
            assert_eq!(r.kv_cache_bytes, Some(kv));
            let measured = match engine {
                EngineKind::Tract | EngineKind::Micro => r.memory.peak_heap,
                EngineKind::Ort => r.memory.peak_rss,
            };
            assert!(measured.unwrap() > kv, "the peak includes the cache");
            let speed = r.speed.as_ref().unwrap();
            assert_eq!(speed.reps, 2);
            assert!(speed.prompt_tok_s.mean > 0.0 && speed.generation_tok_s.unwrap().mean > 0.0);
            assert!(!r.text.is_empty(), "decoded text");
            let t = r.board_tokenizer.as_ref().unwrap();
            assert!(t.same_ids && t.same_text, "the board's tokenizer agrees with the host's: {t:?}");
            outputs.push(r.tokens);
        }
        assert_ne!(outputs[0], outputs[1], "{engine:?}: sampling at temperature 1 is not greedy");
    }
}

#[test]
fn quantized_generation_reports_teacher_forced_agreement() {
    let (fp32, _) = export_to("llama-gqa", "tf-fp32", ExportOptions::default());
    let (int8, _) = export_to("llama-gqa", "tf-int8", ExportOptions { quant: Quant::Int8, ..Default::default() });
    let mut opts = options(&int8, EngineKind::Tract, greedy(12));
    opts.reference = Some(fp32);
    opts.reps = 1;
    // A text both are fed (the tiny model's context is 64 positions).
    let text = scratch_dir("generate").join("short.txt");
    std::fs::write(&text, "The board on the desk writes one token after another until it stops.").unwrap();
    opts.text = Some(text.clone());
    let r = generate(&opts, &profile("jetson-orin-nano"), |_| {}).unwrap();
    let agreement = r.agreement.unwrap();
    let top1 = agreement.teacher_forced_top1.unwrap();
    println!("int8 vs fp32 teacher-forced top-1: {top1:.3}");
    // The export tests' int8 bound for these tiny models.
    assert!((0.75..=1.0).contains(&top1), "{top1}");
    let on_text = agreement.text.unwrap();
    let tokens = TextTokenizer::load(&int8).unwrap().encode(&std::fs::read_to_string(&text).unwrap()).unwrap().len();
    assert_eq!(on_text.predicted as usize, tokens - 1, "every token but the first is predicted");
    println!("int8 vs fp32 on the text: {on_text:?}");
    assert!((0.75..=1.0).contains(&on_text.top1), "{on_text:?}");
    let ratio = on_text.perplexity / on_text.reference_perplexity;
    assert!(on_text.reference_perplexity > 1.0 && (0.9..1.1).contains(&ratio), "{on_text:?}");
    // The model against itself: the same choices and the same perplexity.
    opts.reference = Some(int8.clone());
    let itself = generate(&opts, &profile("jetson-orin-nano"), |_| {}).unwrap().agreement.unwrap().text.unwrap();
    assert_eq!((itself.top1, itself.perplexity), (1.0, itself.reference_perplexity));
    // A text longer than the context is refused before the board, naming the file.
    std::fs::write(&text, "one two three four five six seven eight nine ten ".repeat(20)).unwrap();
    let err = generate(&opts, &profile("jetson-orin-nano"), |_| {}).unwrap_err().to_string();
    assert!(err.contains("short.txt") && err.contains("a text to score takes 2 to 64"), "{err}");
}

#[test]
fn a_context_longer_than_the_model_is_refused_with_the_figures() {
    let (dir, _) = export_to("gpt2", "context", ExportOptions::default());
    let err =
        generate(&options(&dir, EngineKind::Tract, greedy(100)), &profile("jetson-orin-nano"), |_| {}).unwrap_err();
    assert!(matches!(err, GenerateHostError::ContextTooLong { context: 64, max_new: 100, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("100 new tokens") && msg.contains("64 positions") && msg.contains("gpt2-context"), "{msg}");
}

#[test]
fn sweep_gives_a_row_per_test_and_engine_in_each_format() {
    use edgehil::sweep::{render, sweep, Format, Test};
    let (dir, _) = export_to("llama-gqa", "sweep", ExportOptions::default());
    let tests: Vec<Test> = ["pp8", "tg4", "pp512"].iter().map(|t| t.parse().unwrap()).collect();
    let mut rows = Vec::new();
    for engine in EngineKind::ALL {
        rows.extend(sweep(&dir, &profile("jetson-orin-nano"), &board(engine), &tests, 2).unwrap());
    }
    assert_eq!(rows.len(), 6);
    for r in &rows {
        if r.test == "pp512" {
            assert_eq!(r.status, Status::Skipped);
            assert_eq!(r.error.as_deref(), Some("needs 513 positions, the model has 64"));
        } else {
            assert_eq!(r.status, Status::Ok, "{r:?}");
            assert!(r.tok_s.unwrap().mean > 0.0 && r.peak_heap.unwrap() > 0, "{r:?}");
        }
    }
    let csv = render(&rows, Format::Csv);
    assert_eq!(csv.lines().count(), 7, "{csv}");
    // Commas inside quoted fields (the skip reason has one) do not separate.
    let fields = |line: &str| 1 + line.split('"').step_by(2).map(|outside| outside.matches(',').count()).sum::<usize>();
    assert!(csv.lines().all(|l| fields(l) == 12), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&render(&rows, Format::Json)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d+\.\d+ ± \d+\.\d+", "[t/s]");
    settings.add_filter(r"\d+(\.\d+)? (B|KiB|MiB|GiB)", "[bytes]");
    // Threads are the profile's cores or this machine's, whichever is fewer.
    settings.add_filter(r"\| \d+ \| (pp|tg)", "| [threads] | $1");
    settings.bind(|| insta::assert_snapshot!(render(&rows, Format::Md)));
}

#[test]
fn sweep_tests_parse_and_bad_ones_say_what_is_expected() {
    use edgehil::sweep::Test;
    assert_eq!("pp512".parse::<Test>(), Ok(Test::Pp(512)));
    assert_eq!("tg128".parse::<Test>(), Ok(Test::Tg(128)));
    for bad in ["pp0", "tg", "x128", "pp-1"] {
        let e = bad.parse::<Test>().unwrap_err();
        assert!(e.contains(bad) && e.contains("ppN or tgN"), "{e}");
    }
}
