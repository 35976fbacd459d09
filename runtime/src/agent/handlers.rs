//! What the agent does for each command: the board's side of the
//! protocol, apart from the link (in `mod.rs`).

use std::boxed::Box;
use std::io;
use std::path::PathBuf;
use std::string::ToString;
use std::time::Instant;
use std::vec::Vec;

use super::store::Store;
use super::{AgentConfig, Answer};
use crate::cap::CappedAlloc;
use crate::engine::{self, Engine, EngineError, LoadOptions};
use crate::generate::{self, GenerateError};
use crate::retrieve::{self, Index};
use crate::wire::{
    stage_input, AgentError, AgentStats, BoardInfo, Command, Event, GenParams, GenReport, InferReport, LoadReport,
    MemLimit, OutputMode, Tensor,
};

/// Counters the agent reports in `Stats`; the link side counts frames and replays.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) requests: u32,
    pub(super) bad_frames: u32,
    pub(super) replays: u32,
}

/// What the board holds between commands.
pub(super) struct State {
    config: AgentConfig,
    alloc: &'static CappedAlloc<crate::sys::MapLarge>,
    engine: Option<Box<dyn Engine>>,
    staged: Vec<Option<Tensor>>,
    prompt: Vec<u32>,
    embedder: Option<Box<dyn Engine>>,
    index: Index,
    /// The tokenizer.json beside the loaded model, if there is one.
    tokenizer: Option<tokenizers::Tokenizer>,
    pub(super) stats: Stats,
    data_limit: Option<u64>,
    /// Uploaded files.
    store: Store,
}

impl State {
    pub(super) fn new(config: AgentConfig, alloc: &'static CappedAlloc<crate::sys::MapLarge>) -> Self {
        State {
            store: Store::new(config.storage.clone()),
            config,
            alloc,
            engine: None,
            staged: Vec::new(),
            prompt: Vec::new(),
            embedder: None,
            index: Index::default(),
            tokenizer: None,
            stats: Stats::default(),
            data_limit: None,
        }
    }

    /// Handles one command; errors here are link errors, not request errors.
    pub(super) fn handle(&mut self, command: Command, answer: &mut Answer) -> io::Result<()> {
        let event = match command {
            Command::Hello { protocol_version } if protocol_version != self.config.protocol_version => {
                Event::Error(AgentError::VersionMismatch {
                    agent: self.config.protocol_version,
                    host: protocol_version,
                })
            }
            Command::Hello { .. } => Event::HelloAck(self.board_info()),
            Command::Load { path, engine, opt_level, threads } => {
                self.engine = None;
                self.staged.clear();
                let threads = usize::from(threads).clamp(1, self.config.threads.max(1));
                let opts = LoadOptions { engine, opt_level, threads, ort_library: self.config.ort_library.clone() };
                self.load(PathBuf::from(path), &opts).unwrap_or_else(Event::Error)
            }
            Command::SetInput { index, chunk } => {
                stage_input(&mut self.staged, usize::from(index), chunk).map_or_else(Event::Error, |()| Event::Done)
            }
            Command::Infer { runs, warmup, outputs } => match self.infer(runs, warmup, outputs, answer)? {
                Ok(report) => Event::InferDone(report),
                Err(e) => Event::Error(e),
            },
            Command::SetPrompt { offset, ids } => {
                if offset == 0 {
                    self.prompt.clear();
                }
                if offset as usize == self.prompt.len() {
                    self.prompt.extend(ids);
                    Event::Done
                } else {
                    Event::Error(AgentError::BadRequest(std::format!(
                        "prompt chunk at offset {offset} does not follow the {} ids staged",
                        self.prompt.len()
                    )))
                }
            }
            Command::SetPromptText { text } => match self.tokenizer().and_then(|t| {
                t.encode(text, true)
                    .map_err(|e| AgentError::BadRequest(std::format!("cannot tokenize the prompt: {e}")))
            }) {
                Ok(enc) => {
                    self.prompt = enc.get_ids().to_vec();
                    Event::Tokens { ids: self.prompt.clone() }
                }
                Err(e) => Event::Error(e),
            },
            Command::Detokenize { ids } => self
                .tokenizer()
                .and_then(|t| {
                    t.decode(&ids, true).map_err(|e| AgentError::BadRequest(std::format!("cannot decode {ids:?}: {e}")))
                })
                .map_or_else(Event::Error, Event::Text),
            Command::Generate(params) => match self.generate(&params, answer)? {
                Ok(report) => Event::GenerateDone(report),
                Err(e) => Event::Error(e),
            },
            Command::LoadEmbedder { path, engine, threads } => {
                self.embedder = None;
                self.index.clear();
                let threads = usize::from(threads).clamp(1, self.config.threads.max(1));
                let opts = LoadOptions {
                    engine,
                    opt_level: crate::wire::OptLevel::All,
                    threads,
                    ort_library: self.config.ort_library.clone(),
                };
                match engine::load(std::path::Path::new(&path), &opts) {
                    Ok(e) => {
                        self.embedder = Some(e);
                        self.indexed()
                    }
                    Err(e) => Event::Error(self.engine_error(e)),
                }
            }
            Command::IndexAdd { ids } => match self.embed(&ids) {
                Ok(v) => match self.index.add(v) {
                    Ok(()) => self.indexed(),
                    Err(e) => Event::Error(self.engine_error(e)),
                },
                Err(e) => Event::Error(e),
            },
            Command::IndexClear => {
                self.index.clear();
                self.indexed()
            }
            Command::Retrieve { ids, k } => match self.embed(&ids) {
                Ok(q) => {
                    let (items, scores) = self.index.top(&q, usize::from(k)).into_iter().unzip();
                    Event::Retrieved { items, scores }
                }
                Err(e) => Event::Error(e),
            },
            Command::Upload { folder, name, size, sha256 } => {
                self.store.start(self.alloc, &folder, name, size, sha256).unwrap_or_else(Event::Error)
            }
            Command::UploadChunk { offset, bytes } => {
                self.store.chunk(self.alloc, offset, &bytes).unwrap_or_else(Event::Error)
            }
            Command::Stats => Event::Stats(AgentStats {
                requests: self.stats.requests,
                bad_frames: self.stats.bad_frames,
                replays: self.stats.replays,
                heap_in_use: self.alloc.in_use() as u64,
                peak_heap: self.alloc.peak() as u64,
                peak_rss: crate::sys::peak_rss(),
                cap: self.alloc.cap() as u64,
            }),
            Command::Unload => {
                // Everything a model brought: its engine, inputs, prompt, tokenizer, embedder and index.
                self.engine = None;
                self.staged.clear();
                self.prompt = Vec::new();
                self.tokenizer = None;
                self.embedder = None;
                self.index.clear();
                Event::Done
            }
            Command::Shutdown => Event::Done,
            Command::Resend { .. } => Event::Error(AgentError::BadRequest("a resend inside a resend".to_string())),
        };
        answer.emit(event)
    }

    fn board_info(&self) -> BoardInfo {
        let (ram_total, ram_free) = crate::sys::ram();
        BoardInfo {
            protocol_version: self.config.protocol_version,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cores: self.config.threads as u16,
            ram_total,
            ram_free,
            cap: self.alloc.cap() as u64,
            engines: engine::available(),
            storage: self.config.storage.is_some(),
            clock_hz: 0,
            flash_total: 0,
        }
    }

    fn engine_error(&self, e: EngineError) -> AgentError {
        match e {
            EngineError::OutOfMemory(message) => AgentError::OutOfMemory {
                requested: requested_bytes(&message),
                in_use: crate::sys::data_bytes(),
                cap: self.data_limit.unwrap_or(0),
                limit: MemLimit::ProcessData,
            },
            EngineError::Load { .. } | EngineError::Unavailable { .. } => AgentError::ModelLoad(e.to_string()),
            EngineError::Inputs(_) => AgentError::BadRequest(e.to_string()),
            EngineError::Run(_) => AgentError::Engine(e.to_string()),
        }
    }

    fn load(&mut self, path: PathBuf, opts: &LoadOptions) -> Result<Event, AgentError> {
        if opts.engine == crate::wire::EngineKind::Ort && self.alloc.cap() != 0 && self.data_limit.is_none() {
            // ONNX Runtime mallocs outside the capped allocator: hold it with a
            // process data limit of the cap's remaining room plus its thread
            // stacks (8 MiB each, reserved whole by glibc).
            let room = (self.alloc.cap() - self.alloc.in_use()) as u64;
            let stacks = 8 * 1024 * 1024 * (opts.threads as u64 + 1);
            self.data_limit = Some(crate::sys::limit_data(room + stacks).map_err(AgentError::ModelLoad)?);
        }
        self.alloc.reset_peak();
        let started = Instant::now();
        let engine = engine::load(&path, opts).map_err(|e| self.engine_error(e))?;
        // An exported folder carries its tokenizer; a bare model has none.
        let tokenizer_path = path.with_file_name("tokenizer.json");
        self.tokenizer =
            match tokenizer_path.is_file() {
                true => Some(tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
                    AgentError::ModelLoad(std::format!("cannot read {}: {e}", tokenizer_path.display()))
                })?),
                false => None,
            };
        let load_nanos = started.elapsed().as_nanos() as u64;
        let report = LoadReport {
            engine: opts.engine,
            opt_level: engine.info().opt_level,
            threads: opts.threads as u16,
            load_nanos,
            weight_bytes: engine.info().weight_bytes,
            peak_heap: self.alloc.peak() as u64,
            peak_rss: crate::sys::peak_rss(),
            inputs: engine.info().inputs.clone(),
            outputs: engine.info().outputs.clone(),
        };
        self.staged = std::vec![None; report.inputs.len()];
        self.engine = Some(engine);
        Ok(Event::Loaded(report))
    }

    /// Runs; the outer error is the link's, the inner one the request's.
    fn infer(
        &mut self,
        runs: u32,
        warmup: u32,
        mode: OutputMode,
        answer: &mut Answer,
    ) -> io::Result<Result<InferReport, AgentError>> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(Err(AgentError::BadRequest("no model loaded".to_string())));
        };
        let inputs: Option<Vec<Tensor>> = self.staged.iter().cloned().collect();
        let Some(inputs) = inputs else {
            return Ok(Err(AgentError::BadRequest("not every input has been staged".to_string())));
        };
        if let Err(e) = engine.set_inputs(&inputs) {
            return Ok(Err(self.engine_error(e)));
        }
        self.alloc.reset_peak();
        for index in 0..warmup + runs {
            let started = Instant::now();
            if let Err(e) = engine.run() {
                let e = self.engine_error(e);
                return Ok(Err(e));
            }
            let nanos = started.elapsed().as_nanos() as u64;
            answer.emit(Event::Run { index, warmup: index < warmup, nanos, cycles: None })?;
        }
        let outputs = match engine.take_outputs() {
            Ok(o) => o,
            Err(e) => return Ok(Err(self.engine_error(e))),
        };
        for (index, t) in outputs.iter().enumerate() {
            for part in t.output_parts(index as u16, mode) {
                answer.emit(Event::Output(part))?;
            }
        }
        Ok(Ok(InferReport { runs, peak_heap: self.alloc.peak() as u64, peak_rss: crate::sys::peak_rss() }))
    }
}

impl State {
    fn tokenizer(&self) -> Result<&tokenizers::Tokenizer, AgentError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| AgentError::BadRequest("no tokenizer.json beside the loaded model".to_string()))
    }

    fn indexed(&self) -> Event {
        Event::Indexed {
            items: self.index.len() as u32,
            bytes: self.index.bytes(),
            peak_heap: self.alloc.peak() as u64,
        }
    }

    fn embed(&mut self, ids: &[u32]) -> Result<Vec<f32>, AgentError> {
        let Some(embedder) = self.embedder.as_mut() else {
            return Err(AgentError::BadRequest("no embedder loaded (LoadEmbedder)".to_string()));
        };
        retrieve::embed(embedder.as_mut(), ids).map_err(|e| self.engine_error(e))
    }

    /// Generates from the staged prompt, sending each token as it is picked.
    fn generate(&mut self, params: &GenParams, answer: &mut Answer) -> io::Result<Result<GenReport, AgentError>> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(Err(AgentError::BadRequest("no model loaded".to_string())));
        };
        self.alloc.reset_peak();
        let result = generate::generate(engine.as_mut(), &self.prompt, params, |index, id, nanos| {
            answer.emit(Event::Token { index, id, nanos })
        });
        match result {
            Ok(Ok((_, report))) => {
                Ok(Ok(GenReport { peak_heap: self.alloc.peak() as u64, peak_rss: crate::sys::peak_rss(), ..report }))
            }
            Ok(Err(link)) => Err(link),
            Err(GenerateError::Engine(e)) => Ok(Err(self.engine_error(e))),
            Err(e) => Ok(Err(AgentError::BadRequest(e.to_string()))),
        }
    }
}

/// "... of size 12345 ..." in an ONNX Runtime allocation error; 0 if absent.
fn requested_bytes(message: &str) -> u64 {
    message.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse::<u64>().ok()).max().unwrap_or(0)
}
