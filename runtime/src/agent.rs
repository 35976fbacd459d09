//! The agent loop: read requests from a link, answer with events.
//!
//! One request is worked on at a time. Every answer is recorded, so a
//! request the host sends again (same id) after losing a frame is answered
//! by replaying the record, not by running the model twice. While a request
//! is being worked on, a heartbeat goes out every [`HEARTBEAT`] so the host
//! can tell a slow board from a hung one.

use std::boxed::Box;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::string::ToString;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::cap::{CappedAlloc, Refusal};
use crate::engine::{self, Engine, EngineError, LoadOptions};
use crate::generate::{self, GenerateError};
use crate::retrieve::{self, Index};
use crate::wire::{
    encode_frame, encode_frame_into, AgentError, AgentStats, BoardInfo, Command, Digest, Event, FrameDecoder,
    GenParams, GenReport, InferReport, LoadReport, MemLimit, OutputMode, OutputPart, Request, Tensor, ToHost, Values,
    MAX_PAYLOAD,
};

pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// After a generation's first token, tokens go out together at most this
/// often. Each write wakes the host (and, on a pty, a kernel worker), which
/// on an emulated board whose cores the engine fills takes an engine thread
/// off its core: about 0.1 ms a token measured against a 12 ms GPT-2 int4
/// step here. 20 updates a second still read as a stream; the board times
/// each token.
pub const STREAM_EVERY: Duration = Duration::from_millis(50);

/// Exit code of an agent stopped by its memory cap.
pub const EXIT_OUT_OF_MEMORY: i32 = 86;

// What the refusal hook needs to send its frame without allocating.
static OUT_FD: AtomicI32 = AtomicI32::new(-1);
static CURRENT_ID: AtomicU32 = AtomicU32::new(0);
static CURRENT_SEQ: AtomicU32 = AtomicU32::new(0);

/// Token frames held back by [`STREAM_EVERY`]. Atomic bytes in a static, so
/// the refusal hook can send them before its own frame without allocating:
/// an out-of-memory stop must not lose tokens already picked.
struct Held {
    bytes: [AtomicU8; HELD_BYTES],
    len: AtomicUsize,
}

const HELD_BYTES: usize = 2048;
static HELD: Held = Held { bytes: [const { AtomicU8::new(0) }; HELD_BYTES], len: AtomicUsize::new(0) };

impl Held {
    /// Appends a frame; false (nothing appended) if it does not fit.
    fn push(&self, frame: &[u8]) -> bool {
        let len = self.len.load(Ordering::Acquire);
        if len + frame.len() > HELD_BYTES {
            return false;
        }
        for (slot, b) in self.bytes[len..].iter().zip(frame) {
            slot.store(*b, Ordering::Relaxed);
        }
        self.len.store(len + frame.len(), Ordering::Release);
        true
    }

    /// Copies the held bytes into `out` and returns how many; keeps them.
    fn copy_to(&self, out: &mut [u8]) -> usize {
        let len = self.len.load(Ordering::Acquire).min(out.len());
        for (o, slot) in out[..len].iter_mut().zip(&self.bytes) {
            *o = slot.load(Ordering::Relaxed);
        }
        len
    }

    fn clear(&self) {
        self.len.store(0, Ordering::Release);
    }
}

/// The allocator's refusal hook: sends `OutOfMemory` on the link and ends
/// the process. Uses only stack buffers and raw `write(2)`.
pub fn report_refusal(r: Refusal) {
    let fd = OUT_FD.load(Ordering::SeqCst);
    let msg = ToHost::Event {
        id: CURRENT_ID.load(Ordering::SeqCst),
        seq: CURRENT_SEQ.load(Ordering::SeqCst),
        event: Event::Error(AgentError::OutOfMemory {
            requested: r.requested as u64,
            in_use: r.in_use as u64,
            cap: r.cap as u64,
            limit: MemLimit::Heap,
        }),
    };
    let mut scratch = [0u8; 128];
    let mut frame = [0u8; 160];
    let mut held = [0u8; HELD_BYTES];
    let held_len = HELD.copy_to(&mut held);
    if fd >= 0 {
        if let Ok(n) = encode_frame_into(&msg, &mut scratch, &mut frame) {
            // A leading delimiter ends any frame another thread had half written.
            // SAFETY: writes from valid stack buffers to a descriptor we own.
            unsafe {
                libc::write(fd, [0u8].as_ptr().cast(), 1);
                libc::write(fd, held.as_ptr().cast(), held_len);
                libc::write(fd, frame.as_ptr().cast(), n);
            }
        }
    }
    // SAFETY: ends the process without running destructors, which could allocate.
    unsafe { libc::_exit(EXIT_OUT_OF_MEMORY) }
}

/// How the agent was started.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Upper bound on engine threads (the board's cores).
    pub threads: usize,
    pub ort_library: Option<PathBuf>,
    /// The protocol version this agent claims. Only a test of the version
    /// check sets it to anything but [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
}

struct Writer {
    out: Box<dyn Write + Send>,
}

impl Writer {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.out.write_all(frame)?;
        self.out.flush()
    }
}

/// Serves requests until `Shutdown` or the end of input.
///
/// `out_fd` is the descriptor behind `writer`, for the out-of-memory path.
pub fn serve(
    mut reader: impl Read,
    writer: Box<dyn Write + Send>,
    out_fd: i32,
    alloc: &'static CappedAlloc<crate::sys::MapLarge>,
    config: AgentConfig,
) -> io::Result<()> {
    OUT_FD.store(out_fd, Ordering::SeqCst);
    let writer = Arc::new(Mutex::new(Writer { out: writer }));
    let busy = Arc::new(AtomicBool::new(false));
    spawn_heartbeat(writer.clone(), busy.clone());
    let mut state = State {
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
    };
    // The last request and its answer's frames. A replay needs the same id
    // *and* the same command: a new host session numbers from 1 again.
    let mut last: Option<(Request, Vec<Vec<u8>>)> = None;
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let mut requests = Vec::new();
        decoder.feed::<Request>(&buf[..n], |r| match r {
            Ok(req) => requests.push(req),
            Err(_) => state.stats.bad_frames += 1,
        });
        for req in requests {
            let (req, missing) = match req {
                Request { id, command: Command::Resend { missing, command } } => {
                    (Request { id, command: *command }, Some(missing))
                }
                plain => (plain, None),
            };
            if let Some((done, frames)) = &last {
                if *done == req {
                    state.stats.replays += 1;
                    let mut w = writer.lock().expect("writer lock");
                    let end = frames.len().saturating_sub(1) as u32;
                    for (seq, f) in (0u32..).zip(frames) {
                        if seq == end || missing.as_ref().is_none_or(|m| m.contains(seq)) {
                            w.send(f)?;
                        }
                    }
                    continue;
                }
            }
            state.stats.requests += 1;
            CURRENT_ID.store(req.id, Ordering::SeqCst);
            CURRENT_SEQ.store(0, Ordering::SeqCst);
            busy.store(true, Ordering::SeqCst);
            let mut answer = Answer::new(req.id, &writer, STREAM_EVERY);
            let shutdown = matches!(req.command, Command::Shutdown);
            let result = state.handle(req.command.clone(), &mut answer);
            busy.store(false, Ordering::SeqCst);
            result?;
            last = Some((req, answer.frames));
            if shutdown {
                return Ok(());
            }
        }
    }
}

fn spawn_heartbeat(writer: Arc<Mutex<Writer>>, busy: Arc<AtomicBool>) {
    let started = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(HEARTBEAT);
        if busy.load(Ordering::SeqCst) {
            let msg = ToHost::Heartbeat {
                id: CURRENT_ID.load(Ordering::SeqCst),
                elapsed_ms: started.elapsed().as_millis() as u32,
            };
            if let Ok(frame) = encode_frame(&msg) {
                if writer.lock().expect("writer lock").send(&frame).is_err() {
                    return;
                }
            }
        }
    });
}

/// The events answering one request, sent as they come (tokens at most
/// every `stream_every` after the first) and recorded.
struct Answer<'a> {
    id: u32,
    frames: Vec<Vec<u8>>,
    writer: &'a Mutex<Writer>,
    stream_every: Duration,
    /// When frames last went out; none yet for this answer.
    sent_at: Option<Instant>,
}

impl<'a> Answer<'a> {
    fn new(id: u32, writer: &'a Mutex<Writer>, stream_every: Duration) -> Self {
        Self { id, frames: Vec::new(), writer, stream_every, sent_at: None }
    }

    fn emit(&mut self, event: Event) -> io::Result<()> {
        let seq = self.frames.len() as u32;
        let token = matches!(event, Event::Token { .. });
        let mut msg = ToHost::Event { id: self.id, seq, event };
        let frame = encode_frame(&msg)
            .or_else(|_| {
                if let ToHost::Event { event, .. } = &mut msg {
                    *event = too_large(event);
                }
                encode_frame(&msg)
            })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        CURRENT_SEQ.store(seq + 1, Ordering::SeqCst);
        let due = self.sent_at.is_none_or(|t| t.elapsed() >= self.stream_every);
        if !(token && !due && HELD.push(&frame)) {
            // What is held goes first: the host delivers events in order.
            let mut out = std::vec![0u8; HELD.len.load(Ordering::Acquire)];
            let held = HELD.copy_to(&mut out);
            out.truncate(held);
            out.extend_from_slice(&frame);
            self.writer.lock().expect("writer lock").send(&out)?;
            HELD.clear();
            self.sent_at = Some(Instant::now());
        }
        self.frames.push(frame);
        Ok(())
    }
}

#[derive(Default)]
struct Stats {
    requests: u32,
    bad_frames: u32,
    replays: u32,
}

struct State {
    config: AgentConfig,
    alloc: &'static CappedAlloc<crate::sys::MapLarge>,
    engine: Option<Box<dyn Engine>>,
    staged: Vec<Option<Tensor>>,
    prompt: Vec<u32>,
    embedder: Option<Box<dyn Engine>>,
    index: Index,
    /// The tokenizer.json beside the loaded model, if there is one.
    tokenizer: Option<tokenizers::Tokenizer>,
    stats: Stats,
    data_limit: Option<u64>,
}

impl State {
    /// Handles one command; errors here are link errors, not request errors.
    fn handle(&mut self, command: Command, answer: &mut Answer) -> io::Result<()> {
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
                self.stage(usize::from(index), chunk).map_or_else(Event::Error, |()| Event::Done)
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

    fn stage(&mut self, index: usize, chunk: crate::wire::TensorChunk) -> Result<(), AgentError> {
        let slot = self
            .staged
            .get_mut(index)
            .ok_or_else(|| AgentError::BadRequest(std::format!("input index {index} with no model input there")))?;
        match slot {
            // Offset 0 always starts a tensor: an empty one staged before must not take the next.
            Some(t) if chunk.offset != 0 && chunk.offset as usize == t.values.len() && t.name == chunk.name => {
                match (&mut t.values, chunk.values) {
                    (Values::F32(a), Values::F32(b)) => a.extend(b),
                    (Values::I64(a), Values::I64(b)) => a.extend(b),
                    _ => {
                        return Err(AgentError::BadRequest(std::format!(
                            "input `{}` changed type between chunks",
                            t.name
                        )))
                    }
                }
            }
            _ if chunk.offset == 0 => {
                *slot = Some(Tensor { name: chunk.name, shape: chunk.shape, values: chunk.values })
            }
            _ => {
                return Err(AgentError::BadRequest(std::format!(
                    "chunk of `{}` at offset {} does not follow what was staged",
                    chunk.name,
                    chunk.offset
                )))
            }
        }
        Ok(())
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
            answer.emit(Event::Run { index, warmup: index < warmup, nanos })?;
        }
        let outputs = match engine.take_outputs() {
            Ok(o) => o,
            Err(e) => return Ok(Err(self.engine_error(e))),
        };
        for (index, t) in outputs.iter().enumerate() {
            for part in output_parts(index as u16, t, mode) {
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

/// What goes out in place of an event larger than one frame: the host must
/// always get an answer. An error keeps the start of its message; any other
/// event becomes an error naming it.
fn too_large(event: &Event) -> Event {
    // Room for the message in one frame, with the event's other fields.
    const KEEP: usize = 2048;
    let cut = |text: &str| {
        let end = (0..=KEEP.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        std::format!("{}… ({} more bytes cut to fit one frame)", &text[..end], text.len() - end)
    };
    let size = postcard::to_allocvec(event).map_or(0, |v| v.len());
    Event::Error(match event {
        Event::Error(AgentError::BadRequest(m)) => AgentError::BadRequest(cut(m)),
        Event::Error(AgentError::ModelLoad(m)) => AgentError::ModelLoad(cut(m)),
        Event::Error(AgentError::Engine(m)) => AgentError::Engine(cut(m)),
        other => {
            let debug = std::format!("{other:?}");
            let kind = debug.split(['(', ' ', '{']).next().unwrap_or("event");
            AgentError::BadRequest(std::format!(
                "the answer ({kind}) takes {size} bytes, more than one frame holds ({MAX_PAYLOAD}): \
                 names, prompts or ids that long cannot cross the link"
            ))
        }
    })
}

/// "... of size 12345 ..." in an ONNX Runtime allocation error; 0 if absent.
fn requested_bytes(message: &str) -> u64 {
    message.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse::<u64>().ok()).max().unwrap_or(0)
}

/// The parts of one output in the requested mode.
pub fn output_parts(index: u16, t: &Tensor, mode: OutputMode) -> Vec<OutputPart> {
    let floats: Vec<f32> = match &t.values {
        Values::F32(v) => v.clone(),
        Values::I64(v) => v.iter().map(|x| *x as f32).collect(),
    };
    match mode {
        OutputMode::Full => t.chunks().map(|chunk| OutputPart::Chunk { index, chunk }).collect(),
        OutputMode::Digest => std::vec![OutputPart::Digest {
            index,
            name: t.name.clone(),
            shape: t.shape.clone(),
            digest: Digest::of(&floats),
        }],
        OutputMode::TopK(k) => {
            let row_len = t.shape.last().copied().unwrap_or(1).max(1) as usize;
            let k = usize::from(k).clamp(1, row_len).min(MAX_PAYLOAD / 16);
            floats
                .chunks(row_len)
                .enumerate()
                .map(|(row, values)| {
                    let mut order: Vec<u32> = (0..values.len() as u32).collect();
                    order.sort_by(|a, b| values[*b as usize].total_cmp(&values[*a as usize]));
                    order.truncate(k);
                    OutputPart::TopK {
                        index,
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        row: row as u32,
                        values: order.iter().map(|i| values[*i as usize]).collect(),
                        indices: order,
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each write the agent makes to its link.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("writes").push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Answers with `tokens` tokens and `Done`: the (seq, event) pairs each write carried.
    fn writes(stream_every: Duration, tokens: u32) -> Vec<Vec<(u32, Event)>> {
        let out = Writes::default();
        let writer = Mutex::new(Writer { out: Box::new(out.clone()) });
        let mut answer = Answer::new(7, &writer, stream_every);
        for index in 0..tokens {
            answer.emit(Event::Token { index, id: 100 + index, nanos: u64::from(index) * 1000 }).expect("emit");
        }
        answer.emit(Event::Done).expect("emit");
        assert_eq!(answer.frames.len() as u32, tokens + 1, "every frame is recorded for a replay");
        let writes = out.0.lock().expect("writes").clone();
        writes
            .iter()
            .map(|bytes| {
                let mut events = Vec::new();
                FrameDecoder::new().feed::<ToHost>(bytes, |f| match f.expect("frame") {
                    ToHost::Event { id: 7, seq, event } => events.push((seq, event)),
                    other => panic!("unexpected {other:?}"),
                });
                events
            })
            .collect()
    }

    // One test, not two: the held frames are a process-wide static.
    #[test]
    fn the_first_token_goes_out_alone_and_later_ones_together_in_order() {
        let held_long = writes(Duration::from_secs(3600), 5);
        let seqs: Vec<Vec<u32>> = held_long.iter().map(|w| w.iter().map(|(s, _)| *s).collect()).collect();
        assert_eq!(seqs, [std::vec![0], std::vec![1, 2, 3, 4, 5]]);
        assert_eq!(held_long[1][3].1, Event::Token { index: 4, id: 104, nanos: 4000 });
        assert_eq!(held_long[1][4].1, Event::Done);

        let unheld = writes(Duration::ZERO, 5);
        assert_eq!(unheld.iter().map(Vec::len).collect::<Vec<_>>(), [1; 6], "each event in a write of its own");
    }
}
