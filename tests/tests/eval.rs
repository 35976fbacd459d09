//! Task evaluation on LaMP-format data, and retrieval with real MiniLM held
//! on the emulated board.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{binary, board, export_to, minilm_dir, profile, reference_dir, scratch_dir};
use edgehil::eval::{eval, EvalError, EvalOptions, Method};
use edgehil::generate::TextTokenizer;
use edgehil::report::Status;
use edgehil_hil::{EmulatedBoard, EmulatorConfig, Session, Timeouts};
use edgehil_onnx::export::{export, ExportOptions};
use edgehil_runtime::wire::{EngineKind, GenParams};

pub fn sample(task: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/lamp-sample").join(task)
}

/// MiniLM exported once per test process (the tests run in parallel).
fn minilm() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = scratch_dir("eval").join("minilm");
        export(&minilm_dir(), &out, ExportOptions::default()).unwrap();
        out
    })
    .clone()
}

#[test]
fn retrieval_over_minilm_on_the_board_finds_the_hand_picked_items() {
    let items = [
        "How to reset a forgotten email password",
        "Recipe for a chocolate cake with strawberries",
        "The puppy learned to fetch the ball in the park",
        "Train delays expected on the northern line tomorrow",
        "Tips for growing tomatoes on a sunny balcony",
        "The stock market fell sharply after the bank report",
    ];
    // Each query paraphrases one item and shares few words with it.
    let queries = [
        ("I can't log in because I lost my passcode", 0),
        ("baking a dessert with berries", 1),
        ("my young dog plays catch outdoors", 2),
        ("rail services will run late", 3),
        ("vegetable gardening in a small apartment", 4),
        ("shares dropped once the financial results came out", 5),
    ];
    let dir = minilm();
    let tokenizer = TextTokenizer::load(&dir).unwrap();
    let agent = EmulatedBoard::spawn(&EmulatorConfig {
        agent: binary("edgehil-agent"),
        cap: 512 << 20,
        threads: 1,
        ort_library: None,
        storage: false,
        extra_args: vec![],
    })
    .unwrap();
    let mut s = Session::new(Box::new(agent), Timeouts { request: Duration::from_secs(120), ..Timeouts::default() });
    s.hello().unwrap();
    s.load_embedder(&dir.join("model.onnx").display().to_string(), EngineKind::Tract, 1).unwrap();
    let mut indexed = (0, 0, 0);
    for item in items {
        indexed = s.index_add(&tokenizer.encode(item).unwrap()).unwrap();
    }
    // What the plan reserves per history item is what the board holds.
    assert_eq!((indexed.0, indexed.1), (6, 6 * edgehil::plan::RAG_BYTES_PER_ITEM), "six 384-d vectors on the board");
    for (query, expected) in queries {
        let top = s.retrieve(&tokenizer.encode(query).unwrap(), 3).unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].0, expected, "{query:?} → {top:?}");
        assert!(top[0].1 > top[1].1 && top[1].1 >= top[2].1, "best first: {top:?}");
    }
    s.shutdown().unwrap();
}

fn options(task: &str, method: Method, model: &Path) -> EvalOptions {
    EvalOptions {
        task: sample(task),
        method,
        model: model.to_path_buf(),
        embedder: (method == Method::Rag).then(minilm),
        params: GenParams { max_new: 8, temperature: 0.0, ..GenParams::STUDY },
        history_fraction: 1.0,
        chat: false,
        stop_at_eos: false,
        board: board(EngineKind::Tract),
        journal: None,
    }
}

#[test]
fn eval_on_the_sample_set() {
    let (lm, _) = export_to("llama-gqa", "eval", ExportOptions::default());
    let mut reports = Vec::new();
    for (task, method) in
        [("classification", Method::ZeroShot), ("classification", Method::Rag), ("generation", Method::Rag)]
    {
        let mut opts = options(task, method, &lm);
        let journal = scratch_dir("eval").join(format!("{task}-{method:?}.jsonl"));
        let _ = std::fs::remove_file(&journal);
        opts.journal = Some(journal.clone());
        let r = eval(&opts, &profile("jetson-orin-nano")).unwrap();
        assert_eq!(r.status, Status::Ok, "{:?}", r.error);
        let lines = std::fs::read_to_string(&journal).unwrap();
        assert_eq!(lines.lines().count(), r.results.len(), "one journal line per item");
        if method == Method::Rag {
            let index = r.index.as_ref().unwrap();
            assert!(index.most_bytes > 0 && index.most_bytes <= r.memory.peak_heap.unwrap());
            assert!(r.results.iter().all(|i| i.retrieved.len() == 3));
        }
        reports.push(r);
    }
    insta::assert_json_snapshot!(reports, {
        "[].model" => "[model]",
        "[].index.embedder" => "[embedder]",
        "[].index.peak_heap_while_indexing" => "[bytes]",
        "[].load" => "[load]",
        "[].memory.peak_heap" => "[bytes]",
        "[].memory.peak_rss" => "[bytes]",
        "[].memory.headroom_bytes" => "[bytes]",
        "[].memory.headroom_pct" => "[pct]",
        "[].memory.cap_bytes" => "[bytes]",
        "[].link" => "[link]",
    });
}

#[test]
fn rag_uploads_the_embedder_beside_the_language_model_and_answers_the_same() {
    let (lm, _) = export_to("llama-gqa", "eval-upload", ExportOptions::default());
    let local = eval(&options("classification", Method::Rag, &lm), &profile("jetson-orin-nano")).unwrap();
    let mut opts = options("classification", Method::Rag, &lm);
    opts.board.upload = edgehil::run::Upload::Always;
    let uploaded = eval(&opts, &profile("jetson-orin-nano")).unwrap();
    assert_eq!(uploaded.status, Status::Ok, "{:?}", uploaded.error);
    let up = uploaded.link.upload.as_ref().unwrap();
    // model.onnx, model.onnx.data and tokenizer.json of each: the embedder went too.
    assert_eq!((up.files, up.reused), (6, 0), "{up:?}");
    assert!(up.chunks > 0);
    assert_eq!(uploaded.results, local.results);
}

#[test]
fn lora_needs_a_lora_merged_export() {
    let (plain, _) = export_to("llama-gqa", "eval-plain", ExportOptions::default());
    let err = eval(&options("classification", Method::Lora, &plain), &profile("jetson-orin-nano")).unwrap_err();
    assert!(matches!(err, EvalError::Method(_)) && err.to_string().contains("edgehil.json has no LoRA"), "{err}");
    let lora = ExportOptions { lora: Some(reference_dir("llama-gqa-lora")), ..Default::default() };
    let (merged, _) = export_to("llama-gqa", "eval-lora", lora);
    let r = eval(&options("classification", Method::Lora, &merged), &profile("jetson-orin-nano")).unwrap();
    assert_eq!((r.status, r.scores.scored), (Status::Ok, 6));
}

#[test]
fn a_task_that_does_not_parse_names_the_file_and_place() {
    let dir = scratch_dir("eval").join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(sample("classification/outputs.json"), dir.join("outputs.json")).unwrap();
    std::fs::copy(sample("classification/task.json"), dir.join("task.json")).unwrap();
    std::fs::write(dir.join("questions.json"), "[{\"id\": \"q1\", \"input\": \"x\",}]").unwrap();
    let (lm, _) = export_to("llama-gqa", "eval-broken", ExportOptions::default());
    let mut opts = options("classification", Method::ZeroShot, &lm);
    opts.task = dir.clone();
    let err = eval(&opts, &profile("jetson-orin-nano")).unwrap_err().to_string();
    assert!(err.contains("questions.json") && err.contains("line 1 column"), "{err}");
    std::fs::write(dir.join("questions.json"), "[{\"id\": \"nobody\", \"input\": \"x\"}]").unwrap();
    let err = eval(&opts, &profile("jetson-orin-nano")).unwrap_err().to_string();
    assert!(err.contains("outputs.json") && err.contains("no gold output for question `nobody`"), "{err}");
}

#[test]
fn rag_without_an_embedder_is_refused_before_the_board() {
    let (lm, _) = export_to("llama-gqa", "eval-noembed", ExportOptions::default());
    let mut opts = options("classification", Method::Rag, &lm);
    opts.embedder = None;
    let err = eval(&opts, &profile("jetson-orin-nano")).unwrap_err().to_string();
    assert!(err.contains("--embedder"), "{err}");
}

#[test]
fn rag_over_a_share_of_each_users_history() {
    let (lm, _) = export_to("llama-gqa", "eval-history", ExportOptions::default());
    let nano = profile("jetson-orin-nano");
    let run = |method: Method, fraction: f64| {
        let mut opts = options("classification", method, &lm);
        opts.history_fraction = fraction;
        let r = eval(&opts, &nano).unwrap();
        assert_eq!(r.status, Status::Ok, "{:?}", r.error);
        r
    };
    // No history: nothing indexed or retrieved, the prompt is the question alone, as zero-shot's.
    let none = run(Method::Rag, 0.0);
    assert!(none.results.iter().all(|i| i.retrieved.is_empty()));
    assert_eq!(none.index.as_ref().map(|i| i.most_items), Some(0));
    let zero_shot = run(Method::ZeroShot, 1.0);
    let outputs = |r: &edgehil::eval::EvalReport| r.results.iter().map(|i| i.output.clone()).collect::<Vec<_>>();
    assert_eq!(outputs(&none), outputs(&zero_shot));
    // Half of each user's 4 items: 2 indexed, the top 3 of them are those 2, from the user's own share.
    let half = run(Method::Rag, 0.5);
    assert_eq!(half.index.as_ref().map(|i| i.most_items), Some(2));
    let questions: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(sample("classification/questions.json")).unwrap()).unwrap();
    for (item, q) in half.results.iter().zip(&questions) {
        let profile: Vec<_> = serde_json::from_value(q["profile"].clone()).unwrap();
        let share = edgehil::eval::history_share(4, 0.5, half.params.seed, &item.id);
        let mut got: Vec<String> = item.retrieved.clone();
        let mut want: Vec<String> = share.iter().map(|&i| edgehil::eval::item_text(&profile[i])).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}", item.id);
    }
    // All of it is what RAG did before the fraction existed: every item indexed.
    let all = run(Method::Rag, 1.0);
    assert_eq!(all.index.as_ref().map(|i| i.most_items), Some(4));
    assert!(all.results.iter().all(|i| i.retrieved.len() == 3));
    // The share is in the report, for machines and for people.
    assert_eq!(serde_json::to_value(&half).unwrap()["history_fraction"], 0.5);
    assert!(half.table().contains("history     50% of each user's items indexed (seed 0)"), "{}", half.table());
}

#[test]
fn a_history_fraction_outside_0_to_1_or_without_rag_is_refused() {
    let (lm, _) = export_to("llama-gqa", "eval-history-bad", ExportOptions::default());
    let mut opts = options("classification", Method::Rag, &lm);
    opts.history_fraction = 1.5;
    let err = eval(&opts, &profile("jetson-orin-nano")).unwrap_err().to_string();
    assert!(err.contains("--history-fraction 1.5: expected a share"), "{err}");
    let mut opts = options("classification", Method::ZeroShot, &lm);
    opts.history_fraction = 0.5;
    let err = eval(&opts, &profile("jetson-orin-nano")).unwrap_err().to_string();
    assert!(err.contains("applies to --method rag"), "{err}");
}
