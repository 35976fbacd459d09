//! Messages between host and agent, and their framing.
//!
//! A frame is `postcard(message) ++ crc32(postcard bytes, little endian)`,
//! COBS-encoded and ended by one `0x00`. COBS gives resynchronisation for
//! free (a lost byte costs one frame, not the link); the CRC catches the
//! corruption COBS cannot see. Frames have a fixed maximum size so that a
//! microcontroller can hold one in a static buffer; large tensors travel as
//! chunks of at most [`CHUNK_VALUES`] values. PROTOCOL.md (in runtime/) has
//! the details.
//!
//! `#![no_std]` + `alloc` so that the same wire types, framing and allocator
//! accounting serve a microcontroller firmware and the host: there is one
//! definition of every message, not two that drift.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;
// The `Arbitrary` derive (for fuzzing and round-trip tests) names `std`.
#[cfg(feature = "arbitrary")]
extern crate std;

pub mod call;
pub mod cap;
pub mod metrics;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Bumped on any change to the messages below; checked by `Hello`.
pub const PROTOCOL_VERSION: u16 = 6;

/// Exit code of an agent process stopped by its memory cap, after it sent
/// its `OutOfMemory` frame: a host that sees the process end with it knows
/// why even if that frame was lost.
pub const EXIT_OUT_OF_MEMORY: i32 = 86;

/// Largest encoded frame, delimiter included.
pub const MAX_FRAME: usize = 8192;

/// Values per tensor chunk: an i64 takes up to 10 bytes as a postcard
/// varint, so 512 of them leave room in a frame for names and headers.
pub const CHUNK_VALUES: usize = 512;

/// File bytes per `UploadChunk`: a frame's payload less room for the
/// request id, the offset, the length and a `Resend` wrapper (a unit test
/// checks the largest such request still fits one frame).
pub const UPLOAD_CHUNK: usize = 8064;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const CRC_LEN: usize = 4;
/// Largest postcard payload that still fits a frame after CRC and COBS overhead.
pub const MAX_PAYLOAD: usize = MAX_FRAME - 1 - CRC_LEN - cobs::max_encoding_overhead(MAX_FRAME);

/// Host → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Request {
    /// Chosen by the host; a request sent again keeps its id, and the agent
    /// answers a repeated id by replaying its recorded answer.
    pub id: u32,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Command {
    Hello {
        protocol_version: u16,
    },
    /// Load a model from a path on the device.
    Load {
        path: String,
        engine: EngineKind,
        opt_level: OptLevel,
        threads: u16,
    },
    /// One chunk of input `index`; the agent assembles chunks by offset.
    SetInput {
        index: u16,
        chunk: TensorChunk,
    },
    /// `warmup` untimed runs, then `runs` timed ones on the staged inputs.
    Infer {
        runs: u32,
        warmup: u32,
        outputs: OutputMode,
    },
    /// Prompt token ids from `offset` on; a prompt longer than one frame
    /// travels as several.
    SetPrompt {
        offset: u32,
        ids: Vec<u32>,
    },
    /// Tokenize `text` on the board with the tokenizer.json beside the
    /// loaded model and stage it as the prompt (boards with std).
    SetPromptText {
        text: String,
    },
    /// Decode token ids to text on the board.
    Detokenize {
        ids: Vec<u32>,
    },
    /// Generate from the staged prompt with the loaded language model.
    Generate(GenParams),
    /// Load a sentence-embedding model (`sentence_embedding` output) beside
    /// the language model, for retrieval; empties the index.
    LoadEmbedder {
        path: String,
        engine: EngineKind,
        threads: u16,
    },
    /// Embed one item (its token ids) and add it to the index on the board.
    IndexAdd {
        ids: Vec<u32>,
    },
    IndexClear,
    /// The `k` indexed items nearest a query by inner product.
    Retrieve {
        ids: Vec<u32>,
        k: u16,
    },
    Stats,
    Unload,
    Shutdown,
    /// `command` sent again (same request id) by a host that already has
    /// part of its answer: an agent that answered it replays only the
    /// `missing` events; one that never saw it runs it.
    Resend {
        missing: Missing,
        command: alloc::boxed::Box<Command>,
    },
    // New commands go last: postcard numbers variants in order, and the
    // bytes of the others stay as they were.
    /// Open the upload of file `name` into the board's folder `folder` (the
    /// host names it by the SHA-256 of the names and hashes of the files that
    /// go together, since an engine reads external data and tokenizer.json
    /// beside the model). Answered by `Stored`: `have == size` if the board
    /// holds that file with that SHA-256 already, else `have == 0` and the
    /// host sends the bytes with `UploadChunk`.
    Upload {
        folder: [u8; 32],
        name: String,
        size: u64,
        sha256: [u8; 32],
    },
    /// The open upload's bytes from `offset` on (at most [`UPLOAD_CHUNK`]);
    /// answered by `Stored`. The file is checked against its SHA-256 when
    /// the last byte arrives and only then put at its path.
    UploadChunk {
        offset: u64,
        bytes: Vec<u8>,
    },
}

/// The events of an answer a host lacks: those numbered in `seqs`, and
/// every one from `from` on. The last event always comes too, so that the
/// host knows at once whether a gap remains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Missing {
    pub seqs: Vec<u32>,
    pub from: u32,
}

impl Missing {
    pub fn contains(&self, seq: u32) -> bool {
        seq >= self.from || self.seqs.contains(&seq)
    }
}

/// Prompt ids per `SetPrompt` frame: a u32 takes up to 5 bytes as a varint.
pub const PROMPT_CHUNK: usize = 1024;

/// How to pick each new token. The order is Hugging Face's: temperature,
/// then top-k, then top-p (nucleus), then a draw; temperature 0 is greedy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct GenParams {
    pub max_new: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
    /// Stop after this token (the tokenizer's end of sequence), if given.
    pub eos: Option<u32>,
}

impl GenParams {
    /// The study's settings: temperature 0.1, top-p 0.9, top-k 10, 100 new tokens.
    pub const STUDY: GenParams =
        GenParams { max_new: 100, temperature: 0.1, top_k: 10, top_p: 0.9, seed: 0, eos: None };
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum StopReason {
    MaxNew,
    Eos,
}

/// The end of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct GenReport {
    pub prompt_tokens: u32,
    pub generated: u32,
    /// The prompt's forward pass.
    pub prefill_nanos: u64,
    /// Prompt in to first token out (prefill and the first pick).
    pub first_token_nanos: u64,
    /// Every step after the first token.
    pub decode_nanos: u64,
    /// The KV cache at the last step.
    pub kv_bytes: u64,
    pub peak_heap: u64,
    pub peak_rss: u64,
    pub stop: StopReason,
}

/// Agent → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ToHost {
    /// Part of the answer to request `id`; `seq` numbers the parts from 0 so
    /// the host can tell a lost part from a replayed one.
    Event { id: u32, seq: u32, event: Event },
    /// The agent is alive and working on `id`.
    Heartbeat { id: u32, elapsed_ms: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Event {
    HelloAck(BoardInfo),
    Loaded(LoadReport),
    /// One timed (or warm-up) run.
    Run {
        index: u32,
        warmup: bool,
        nanos: u64,
        /// Core cycles, where the board counts them (a microcontroller's DWT or SysTick).
        cycles: Option<u64>,
    },
    Output(OutputPart),
    InferDone(InferReport),
    /// One generated token, `nanos` after the prompt went in.
    Token {
        index: u32,
        id: u32,
        nanos: u64,
    },
    GenerateDone(GenReport),
    /// The staged prompt's ids, after `SetPromptText`.
    Tokens {
        ids: Vec<u32>,
    },
    Text(String),
    /// The index after an `IndexAdd` or `IndexClear`.
    Indexed {
        items: u32,
        /// What the index holds: items × dimensions × 4.
        bytes: u64,
        peak_heap: u64,
    },
    /// Item numbers (in the order added) and scores, best first.
    Retrieved {
        items: Vec<u32>,
        scores: Vec<f32>,
    },
    Stats(AgentStats),
    Done,
    Error(AgentError),
    /// Where an uploaded file is (or will be) on the board, and how many of
    /// its bytes the board holds: all of them once it is checked and stored.
    Stored {
        path: String,
        have: u64,
    },
}

impl Event {
    /// True for the last event of an answer.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Event::Run { .. } | Event::Output(_) | Event::Token { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
// JSON reports name them as `name()` does; postcard frames carry the index.
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Tract,
    Ort,
    /// The micro-model interpreter (`edgehil-micro`) of the microcontroller firmware.
    Micro,
}

impl EngineKind {
    /// The engines of a board with std (the Linux agent); a microcontroller runs [`EngineKind::Micro`].
    pub const ALL: [EngineKind; 2] = [EngineKind::Tract, EngineKind::Ort];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::Ort => "ort",
            EngineKind::Micro => "micro",
        }
    }
}

/// Graph optimisation level. tract always runs its own `into_optimized`
/// pipeline and reports `All`; ONNX Runtime maps these to its levels
/// (Disable, Level1, Level2, Level3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
// JSON reports name them as `name()` does; postcard frames carry the index.
#[serde(rename_all = "lowercase")]
pub enum OptLevel {
    Disabled,
    Basic,
    Extended,
    All,
}

impl OptLevel {
    pub const ALL: [OptLevel; 4] = [OptLevel::Disabled, OptLevel::Basic, OptLevel::Extended, OptLevel::All];

    pub fn name(self) -> &'static str {
        match self {
            OptLevel::Disabled => "disabled",
            OptLevel::Basic => "basic",
            OptLevel::Extended => "extended",
            OptLevel::All => "all",
        }
    }
}

/// How much of each output the agent sends back: a 50k-vocabulary logits
/// row is 200 KB, 17 s at 115200 baud, so the host may ask for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OutputMode {
    Full,
    /// The k largest values of each row of the last axis.
    TopK(u16),
    Digest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DType {
    F32,
    I64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            Values::F32(_) => DType::F32,
            Values::I64(_) => DType::I64,
        }
    }

    /// The values `[start, end)` as a new `Values` of the same type.
    pub fn slice(&self, start: usize, end: usize) -> Values {
        match self {
            Values::F32(v) => Values::F32(v[start..end].to_vec()),
            Values::I64(v) => Values::I64(v[start..end].to_vec()),
        }
    }
}

/// A tensor with its name, as both sides hold it whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub values: Values,
}

impl Tensor {
    /// Splits the tensor into chunks that each fit one frame.
    pub fn chunks(&self) -> impl Iterator<Item = TensorChunk> + '_ {
        let total = self.values.len();
        // An empty tensor still travels as one (empty) chunk.
        let starts = (0..total.max(1)).step_by(CHUNK_VALUES);
        starts.map(move |start| TensorChunk {
            name: self.name.clone(),
            shape: self.shape.clone(),
            offset: start as u32,
            values: self.values.slice(start.min(total), (start + CHUNK_VALUES).min(total)),
        })
    }
}

impl Tensor {
    /// Appends the chunk that continues this tensor: the same name, the same
    /// type, starting where the values so far end. Both the agent (inputs)
    /// and the host (outputs) assemble tensors with it.
    pub fn append(&mut self, chunk: TensorChunk) -> Result<(), ChunkError> {
        if chunk.name != self.name || chunk.offset as usize != self.values.len() {
            return Err(ChunkError::OutOfOrder { name: chunk.name, offset: chunk.offset });
        }
        match (&mut self.values, chunk.values) {
            (Values::F32(a), Values::F32(b)) => a.extend(b),
            (Values::I64(a), Values::I64(b)) => a.extend(b),
            _ => return Err(ChunkError::TypeChanged { name: chunk.name }),
        }
        Ok(())
    }
}

impl Tensor {
    /// The parts of one output in the requested mode.
    pub fn output_parts(&self, index: u16, mode: OutputMode) -> Vec<OutputPart> {
        let floats: Vec<f32> = match &self.values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|x| *x as f32).collect(),
        };
        match mode {
            OutputMode::Full => self.chunks().map(|chunk| OutputPart::Chunk { index, chunk }).collect(),
            OutputMode::Digest => alloc::vec![OutputPart::Digest {
                index,
                name: self.name.clone(),
                shape: self.shape.clone(),
                digest: Digest::of(&floats),
            }],
            OutputMode::TopK(k) => {
                let row_len = self.shape.last().copied().unwrap_or(1).max(1) as usize;
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
                            name: self.name.clone(),
                            shape: self.shape.clone(),
                            row: row as u32,
                            values: order.iter().map(|i| values[*i as usize]).collect(),
                            indices: order,
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Stages `chunk` of input `index` in `inputs` (a slot per model input), as
/// every board does with `SetInput`: offset 0 always starts a tensor (an empty
/// one staged before must not take the next), any other continues the one there.
pub fn stage_input(inputs: &mut [Option<Tensor>], index: usize, chunk: TensorChunk) -> Result<(), AgentError> {
    let slot = inputs
        .get_mut(index)
        .ok_or_else(|| AgentError::BadRequest(alloc::format!("input index {index} with no model input there")))?;
    match slot {
        _ if chunk.offset == 0 => *slot = Some(chunk.into()),
        Some(t) => t.append(chunk).map_err(|e| AgentError::BadRequest(e.to_string()))?,
        None => {
            let (name, offset) = (chunk.name, chunk.offset);
            return Err(AgentError::BadRequest(ChunkError::OutOfOrder { name, offset }.to_string()));
        }
    }
    Ok(())
}

/// The start of a tensor: its first chunk.
impl From<TensorChunk> for Tensor {
    fn from(chunk: TensorChunk) -> Self {
        Tensor { name: chunk.name, shape: chunk.shape, values: chunk.values }
    }
}

/// Why a chunk does not continue a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// a chunk that is not the next one of this tensor
    #[error("chunk of `{name}` at offset {offset} does not follow what was staged")]
    OutOfOrder { name: String, offset: u32 },
    /// a chunk of another value type
    #[error("tensor `{name}` changed type between chunks")]
    TypeChanged { name: String },
}

/// A piece of a tensor: the values from `offset` on, with the whole shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TensorChunk {
    pub name: String,
    pub shape: Vec<u64>,
    pub offset: u32,
    pub values: Values,
}

/// Part of output `index` in the requested [`OutputMode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OutputPart {
    Chunk {
        index: u16,
        chunk: TensorChunk,
    },
    /// Per row of the last axis: the indices and values of the k largest.
    TopK {
        index: u16,
        name: String,
        shape: Vec<u64>,
        row: u32,
        indices: Vec<u32>,
        values: Vec<f32>,
    },
    Digest {
        index: u16,
        name: String,
        shape: Vec<u64>,
        digest: Digest,
    },
}

/// Enough to tell two tensors apart and to see their scale, in 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Digest {
    pub count: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f32,
    pub max: f32,
    /// CRC-32 of the little-endian bytes.
    pub crc32: u32,
}

impl Digest {
    pub fn of(values: &[f32]) -> Self {
        let mut digest = CRC.digest();
        let (mut sum, mut sum_sq) = (0f64, 0f64);
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for v in values {
            digest.update(&v.to_le_bytes());
            sum += f64::from(*v);
            sum_sq += f64::from(*v) * f64::from(*v);
            min = min.min(*v);
            max = max.max(*v);
        }
        Self { count: values.len() as u64, sum, sum_sq, min, max, crc32: digest.finalize() }
    }
}

/// What the agent is and has, sent in answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BoardInfo {
    pub protocol_version: u16,
    pub agent_version: String,
    pub arch: String,
    pub cores: u16,
    pub ram_total: u64,
    pub ram_free: u64,
    /// The agent's heap cap in bytes (0: none).
    pub cap: u64,
    pub engines: Vec<EngineKind>,
    /// Uploaded files are kept on the board's storage (`--storage`) across
    /// runs; false: they are held in RAM, counted against the cap, until the
    /// agent ends.
    pub storage: bool,
    /// The core clock in Hz (0: not known, as on a Linux board).
    pub clock_hz: u64,
    /// Flash (program and model storage) in bytes (0: none, as on a Linux board).
    pub flash_total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LoadReport {
    pub engine: EngineKind,
    pub opt_level: OptLevel,
    pub threads: u16,
    pub load_nanos: u64,
    /// Bytes of the model's weights as the engine reports or the file holds.
    pub weight_bytes: u64,
    pub peak_heap: u64,
    pub peak_rss: u64,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

/// A model input or output; `None` in `shape` marks a dimension that is not fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Option<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct InferReport {
    pub runs: u32,
    pub peak_heap: u64,
    pub peak_rss: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AgentStats {
    pub requests: u32,
    /// Frames dropped for a bad CRC, bad COBS or an undecodable message.
    pub bad_frames: u32,
    pub replays: u32,
    pub heap_in_use: u64,
    pub peak_heap: u64,
    pub peak_rss: u64,
    pub cap: u64,
}

/// Which limit refused memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MemLimit {
    /// The agent's capped Rust allocator.
    Heap,
    /// The process data limit (RLIMIT_DATA) that holds ONNX Runtime's malloc.
    ProcessData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AgentError {
    OutOfMemory {
        requested: u64,
        in_use: u64,
        cap: u64,
        limit: MemLimit,
    },
    VersionMismatch {
        agent: u16,
        host: u16,
    },
    ModelLoad(String),
    BadRequest(String),
    Engine(String),
    /// An uploaded file whose bytes do not hash to the SHA-256 its `Upload`
    /// named; the board kept nothing of it.
    // The hashes are boxed: every error a host handles is as large as this one.
    UploadMismatch {
        name: String,
        size: u64,
        expected: alloc::boxed::Box<[u8; 32]>,
        actual: alloc::boxed::Box<[u8; 32]>,
    },
    /// The board's storage failed (a folder, a write, a rename).
    Storage(String),
}

/// A SHA-256 digest as 64 lowercase hex digits.
pub struct Hex<'a>(pub &'a [u8; 32]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl core::fmt::Display for AgentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AgentError::OutOfMemory { requested, in_use, cap, limit } => {
                let which = match limit {
                    MemLimit::Heap => "heap cap",
                    MemLimit::ProcessData => "process data limit",
                };
                write!(f, "out of memory: {requested} bytes requested with {in_use} in use, {which} {cap}")
            }
            AgentError::VersionMismatch { agent, host } => {
                write!(f, "protocol version mismatch: agent speaks {agent}, host speaks {host}")
            }
            AgentError::ModelLoad(m) => write!(f, "model load failed: {m}"),
            AgentError::BadRequest(m) => write!(f, "bad request: {m}"),
            AgentError::Engine(m) => write!(f, "engine error: {m}"),
            AgentError::UploadMismatch { name, size, expected, actual } => write!(
                f,
                "upload of {name} refused: its {size} bytes have SHA-256 {}, the upload announced {}",
                Hex(actual),
                Hex(expected)
            ),
            AgentError::Storage(m) => write!(f, "board storage: {m}"),
        }
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// frame longer than the maximum of MAX_FRAME bytes
    #[error("frame longer than the maximum of {MAX_FRAME} bytes")]
    TooLong,
    /// bad COBS encoding
    #[error("bad COBS encoding")]
    Cobs,
    /// CRC mismatch
    #[error("CRC mismatch: frame says {expected:#010x}, payload has {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    /// frame shorter than its CRC
    #[error("frame of {0} bytes is shorter than its CRC")]
    Short(usize),
    /// payload is not a valid message
    #[error("payload is not a valid message")]
    Message,
    /// message too large to encode in one frame
    #[error("message too large for one frame (at most {MAX_PAYLOAD} payload bytes)")]
    Encode,
}

/// Encodes `msg` as one frame into `out` using `scratch` for the postcard
/// bytes; returns the frame length. Allocates nothing, so the out-of-memory
/// path can use it with stack buffers.
pub fn encode_frame_into<T: Serialize>(msg: &T, scratch: &mut [u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let payload_len = postcard::to_slice(msg, scratch).map_err(|_| FrameError::Encode)?.len();
    if payload_len > MAX_PAYLOAD || scratch.len() < payload_len + CRC_LEN {
        return Err(FrameError::Encode);
    }
    let crc = CRC.checksum(&scratch[..payload_len]);
    scratch[payload_len..payload_len + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    let n = cobs::try_encode(&scratch[..payload_len + CRC_LEN], out).map_err(|_| FrameError::Encode)?;
    *out.get_mut(n).ok_or(FrameError::Encode)? = 0;
    Ok(n + 1)
}

/// Encodes `msg` as one frame (delimiter included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut scratch = alloc::vec![0u8; MAX_PAYLOAD + CRC_LEN];
    let mut out = alloc::vec![0u8; MAX_FRAME];
    let n = encode_frame_into(msg, &mut scratch, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Checks and strips COBS and CRC from one frame's bytes (delimiter excluded).
pub fn decode_frame<T: DeserializeOwned>(encoded: &[u8]) -> Result<T, FrameError> {
    let mut buf: heapless::Vec<u8, MAX_FRAME> = heapless::Vec::new();
    buf.extend_from_slice(encoded).map_err(|_| FrameError::TooLong)?;
    let n = cobs::decode_in_place(&mut buf).map_err(|_| FrameError::Cobs)?;
    if n < CRC_LEN {
        return Err(FrameError::Short(n));
    }
    let (payload, crc) = buf[..n].split_at(n - CRC_LEN);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = CRC.checksum(payload);
    if expected != actual {
        return Err(FrameError::Crc { expected, actual });
    }
    postcard::from_bytes(payload).map_err(|_| FrameError::Message)
}

/// Splits a byte stream into frames at `0x00` and decodes each one.
///
/// Holds at most one frame; bytes past [`MAX_FRAME`] are discarded up to the
/// next delimiter and reported once as [`FrameError::TooLong`].
pub struct FrameDecoder {
    buf: heapless::Vec<u8, MAX_FRAME>,
    overflow: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub const fn new() -> Self {
        Self { buf: heapless::Vec::new(), overflow: false }
    }

    /// Feeds bytes, calling `on_frame` for each complete frame.
    pub fn feed<T: DeserializeOwned>(&mut self, bytes: &[u8], mut on_frame: impl FnMut(Result<T, FrameError>)) {
        for &b in bytes {
            if b != 0 {
                if self.buf.push(b).is_err() {
                    self.overflow = true;
                }
                continue;
            }
            if self.overflow {
                on_frame(Err(FrameError::TooLong));
            } else if !self.buf.is_empty() {
                // Empty frames are delimiters sent to resynchronise.
                on_frame(decode_frame(&self.buf));
            }
            self.buf.clear();
            self.overflow = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_flipped_bit_is_caught_by_the_crc() {
        let msg = Request { id: 7, command: Command::Stats };
        let mut frame = encode_frame(&msg).unwrap();
        let mut got = vec![];
        FrameDecoder::new().feed::<Request>(&frame, |r| got.push(r));
        assert_eq!(got, vec![Ok(msg)]);
        // Flip a bit in the CRC's part of the COBS body; keep it non-zero.
        frame[2] ^= 0x40;
        let mut got = vec![];
        FrameDecoder::new().feed::<Request>(&frame, |r| got.push(r));
        assert!(matches!(got[..], [Err(FrameError::Crc { .. })] | [Err(FrameError::Cobs)]), "{got:?}");
    }

    #[test]
    fn a_full_upload_chunk_fits_one_frame_even_resent() {
        let chunk = Command::UploadChunk { offset: u64::MAX, bytes: vec![0xff; UPLOAD_CHUNK] };
        let resent =
            Command::Resend { missing: Missing { seqs: vec![u32::MAX], from: u32::MAX }, command: chunk.into() };
        let frame = encode_frame(&Request { id: u32::MAX, command: resent });
        assert!(frame.is_ok_and(|f| f.len() <= MAX_FRAME));
        // Much more would not: the chunk size uses the frame.
        let bigger = Command::UploadChunk { offset: 0, bytes: vec![0xff; UPLOAD_CHUNK + 128] };
        assert_eq!(encode_frame(&Request { id: 1, command: bigger }), Err(FrameError::Encode));
    }

    #[test]
    fn a_full_chunk_fits_one_frame() {
        let t = Tensor { name: "x".repeat(200), shape: vec![u64::MAX; 8], values: Values::I64(vec![i64::MIN; 5000]) };
        let chunks: Vec<_> = t.chunks().collect();
        assert_eq!(chunks.len(), 10);
        for c in chunks {
            let frame =
                encode_frame(&Request { id: u32::MAX, command: Command::SetInput { index: u16::MAX, chunk: c } });
            assert!(frame.is_ok(), "{frame:?}");
        }
    }
}
