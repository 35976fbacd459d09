//! `edgehil generate`: a language model writing on a board, timed as
//! llama-bench times it (prompt and generation tok/s, mean ± sd over
//! repetitions) and checked against the same generation on the host.

use std::io::Write;
use std::path::{Path, PathBuf};

use edgehil_hil::HilError;
use edgehil_hil::Target;
use edgehil_runtime::engine::{self, EngineError, LoadOptions};
use edgehil_runtime::generate::{self, GenerateError};
use edgehil_runtime::wire::{EngineKind, GenParams, GenReport};
use serde::{Deserialize, Serialize};

use crate::profile::Profile;
use crate::report::{limit_name, BoardSummary, LinkSummary, LoadSummary, Memory, Status, VmSummary};
use crate::run::{on_board, verdict, BoardOptions, BoardRun};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateHostError {
    /// the model folder lacks a file generation needs
    #[error("{path}: {reason}")]
    Folder { path: PathBuf, reason: String },
    /// tokenizer.json could not be read or used
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    /// the prompt and the new tokens do not fit the model's context
    #[error(
        "prompt of {prompt} tokens + {max_new} new tokens = {} exceeds the context of {model} ({context} positions)",
        prompt + max_new
    )]
    ContextTooLong { model: PathBuf, prompt: u64, max_new: u64, context: u64 },
    /// the host's own generation failed
    #[error("host reference with {path}: {cause}")]
    Reference { path: PathBuf, cause: GenerateError },
}

/// A model folder's tokenizer (`tokenizer.json`, Hugging Face `tokenizers`),
/// its end-of-sequence token and chat template (`tokenizer_config.json`).
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pub eos: Option<u32>,
    config: serde_json::Value,
}

impl TextTokenizer {
    pub fn load(dir: &Path) -> Result<Self, GenerateHostError> {
        let path = dir.join("tokenizer.json");
        let err = |reason: String| GenerateHostError::Tokenizer { path: path.clone(), reason };
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        let config = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .unwrap_or_default();
        let mut t = Self { inner, path, eos: None, config };
        t.eos = t.special("eos_token").and_then(|name| t.inner.token_to_id(&name));
        Ok(t)
    }

    /// A special token of tokenizer_config.json, given as a string or {"content": ..}.
    fn special(&self, key: &str) -> Option<String> {
        let e = &self.config[key];
        e.as_str().or_else(|| e["content"].as_str()).map(str::to_string)
    }

    /// `user` as the one message of a chat, rendered by the model's chat
    /// template (tokenizer_config.json's `chat_template`, as transformers'
    /// `apply_chat_template` with `add_generation_prompt`).
    pub fn chat_prompt(&self, user: &str) -> Result<String, GenerateHostError> {
        let config = self.path.with_file_name("tokenizer_config.json");
        let err = |reason: String| GenerateHostError::Tokenizer { path: config.clone(), reason };
        let template = self.config["chat_template"]
            .as_str()
            .ok_or_else(|| err("no `chat_template`: the model has no chat format to apply (drop --chat)".into()))?;
        let mut env = minijinja::Environment::new();
        env.add_template("chat", template).map_err(|e| err(format!("`chat_template`: {e}")))?;
        let context = minijinja::context! {
            messages => [minijinja::context! { role => "user", content => user }],
            add_generation_prompt => true,
            bos_token => self.special("bos_token").unwrap_or_default(),
            eos_token => self.special("eos_token").unwrap_or_default(),
        };
        env.get_template("chat").and_then(|t| t.render(context)).map_err(|e| err(format!("`chat_template`: {e}")))
    }

    /// Cuts every encoding to `max` tokens, special tokens kept (what
    /// sentence-transformers' max_seq_length does).
    pub fn truncate(&mut self, max: usize) {
        let params = tokenizers::TruncationParams { max_length: max, ..Default::default() };
        // Only a stride of at least max_length is refused; the default is 0.
        let _ = self.inner.with_truncation(Some(params));
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, GenerateHostError> {
        let enc = self.inner.encode(text, true).map_err(|e| self.error(e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, GenerateHostError> {
        self.inner.decode(ids, true).map_err(|e| self.error(e))
    }

    fn error(&self, e: tokenizers::Error) -> GenerateHostError {
        GenerateHostError::Tokenizer { path: self.path.clone(), reason: e.to_string() }
    }
}

/// Prints text as tokens arrive. Byte-level tokens can split a character,
/// so each step decodes everything so far and prints what is new.
pub struct Streamer<'t, W: Write> {
    tokenizer: &'t TextTokenizer,
    ids: Vec<u32>,
    printed: usize,
    out: W,
}

impl<'t, W: Write> Streamer<'t, W> {
    pub fn new(tokenizer: &'t TextTokenizer, out: W) -> Self {
        Self { tokenizer, ids: Vec::new(), printed: 0, out }
    }

    pub fn push(&mut self, id: u32) {
        self.ids.push(id);
        let Ok(text) = self.tokenizer.decode(&self.ids) else { return };
        // Hold back a trailing replacement character: the rest of it may come next.
        let ready = text.trim_end_matches('\u{fffd}');
        if ready.len() > self.printed && ready.is_char_boundary(self.printed) {
            let _ = write!(self.out, "{}", &ready[self.printed..]);
            let _ = self.out.flush();
            self.printed = ready.len();
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// A folder written by `edgehil export`.
    pub model: PathBuf,
    /// The fp32 export of the same model, for teacher-forced agreement.
    pub reference: Option<PathBuf>,
    /// With a reference: a text both models are scored on, teacher-forced.
    pub text: Option<PathBuf>,
    pub prompt: String,
    pub params: GenParams,
    /// Stop at the tokenizer's end-of-sequence token.
    pub stop_at_eos: bool,
    /// Tokenize the prompt and decode the output on the board too, and
    /// check both against the host's.
    pub tokenize_on_board: bool,
    pub reps: u32,
    pub board: BoardOptions,
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len() as f64;
        if values.is_empty() {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n;
        let var =
            if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Some(Self { mean, sd: var.sqrt() })
    }
}

/// llama-bench's figures over the repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speed {
    pub reps: u32,
    pub time_to_first_token_ms: MeanSd,
    /// Prompt tokens / prefill time (llama-bench pp).
    pub prompt_tok_s: MeanSd,
    /// Tokens after the first / their time (llama-bench tg); none if only one token came.
    pub generation_tok_s: Option<MeanSd>,
}

impl Speed {
    pub fn of(reports: &[GenReport]) -> Option<Self> {
        let ms = |n: u64| n as f64 / 1e6;
        let ttft: Vec<f64> = reports.iter().map(|r| ms(r.first_token_nanos)).collect();
        let pp: Vec<f64> =
            reports.iter().map(|r| f64::from(r.prompt_tokens) / (r.prefill_nanos as f64 / 1e9)).collect();
        let tg: Vec<f64> = reports
            .iter()
            .filter(|r| r.generated > 1 && r.decode_nanos > 0)
            .map(|r| f64::from(r.generated - 1) / (r.decode_nanos as f64 / 1e9))
            .collect();
        Some(Self {
            reps: reports.len() as u32,
            time_to_first_token_ms: MeanSd::of(&ttft)?,
            prompt_tok_s: MeanSd::of(&pp)?,
            generation_tok_s: MeanSd::of(&tg),
        })
    }
}

/// The board's own tokenizer against the host's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardTokenizer {
    pub same_ids: bool,
    pub same_text: bool,
    /// The first repetition's output as the board decoded it.
    pub text: String,
}

/// How the board's tokens compare with the host's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// The engine the host reference ran.
    pub host_engine: EngineKind,
    /// Every repetition gave the host's tokens.
    pub same_tokens: bool,
    /// The first index where the first repetition differs from the host.
    pub first_difference: Option<u32>,
    /// With a reference model: the share of generated positions where this
    /// model's top-1, fed the board's tokens, equals the reference's.
    pub teacher_forced_top1: Option<f64>,
    /// With a reference model and a text: both models on the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextAgreement>,
}

/// A model and its reference fed the same tokens (on the host, with the board's engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextAgreement {
    /// The text file, for a text; none for the generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Tokens predicted (all but the first).
    pub predicted: u32,
    /// Share of them where the model's top-1 equals the reference's.
    pub top1: f64,
    /// exp(mean negative log-likelihood of the tokens that came).
    pub perplexity: f64,
    pub reference_perplexity: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateReport {
    pub model: String,
    pub reference: Option<String>,
    pub profile: String,
    #[serde(with = "crate::text")]
    pub target: Target,
    pub engine: EngineKind,
    pub status: Status,
    pub error: Option<String>,
    pub params: GenParams,
    pub prompt: String,
    pub prompt_tokens: u32,
    /// The first repetition's tokens and their text.
    pub tokens: Vec<u32>,
    pub text: String,
    pub board: Option<BoardSummary>,
    pub load: Option<LoadSummary>,
    pub speed: Option<Speed>,
    /// The KV cache at the last token; the peaks below include it.
    pub kv_cache_bytes: Option<u64>,
    pub memory: Memory,
    pub agreement: Option<Agreement>,
    pub board_tokenizer: Option<BoardTokenizer>,
    pub link: LinkSummary,
    /// A QEMU board's VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSummary>,
}

fn host_engine(board: &BoardOptions, path: &Path) -> Result<Box<dyn engine::Engine>, EngineError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = LoadOptions {
        engine: board.engine,
        opt_level: board.opt_level,
        threads,
        ort_library: board.ort_library.clone(),
    };
    engine::load(path, &opts)
}

/// A model fed known tokens (teacher-forced), on the host with the board's engine.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherForced {
    /// Its top-1 for each next token.
    pub top1: Vec<u32>,
    /// Mean negative log-likelihood of the tokens that came, in nats.
    pub nll: f64,
}

impl TeacherForced {
    /// `model` (a `model.onnx`) fed `ids`, scored from position `from` (≥ 1) on.
    pub fn of(board: &BoardOptions, model: &Path, ids: &[u32], from: usize) -> Result<Self, GenerateHostError> {
        let reference_err = |cause: GenerateError| GenerateHostError::Reference { path: model.into(), cause };
        let mut engine = host_engine(board, model).map_err(|e| reference_err(e.into()))?;
        let (logits, vocab) = generate::logits_of(engine.as_mut(), ids).map_err(reference_err)?;
        let greedy = GenParams { temperature: 0.0, ..GenParams::STUDY };
        let (mut top1, mut nll) = (Vec::new(), 0.0);
        for (row, next) in logits.chunks(vocab).skip(from - 1).zip(&ids[from..]) {
            top1.push(generate::pick(row, &greedy, &mut generate::Rng::new(0)));
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_sum = row.iter().map(|l| f64::from(l - max).exp()).sum::<f64>().ln() + f64::from(max);
            nll += log_sum - f64::from(row[*next as usize]);
        }
        Ok(Self { nll: nll / top1.len().max(1) as f64, top1 })
    }

    /// This model's agreement with `reference` fed the same tokens.
    pub fn against(&self, reference: &TeacherForced) -> TextAgreement {
        let same = self.top1.iter().zip(&reference.top1).filter(|(a, b)| a == b).count();
        TextAgreement {
            file: None,
            predicted: self.top1.len() as u32,
            top1: same as f64 / self.top1.len().max(1) as f64,
            perplexity: self.nll.exp(),
            reference_perplexity: reference.nll.exp(),
        }
    }
}

/// What generation needs from a model folder's manifest.
#[derive(Debug, Clone, Copy)]
pub struct ModelFacts {
    pub vocab: u64,
    /// Positions the model can attend to.
    pub context: u64,
}

pub fn model_manifest(dir: &Path) -> Result<ModelFacts, GenerateHostError> {
    let path = dir.join(edgehil_onnx::export::MANIFEST);
    let manifest: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| GenerateHostError::Folder {
        path: path.clone(),
        reason: "missing or not JSON; this takes a folder written by `edgehil export`".into(),
    })?;
    let field = |name: &str| {
        manifest["config"][name]
            .as_u64()
            .ok_or_else(|| GenerateHostError::Folder { path: path.clone(), reason: format!("no config.{name}") })
    };
    Ok(ModelFacts { vocab: field("vocab")?, context: field("max_positions")? })
}

/// Generates on the board `reps` times and on the host once; `on_token`
/// sees the first repetition's tokens as the board sends them.
pub fn generate(
    opts: &GenerateOptions,
    profile: &Profile,
    mut on_token: impl FnMut(u32),
) -> Result<GenerateReport, GenerateHostError> {
    let board = &opts.board;
    let tokenizer = TextTokenizer::load(&opts.model)?;
    let prompt = tokenizer.encode(&opts.prompt)?;
    let context = model_manifest(&opts.model)?.context;
    if prompt.len() as u64 + u64::from(opts.params.max_new) > context {
        return Err(GenerateHostError::ContextTooLong {
            model: opts.model.clone(),
            prompt: prompt.len() as u64,
            max_new: opts.params.max_new.into(),
            context,
        });
    }
    let params = GenParams { eos: if opts.stop_at_eos { tokenizer.eos } else { None }, ..opts.params };
    let onnx = opts.model.join("model.onnx");
    // Read before the board runs, so a text that cannot be scored fails first.
    let text_ids = match (&opts.reference, &opts.text) {
        (Some(_), Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| GenerateHostError::Folder { path: file.clone(), reason: e.to_string() })?;
            let ids = tokenizer.encode(&text)?;
            if ids.len() < 2 || ids.len() as u64 > context {
                return Err(GenerateHostError::Folder {
                    path: file.clone(),
                    reason: format!("{} tokens: a text to score takes 2 to {context} (the model's context)", ids.len()),
                });
            }
            Some((file, ids))
        }
        _ => None,
    };

    // The host reference: the same loop and engine, in this process, uncapped.
    let reference_err = |cause: GenerateError| GenerateHostError::Reference { path: onnx.clone(), cause };
    let mut host = host_engine(board, &onnx).map_err(|e| reference_err(e.into()))?;
    let host_tokens = generate::generate(host.as_mut(), &prompt, &params, |_, _, _| Ok::<(), ()>(()))
        .map_err(reference_err)?
        .map(|(tokens, _)| tokens)
        .unwrap_or_default();
    drop(host);

    let mut got = BoardRun::default();
    let mut runs: Vec<(Vec<u32>, GenReport)> = Vec::new();
    let mut board_ids: Option<Vec<u32>> = None;
    let mut board_text: Option<String> = None;
    let (outcome, link_stats) = on_board(board, profile, &onnx, &mut got, |session, _| {
        if opts.tokenize_on_board {
            let ids = session.set_prompt_text(&opts.prompt)?;
            // Generation runs on the host's ids, so a difference shows here and nowhere else.
            if ids != prompt {
                session.set_prompt(&prompt)?;
            }
            board_ids = Some(ids);
        } else {
            session.set_prompt(&prompt)?;
        }
        for rep in 0..opts.reps.max(1) {
            let run = session.generate(params, |_, id, _| {
                if rep == 0 {
                    on_token(id)
                }
            })?;
            runs.push(run);
        }
        if opts.tokenize_on_board {
            board_text = Some(session.detokenize(&runs[0].0)?);
        }
        Ok::<(), HilError>(())
    });
    let reports: Vec<GenReport> = runs.iter().map(|(_, r)| *r).collect();
    let peak = |f: fn(&GenReport) -> u64, load: Option<u64>| reports.iter().map(f).chain(load).max();
    let peaks = (
        peak(|r| r.peak_heap, got.load.as_ref().map(|l| l.peak_heap)),
        peak(|r| r.peak_rss, got.load.as_ref().map(|l| l.peak_rss)),
    );
    let (status, error, memory) = verdict(board.engine, board.cap_on(profile), &outcome, peaks);

    let first = runs.first().map(|(t, _)| t.clone()).unwrap_or_default();
    let agreement = match (&opts.reference, runs.is_empty()) {
        (_, true) => None,
        (reference, false) => {
            let agreement = |ids: &[u32], from: usize| -> Result<Option<TextAgreement>, GenerateHostError> {
                let Some(r) = reference else { return Ok(None) };
                let ours = TeacherForced::of(board, &onnx, ids, from)?;
                Ok(Some(ours.against(&TeacherForced::of(board, &r.join("model.onnx"), ids, from)?)))
            };
            let generated: Vec<u32> = prompt.iter().chain(&first).copied().collect();
            let teacher_forced_top1 = match first.is_empty() {
                true => None,
                false => agreement(&generated, prompt.len())?.map(|a| a.top1),
            };
            let text = match text_ids {
                Some((file, ids)) => {
                    agreement(&ids, 1)?.map(|a| TextAgreement { file: Some(file.display().to_string()), ..a })
                }
                None => None,
            };
            Some(Agreement {
                host_engine: board.engine,
                same_tokens: runs.iter().all(|(t, _)| *t == host_tokens),
                first_difference: first
                    .iter()
                    .zip(&host_tokens)
                    .position(|(a, b)| a != b)
                    .or((first.len() != host_tokens.len()).then_some(first.len().min(host_tokens.len())))
                    .map(|i| i as u32),
                teacher_forced_top1,
                text,
            })
        }
    };
    let text = tokenizer.decode(&first)?;
    let board_tokenizer = match (board_ids, board_text) {
        (Some(ids), Some(board_text)) => {
            Some(BoardTokenizer { same_ids: ids == prompt, same_text: board_text == text, text: board_text })
        }
        _ => None,
    };
    Ok(GenerateReport {
        model: opts.model.display().to_string(),
        reference: opts.reference.as_ref().map(|r| r.display().to_string()),
        profile: profile.name.clone(),
        target: board.target.clone(),
        engine: board.engine,
        status,
        error,
        params,
        prompt: opts.prompt.clone(),
        prompt_tokens: prompt.len() as u32,
        text,
        tokens: first,
        board: got.board_summary(),
        load: got.load_summary(),
        speed: Speed::of(&reports),
        kv_cache_bytes: reports.last().map(|r| r.kv_bytes),
        memory,
        agreement,
        board_tokenizer,
        link: got.link_summary(link_stats),
        vm: got.vm,
    })
}

impl GenerateReport {
    /// The report for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(
            s,
            "generate {} on {} ({}, {}): {}",
            self.model,
            self.profile,
            self.target,
            self.engine.name(),
            self.status.name()
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error       {e}");
        }
        let _ = writeln!(s, "  prompt      {} tokens: {:?}", self.prompt_tokens, self.prompt);
        let _ = writeln!(
            s,
            "  generated   {} tokens (temperature {}, top-k {}, top-p {}, seed {}, max {}): {:?}",
            self.tokens.len(),
            p.temperature,
            p.top_k,
            p.top_p,
            p.seed,
            p.max_new,
            self.text
        );
        if let Some(sp) = &self.speed {
            let tg = sp.generation_tok_s.map_or("-".to_string(), |t| format!("{:.1} ± {:.1}", t.mean, t.sd));
            let _ = writeln!(
                s,
                "  speed       first token {:.1} ± {:.1} ms, prompt {:.1} ± {:.1} tok/s, generation {tg} tok/s ({} reps){}",
                sp.time_to_first_token_ms.mean,
                sp.time_to_first_token_ms.sd,
                sp.prompt_tok_s.mean,
                sp.prompt_tok_s.sd,
                sp.reps,
                crate::report::timing_note(&self.target)
            );
        }
        let m = &self.memory;
        let bytes = crate::units::human_bytes_or_dash;
        let _ = writeln!(
            s,
            "  memory      peak heap {}, peak RSS {}, KV cache {} (in the peaks); {} {}: {}",
            bytes(m.peak_heap),
            bytes(m.peak_rss),
            bytes(self.kv_cache_bytes),
            limit_name(m.limit),
            crate::units::human_bytes(m.cap_bytes as f64),
            match (m.fits, m.headroom_pct) {
                (true, Some(h)) => format!("fits, {h:.0}% headroom"),
                _ => "does not fit".to_string(),
            }
        );
        if let Some(a) = &self.agreement {
            let same = if a.same_tokens {
                format!("same tokens as the host ({})", a.host_engine.name())
            } else {
                format!("differs from the host ({}) at token {:?}", a.host_engine.name(), a.first_difference)
            };
            let tf = a
                .teacher_forced_top1
                .map(|t| format!("; teacher-forced top-1 vs the reference: {:.1}%", 100.0 * t))
                .unwrap_or_default();
            let _ = writeln!(s, "  agreement   {same}{tf}");
            if let Some(t) = &a.text {
                let _ = writeln!(
                    s,
                    "  text        {}: {} tokens teacher-forced, top-1 vs the reference {:.1}%, perplexity {:.3} (reference {:.3}, ratio {:.3})",
                    t.file.as_deref().unwrap_or("-"),
                    t.predicted,
                    100.0 * t.top1,
                    t.perplexity,
                    t.reference_perplexity,
                    t.perplexity / t.reference_perplexity
                );
            }
        }
        if let Some(b) = &self.board_tokenizer {
            let verdict = |same: bool| if same { "same as the host's" } else { "DIFFERENT from the host's" };
            let _ = writeln!(
                s,
                "  tokenizer   on the board: prompt ids {}, decoded text {}: {:?}",
                verdict(b.same_ids),
                verdict(b.same_text),
                b.text
            );
        }
        if let Some(vm) = &self.vm {
            let _ = writeln!(s, "  vm          {}", vm.line());
        }
        s
    }
}
