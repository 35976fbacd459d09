//! `edgehil eval`: task accuracy on LaMP-format data, on the board.
//!
//! Zero-shot prompts the model with the question alone. RAG, as the study
//! did it, embeds the user's profile items with MiniLM on the board, keeps
//! the index there, retrieves the top 3 by inner product for the question
//! and puts them before it; `history_fraction` indexes a seeded random share
//! of each user's items instead of all (the study's Figure 7). LoRA runs a
//! LoRA-merged export zero-shot.
//! Classification scores accuracy and normalized accuracy (accuracy × the
//! number of choices, so chance is 1); generation scores ROUGE-1 and
//! ROUGE-L F1.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use edgehil_hil::HilError;
use edgehil_hil::Target;
use edgehil_runtime::wire::{EngineKind, GenParams};
use serde::{Deserialize, Serialize};

use crate::generate::{model_manifest, GenerateHostError, TextTokenizer};
use crate::profile::Profile;
use crate::report::{limit_name, LinkSummary, LoadSummary, Memory, Status};
use crate::run::{on_board, verdict, BoardOptions, BoardRun};

/// Items retrieved per question, as in the study.
pub const TOP_K: u16 = 3;
/// MiniLM's sequence limit (sentence-transformers' max_seq_length).
const EMBED_TOKENS: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// a task file is missing or does not parse
    #[error("{path}: {reason}")]
    Task { path: PathBuf, reason: String },
    /// the method cannot run with what was given
    #[error("{0}")]
    Method(String),
    #[error(transparent)]
    Model(#[from] GenerateHostError),
    /// the results file could not be written
    #[error("writing {path}: {reason}")]
    Results { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    ZeroShot,
    Rag,
    Lora,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    Classification { choices: Vec<String> },
    Generation,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    pub id: String,
    pub input: String,
    #[serde(default)]
    pub profile: Vec<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct Outputs {
    task: String,
    golds: Vec<Gold>,
}

#[derive(Debug, Deserialize)]
struct Gold {
    id: String,
    output: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "kind")]
enum TaskMeta {
    Classification { choices: Vec<String> },
    Generation,
}

/// A LaMP-format task folder: `questions.json`, `outputs.json` and, for
/// tasks the LaMP name does not describe, `task.json`.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub kind: Kind,
    /// Questions with their gold output.
    pub items: Vec<(Question, String)>,
}

const LAMP2_TAGS: [&str; 15] = [
    "sci-fi",
    "based on a book",
    "comedy",
    "action",
    "twist ending",
    "dystopia",
    "dark comedy",
    "classic",
    "psychology",
    "fantasy",
    "romance",
    "thought-provoking",
    "social commentary",
    "violence",
    "true story",
];

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EvalError> {
    let err = |reason: String| EvalError::Task { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    // serde_json names the line and column of what it could not read.
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

impl Task {
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        let questions: Vec<Question> = read_json(&dir.join("questions.json"))?;
        let outputs_path = dir.join("outputs.json");
        let outputs: Outputs = read_json(&outputs_path)?;
        let meta = dir.join("task.json");
        let kind = if meta.is_file() {
            match read_json::<TaskMeta>(&meta)? {
                TaskMeta::Classification { choices } if choices.len() < 2 => {
                    return Err(EvalError::Task {
                        path: meta,
                        reason: "a classification needs two choices or more".into(),
                    })
                }
                TaskMeta::Classification { choices } => Kind::Classification { choices },
                TaskMeta::Generation => Kind::Generation,
            }
        } else {
            let list = |v: &[&str]| Kind::Classification { choices: v.iter().map(|s| s.to_string()).collect() };
            match outputs.task.as_str() {
                "LaMP_1" => list(&["[1]", "[2]"]),
                "LaMP_2" => list(&LAMP2_TAGS),
                "LaMP_3" => list(&["1", "2", "3", "4", "5"]),
                "LaMP_4" | "LaMP_5" | "LaMP_6" | "LaMP_7" => Kind::Generation,
                other => {
                    return Err(EvalError::Task {
                        path: meta,
                        reason: format!("missing, and task `{other}` is not a LaMP task name that says its kind"),
                    })
                }
            }
        };
        let mut golds: BTreeMap<String, String> = outputs.golds.into_iter().map(|g| (g.id, g.output)).collect();
        let items = questions
            .into_iter()
            .map(|q| match golds.remove(&q.id) {
                Some(gold) => Ok((q, gold)),
                None => Err(EvalError::Task {
                    path: outputs_path.clone(),
                    reason: format!("no gold output for question `{}`", q.id),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { name: outputs.task, kind, items })
    }
}

/// One profile item as text: its fields but the id, in key order.
pub fn item_text(item: &BTreeMap<String, serde_json::Value>) -> String {
    item.iter()
        .filter(|(k, _)| k.as_str() != "id")
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The prompt: the retrieved items (RAG), then the question.
pub fn prompt(input: &str, retrieved: &[String]) -> String {
    if retrieved.is_empty() {
        return input.to_string();
    }
    let items: String = retrieved.iter().map(|r| format!("- {r}\n")).collect();
    format!("The user's past items:\n{items}\n{input}")
}

/// rouge-score's tokens: lower case, runs of ASCII letters and digits.
fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn f1(overlap: usize, prediction: usize, reference: usize) -> f64 {
    if overlap == 0 {
        return 0.0;
    }
    let (p, r) = (overlap as f64 / prediction as f64, overlap as f64 / reference as f64);
    2.0 * p * r / (p + r)
}

/// ROUGE-1 and ROUGE-L F1 of `prediction` against `reference`, as
/// rouge-score computes them without stemming.
pub fn rouge(reference: &str, prediction: &str) -> (f64, f64) {
    let (r, p) = (rouge_tokens(reference), rouge_tokens(prediction));
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for w in &r {
        counts.entry(w).or_default().0 += 1;
    }
    for w in &p {
        counts.entry(w).or_default().1 += 1;
    }
    let unigrams = counts.values().map(|(a, b)| a.min(b)).sum();
    // Longest common subsequence, one row at a time.
    let mut row = vec![0usize; p.len() + 1];
    for a in &r {
        let mut diagonal = 0;
        for (j, b) in p.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if a == b { diagonal + 1 } else { row[j + 1].max(row[j]) };
            diagonal = above;
        }
    }
    (f1(unigrams, p.len(), r.len()), f1(row[p.len()], p.len(), r.len()))
}

/// The choice a generated answer names: the earliest one in the text
/// (case-insensitive), the longest where two start at the same place.
pub fn chosen<'c>(answer: &str, choices: &'c [String]) -> Option<&'c String> {
    let lower = answer.to_lowercase();
    choices
        .iter()
        .filter_map(|c| lower.find(&c.to_lowercase()).map(|at| (at, std::cmp::Reverse(c.len()), c)))
        .min()
        .map(|(_, _, c)| c)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub id: String,
    pub gold: String,
    pub output: String,
    /// Classification: the choice the output names, if any.
    pub prediction: Option<String>,
    pub correct: Option<bool>,
    pub rouge_1: Option<f64>,
    pub rouge_l: Option<f64>,
    /// RAG: the profile items put in the prompt, best first.
    pub retrieved: Vec<String>,
    pub prompt_tokens: u32,
    /// Prompt tokens cut from the front to fit the context.
    pub truncated: u32,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub items: usize,
    pub scored: usize,
    pub accuracy: Option<f64>,
    pub normalized_accuracy: Option<f64>,
    pub rouge_1: Option<f64>,
    pub rouge_l: Option<f64>,
}

/// The profile items RAG indexes for one question: a random share
/// `fraction` (0 to 1) of them, rounded to the nearest item, in their
/// history order. The draw depends on `seed` and the question's id only, so
/// each user keeps the same share across models and runs; 1.0 keeps all.
pub fn history_share(items: usize, fraction: f64, seed: u64, question: &str) -> Vec<usize> {
    let keep = ((items as f64 * fraction).round() as usize).min(items);
    // FNV-1a of the id, so users with the same number of items draw differently.
    let id = question.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = edgehil_onnx::rng::SplitMix64::new(seed ^ id);
    let mut order: Vec<usize> = (0..items).collect();
    // The first `keep` steps of a Fisher–Yates shuffle draw `keep` items without repeats.
    for i in 0..keep {
        let j = i + (rng.next_u64() % (items - i) as u64) as usize;
        order.swap(i, j);
    }
    let mut share = order[..keep].to_vec();
    share.sort_unstable();
    share
}

/// The RAG index on the board, reported on its own line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMemory {
    pub embedder: String,
    pub most_items: u32,
    pub most_bytes: u64,
    /// The board's peak heap while indexing (index, embedder activations and all).
    pub peak_heap_while_indexing: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub task: String,
    pub kind: Kind,
    pub method: Method,
    /// The prompts were put in the model's chat format.
    #[serde(default)]
    pub chat: bool,
    pub model: String,
    pub profile: String,
    #[serde(with = "crate::text")]
    pub target: Target,
    pub engine: EngineKind,
    pub status: Status,
    pub error: Option<String>,
    pub params: GenParams,
    /// RAG: the share of each user's history indexed (drawn with `params.seed`).
    #[serde(default = "all_history")]
    pub history_fraction: f64,
    pub scores: Scores,
    pub index: Option<IndexMemory>,
    pub load: Option<LoadSummary>,
    pub memory: Memory,
    pub link: LinkSummary,
    pub results: Vec<ItemResult>,
}

fn all_history() -> f64 {
    1.0
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub task: PathBuf,
    pub method: Method,
    /// An `edgehil export` folder; for LoRA, a LoRA-merged one.
    pub model: PathBuf,
    /// The MiniLM export for RAG.
    pub embedder: Option<PathBuf>,
    pub params: GenParams,
    /// RAG: the share (0 to 1) of each user's history to index; 1 is all of it.
    pub history_fraction: f64,
    /// Put each prompt in the model's chat format (its chat template, as a
    /// user message): instruction-tuned models answer the question then.
    pub chat: bool,
    /// Stop at the tokenizer's end-of-sequence token.
    pub stop_at_eos: bool,
    pub board: BoardOptions,
    /// Each item's result is appended here (JSON lines) as it completes.
    pub journal: Option<PathBuf>,
}

fn scores(kind: &Kind, results: &[ItemResult]) -> Scores {
    let ok: Vec<&ItemResult> = results.iter().filter(|r| r.error.is_none()).collect();
    let mean = |f: &dyn Fn(&ItemResult) -> Option<f64>| {
        let v: Vec<f64> = ok.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let accuracy = mean(&|r| r.correct.map(|c| f64::from(u8::from(c))));
    let normalized_accuracy = match kind {
        Kind::Classification { choices } => accuracy.map(|a| a * choices.len() as f64),
        Kind::Generation => None,
    };
    Scores {
        items: results.len(),
        scored: ok.len(),
        accuracy,
        normalized_accuracy,
        rouge_1: mean(&|r| r.rouge_1),
        rouge_l: mean(&|r| r.rouge_l),
    }
}

/// Why one item has no score: the board failed (the run stops), or the
/// item itself could not be put to the model (the run goes on).
enum ItemError {
    Board(HilError),
    Item(String),
}

impl From<HilError> for ItemError {
    fn from(e: HilError) -> Self {
        ItemError::Board(e)
    }
}

impl From<GenerateHostError> for ItemError {
    fn from(e: GenerateHostError) -> Self {
        ItemError::Item(e.to_string())
    }
}

/// Puts one question to the board and scores the answer into `result`.
#[allow(clippy::too_many_arguments)]
fn answer(
    session: &mut edgehil_hil::Session,
    kind: &Kind,
    question: &Question,
    gold: &str,
    embedder: &Option<(PathBuf, TextTokenizer)>,
    index: Option<&mut IndexMemory>,
    tokenizer: &TextTokenizer,
    chat: bool,
    room: usize,
    params: GenParams,
    history_fraction: f64,
    result: &mut ItemResult,
    peaks: &mut (u64, u64),
) -> Result<(), ItemError> {
    if let (Some((_, embed_tok)), Some(index)) = (embedder, index) {
        session.index_clear()?;
        let share = history_share(question.profile.len(), history_fraction, params.seed, &question.id);
        for &i in &share {
            let (items, bytes, peak) = session.index_add(&embed_tok.encode(&item_text(&question.profile[i]))?)?;
            index.most_items = index.most_items.max(items);
            index.most_bytes = index.most_bytes.max(bytes);
            index.peak_heap_while_indexing = index.peak_heap_while_indexing.max(peak);
        }
        // An empty share has nothing to retrieve: the question goes alone, as zero-shot.
        if !share.is_empty() {
            let top = session.retrieve(&embed_tok.encode(&question.input)?, TOP_K)?;
            // The board numbers the items it indexed; a number it made up is dropped, not trusted.
            result.retrieved = top
                .iter()
                .filter_map(|(i, _)| share.get(*i as usize))
                .map(|&i| item_text(&question.profile[i]))
                .collect();
        }
    }
    let text = prompt(&question.input, &result.retrieved);
    let text = if chat { tokenizer.chat_prompt(&text)? } else { text };
    let mut ids = tokenizer.encode(&text)?;
    // Keep the end, where the question is (and, in chat format, the assistant's turn).
    let cut = ids.len().saturating_sub(room);
    ids.drain(..cut);
    result.truncated = cut as u32;
    result.prompt_tokens = ids.len() as u32;
    if ids.is_empty() {
        return Err(ItemError::Item(format!("question `{}` has an empty prompt", question.id)));
    }
    session.set_prompt(&ids)?;
    let (tokens, report) = session.generate(params, |_, _, _| {})?;
    *peaks = (peaks.0.max(report.peak_heap), peaks.1.max(report.peak_rss));
    result.output = tokenizer.decode(&tokens)?;
    match kind {
        Kind::Classification { choices } => {
            result.prediction = chosen(&result.output, choices).cloned();
            result.correct = Some(result.prediction.as_deref() == Some(gold));
        }
        Kind::Generation => {
            let (r1, rl) = rouge(gold, &result.output);
            (result.rouge_1, result.rouge_l) = (Some(r1), Some(rl));
        }
    }
    Ok(())
}

/// Runs the task on the board; every item's result is kept (and journaled)
/// as it completes, so a board that fails midway loses nothing before it.
pub fn eval(opts: &EvalOptions, profile: &Profile) -> Result<EvalReport, EvalError> {
    let task = Task::load(&opts.task)?;
    let board = &opts.board;
    let manifest_path = opts.model.join(edgehil_onnx::export::MANIFEST);
    if opts.method == Method::Lora {
        let manifest: serde_json::Value = std::fs::read_to_string(&manifest_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if manifest["lora"].is_null() {
            return Err(EvalError::Method(format!(
                "--method lora needs a LoRA-merged export (`edgehil export --lora ADAPTER`); {} has no LoRA",
                manifest_path.display()
            )));
        }
    }
    if !(0.0..=1.0).contains(&opts.history_fraction) {
        return Err(EvalError::Method(format!(
            "--history-fraction {}: expected a share of each user's history from 0.0 to 1.0",
            opts.history_fraction
        )));
    }
    if opts.method != Method::Rag && opts.history_fraction != 1.0 {
        return Err(EvalError::Method(
            "--history-fraction applies to --method rag: the other methods put no history in the prompt".into(),
        ));
    }
    let embedder = match (opts.method, &opts.embedder) {
        (Method::Rag, Some(e)) => {
            let mut t = TextTokenizer::load(e)?;
            t.truncate(EMBED_TOKENS);
            Some((e.clone(), t))
        }
        (Method::Rag, None) => {
            return Err(EvalError::Method(
                "--method rag needs --embedder DIR: MiniLM exported with `edgehil export`".into(),
            ))
        }
        _ => None,
    };
    let tokenizer = TextTokenizer::load(&opts.model)?;
    if opts.chat {
        // A model without a chat format is refused before the board, not on every item.
        tokenizer.chat_prompt("")?;
    }
    let params = GenParams { eos: if opts.stop_at_eos { tokenizer.eos } else { None }, ..opts.params };
    let context = model_manifest(&opts.model)?.context;
    let room = context.checked_sub(u64::from(opts.params.max_new)).filter(|r| *r > 0).ok_or_else(|| {
        EvalError::Method(format!(
            "--max-new {} leaves no room for a prompt in the context of {} ({context} positions)",
            opts.params.max_new,
            opts.model.display()
        ))
    })? as usize;
    let mut journal = match &opts.journal {
        Some(path) => Some((
            path.clone(),
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| EvalError::Results { path: path.clone(), reason: e.to_string() })?,
        )),
        None => None,
    };

    let mut got = BoardRun::default();
    let mut results: Vec<ItemResult> = Vec::new();
    let mut index: Option<IndexMemory> = None;
    let mut journal_error = None;
    // (heap, resident set) peaks over the generations.
    let mut peaks = (0, 0);
    let (outcome, link_stats) = on_board(board, profile, &opts.model.join("model.onnx"), &mut got, |session, got| {
        if let Some((dir, _)) = &embedder {
            let threads = got.load.as_ref().map_or(1, |l| l.threads);
            let path = board.place(session, &dir.join("model.onnx"), &mut got.upload)?;
            session.load_embedder(&path, board.engine, threads)?;
            index = Some(IndexMemory {
                embedder: dir.display().to_string(),
                most_items: 0,
                most_bytes: 0,
                peak_heap_while_indexing: 0,
            });
        }
        for (question, gold) in &task.items {
            let mut result = ItemResult {
                id: question.id.clone(),
                gold: gold.clone(),
                output: String::new(),
                prediction: None,
                correct: None,
                rouge_1: None,
                rouge_l: None,
                retrieved: Vec::new(),
                prompt_tokens: 0,
                truncated: 0,
                error: None,
            };
            let stop = match answer(
                session,
                &task.kind,
                question,
                gold,
                &embedder,
                index.as_mut(),
                &tokenizer,
                opts.chat,
                room,
                params,
                opts.history_fraction,
                &mut result,
                &mut peaks,
            ) {
                Ok(()) => None,
                Err(ItemError::Item(e)) => {
                    result.error = Some(e);
                    None
                }
                Err(ItemError::Board(e)) => {
                    result.error = Some(e.to_string());
                    Some(e)
                }
            };
            if let Some((path, file)) = journal.as_mut() {
                let line = serde_json::to_string(&result).unwrap_or_default();
                if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                    journal_error = Some(EvalError::Results { path: path.clone(), reason: e.to_string() });
                }
            }
            results.push(result);
            if let Some(e) = stop {
                return Err(e);
            }
        }
        Ok::<(), HilError>(())
    });
    let load = got.load.as_ref();
    let index_heap = index.as_ref().map_or(0, |i| i.peak_heap_while_indexing);
    let peaks = (load.map(|l| l.peak_heap.max(peaks.0).max(index_heap)), load.map(|l| l.peak_rss.max(peaks.1)));
    let (status, error, memory) = verdict(board.engine, board.cap_on(profile), &outcome, peaks);
    // The results are all here; a journal that could not be written is said, not fatal.
    let error = error.or(journal_error.map(|e| e.to_string()));
    Ok(EvalReport {
        task: task.name.clone(),
        scores: scores(&task.kind, &results),
        kind: task.kind,
        method: opts.method,
        chat: opts.chat,
        model: opts.model.display().to_string(),
        profile: profile.name.clone(),
        target: board.target.clone(),
        engine: board.engine,
        status,
        error,
        params,
        history_fraction: opts.history_fraction,
        index,
        load: got.load_summary(),
        memory,
        link: got.link_summary(link_stats),
        results,
    })
}

impl EvalReport {
    /// The report for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let method = serde_json::to_value(self.method).ok().and_then(|v| v.as_str().map(str::to_string));
        let _ = writeln!(
            s,
            "eval {} ({}{}) with {} on {} ({}, {}): {}",
            self.task,
            method.unwrap_or_default(),
            if self.chat { ", chat" } else { "" },
            self.model,
            self.profile,
            self.target,
            self.engine.name(),
            self.status.name()
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error       {e}");
        }
        let sc = &self.scores;
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let _ = writeln!(s, "  items       {} ({} scored)", sc.items, sc.scored);
        match &self.kind {
            Kind::Classification { choices } => {
                let _ = writeln!(
                    s,
                    "  accuracy    {}, normalized {} ({} choices; 1.00 is chance)",
                    pct(sc.accuracy),
                    sc.normalized_accuracy.map_or("-".to_string(), |v| format!("{v:.2}")),
                    choices.len()
                );
            }
            Kind::Generation => {
                let _ = writeln!(s, "  rouge       ROUGE-1 F1 {}, ROUGE-L F1 {}", pct(sc.rouge_1), pct(sc.rouge_l));
            }
        }
        if let Some(i) = &self.index {
            let _ = writeln!(
                s,
                "  history     {:.0}% of each user's items indexed (seed {})",
                100.0 * self.history_fraction,
                self.params.seed
            );
            let _ = writeln!(
                s,
                "  rag index   up to {} items, {} on the board (peak heap while indexing {})",
                i.most_items,
                crate::units::human_bytes(i.most_bytes as f64),
                crate::units::human_bytes(i.peak_heap_while_indexing as f64)
            );
        }
        let bytes = crate::units::human_bytes_or_dash;
        let _ = writeln!(
            s,
            "  memory      peak heap {}, peak RSS {} (load, index and generation); {} {}",
            bytes(self.memory.peak_heap),
            bytes(self.memory.peak_rss),
            limit_name(self.memory.limit),
            crate::units::human_bytes(self.memory.cap_bytes as f64)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rouge_matches_rouge_score() {
        // Reference values from rouge-score 0.1.2:
        // RougeScorer(["rouge1", "rougeL"], use_stemmer=False).score(reference, prediction).
        let cases = [
            ("the cat sat on the mat", "the cat lay on the mat", 0.833333, 0.833333),
            ("Deep learning for edge devices: a survey", "A survey of deep learning on edge devices", 0.8, 0.533333),
            ("police killed the gunman", "the gunman police killed", 1.0, 0.5),
            ("Hello, World!", "hello world", 1.0, 1.0),
            ("nothing in common", "entirely different words", 0.0, 0.0),
        ];
        for (reference, prediction, r1, rl) in cases {
            let (a, b) = rouge(reference, prediction);
            assert!((a - r1).abs() < 1e-6 && (b - rl).abs() < 1e-6, "{reference:?} / {prediction:?}: {a} {b}");
        }
    }

    #[test]
    fn a_history_share_is_seeded_and_sized_by_the_fraction() {
        assert_eq!(history_share(20, 1.0, 7, "u1"), (0..20).collect::<Vec<_>>(), "all of it, in order");
        assert!(history_share(20, 0.0, 7, "u1").is_empty());
        let half = history_share(20, 0.5, 7, "u1");
        assert_eq!(half.len(), 10);
        assert!(half.windows(2).all(|w| w[0] < w[1]) && half.iter().all(|&i| i < 20), "{half:?}");
        assert_eq!(half, history_share(20, 0.5, 7, "u1"), "the same seed draws the same share");
        assert_ne!(half, history_share(20, 0.5, 7, "u2"), "another user draws another share");
        assert_ne!(half, history_share(20, 0.5, 8, "u1"), "another seed draws another share");
        // Rounded to the nearest item.
        assert_eq!(history_share(3, 0.5, 7, "u1").len(), 2);
        assert_eq!(history_share(0, 0.5, 7, "u1").len(), 0);
    }

    #[test]
    fn the_earliest_named_choice_wins() {
        let choices: Vec<String> = ["comedy", "dark comedy", "horror"].iter().map(|s| s.to_string()).collect();
        assert_eq!(chosen("It is a Dark Comedy, not horror", &choices).map(String::as_str), Some("dark comedy"));
        assert_eq!(chosen("horror, or comedy", &choices).map(String::as_str), Some("horror"));
        assert_eq!(chosen("no idea", &choices), None);
    }
}
