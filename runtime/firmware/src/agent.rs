//! The board's side of the protocol: requests in from the UART, events out.
//!
//! One request at a time, as the Linux agent does, but without its record of
//! answers (RAM is scarce): a request sent again runs again, and a `Resend`
//! runs its command. Every run is short next to the host's resend delay.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use edgehil_micro::Model;
use edgehil_wire::cap::Refusal;
use edgehil_wire::{
    encode_frame_into, stage_input, AgentError, AgentStats, BoardInfo, Command, DType, EngineKind, Event, FrameDecoder,
    InferReport, LoadReport, MemLimit, OptLevel, OutputMode, Request, Tensor, TensorInfo, ToHost, Values, MAX_FRAME,
    MAX_PAYLOAD, PROTOCOL_VERSION,
};

use crate::board;
use crate::mem::{self, HEAP};

/// `Load`'s path for a model in flash: `flash:0xADDR`.
const FLASH_PREFIX: &str = "flash:";
/// A `Load` path that executes an undefined instruction: the tests' way to
/// check that a fault reaches the host as an error frame.
const TEST_FAULT: &str = "test:undefined-instruction";

// What the refusal hook and the fault handlers need to address their frame.
static CURRENT_ID: AtomicU32 = AtomicU32::new(0);
static CURRENT_SEQ: AtomicU32 = AtomicU32::new(0);

/// The link's buffers, in statics as on a real board (24 KiB: a frame in, a frame out and its payload).
struct Buffers {
    decoder: FrameDecoder,
    scratch: [u8; MAX_PAYLOAD + 4],
    frame: [u8; MAX_FRAME],
}

struct Once(UnsafeCell<Buffers>, AtomicBool);
// SAFETY: handed out once (`take`), in thread mode.
unsafe impl Sync for Once {}

static BUFFERS: Once = Once(
    UnsafeCell::new(Buffers { decoder: FrameDecoder::new(), scratch: [0; MAX_PAYLOAD + 4], frame: [0; MAX_FRAME] }),
    AtomicBool::new(false),
);

impl Once {
    fn take(&'static self) -> &'static mut Buffers {
        assert!(!self.1.swap(true, Ordering::SeqCst), "the link's buffers are taken once");
        // SAFETY: the flag above makes this the only reference.
        unsafe { &mut *self.0.get() }
    }
}

/// The firmware's main loop.
pub fn run() -> ! {
    board::init();
    mem::init_heap(report_refusal);
    let link = BUFFERS.take();
    let mut state = State::default();
    loop {
        let Some(byte) = board::read_byte() else { continue };
        let mut got = None;
        link.decoder.feed::<Request>(&[byte], |r| got = Some(r));
        match got {
            Some(Ok(request)) => {
                state.requests += 1;
                CURRENT_ID.store(request.id, Ordering::SeqCst);
                CURRENT_SEQ.store(0, Ordering::SeqCst);
                let mut answer = Answer { link: &mut *link, id: request.id, seq: 0 };
                state.handle(request.command, &mut answer);
            }
            Some(Err(_)) => state.bad_frames += 1,
            None => {}
        }
    }
}

/// The events of one answer, numbered from 0.
struct Answer<'a> {
    link: &'a mut Buffers,
    id: u32,
    seq: u32,
}

impl Answer<'_> {
    fn emit(&mut self, event: Event) {
        self.send(&ToHost::Event { id: self.id, seq: self.seq, event });
        self.seq += 1;
        CURRENT_SEQ.store(self.seq, Ordering::SeqCst);
    }

    fn send(&mut self, msg: &ToHost) {
        let n = match encode_frame_into(msg, &mut self.link.scratch, &mut self.link.frame) {
            Ok(n) => n,
            // Every message the firmware sends fits a frame (outputs go in chunks): this is a bug.
            Err(e) => panic!("message {} does not fit a frame: {e}", self.seq),
        };
        board::write_bytes(&self.link.frame[..n]);
    }
}

/// Board time between heartbeats during a run: 20 ms of the core clock. Under
/// QEMU the clock is instructions (1 ns each), which a loaded host runs at 20
/// million a second or less: 20 ms of them still beat inside the host's
/// resend delay (1.5 s). A heartbeat goes between two ops of the model (the
/// firmware does one thing at a time); its sending is left out of the runs' counts.
const HEARTBEAT_CYCLES: u64 = board::CLOCK_HZ as u64 / 50;

/// The heartbeats of one request: when it began, the last one, and the
/// cycles spent sending them.
struct Heartbeat {
    began: u64,
    last: u64,
    spent: u64,
}

impl Heartbeat {
    fn new() -> Self {
        let now = board::cycles();
        Heartbeat { began: now, last: now, spent: 0 }
    }

    /// Tells the host the board is at work on `answer`'s request, if a heartbeat is due.
    fn beat(&mut self, answer: &mut Answer) {
        if board::cycles_since(self.last) < HEARTBEAT_CYCLES {
            return;
        }
        let at = board::cycles();
        let elapsed_ms = board::nanos(board::cycles_since(self.began)) / 1_000_000;
        answer.send(&ToHost::Heartbeat { id: answer.id, elapsed_ms: elapsed_ms.min(u64::from(u32::MAX)) as u32 });
        self.spent += board::cycles_since(at);
        self.last = board::cycles();
    }
}

/// Sends one error frame from stack buffers, ending any frame half written.
pub fn send_last_words(error: AgentError) {
    let msg = ToHost::Event {
        id: CURRENT_ID.load(Ordering::SeqCst),
        seq: CURRENT_SEQ.load(Ordering::SeqCst),
        event: Event::Error(error),
    };
    let mut scratch = [0u8; 384];
    let mut frame = [0u8; 400];
    if let Ok(n) = encode_frame_into(&msg, &mut scratch, &mut frame) {
        board::write_bytes(&[0]);
        board::write_bytes(&frame[..n]);
    }
}

/// The capped allocator said no: `OutOfMemory` with its figures, then halt,
/// as the Linux agent ends its process. Allocates nothing.
fn report_refusal(r: Refusal) {
    send_last_words(AgentError::OutOfMemory {
        requested: r.requested as u64,
        in_use: r.in_use as u64,
        cap: r.cap as u64,
        limit: MemLimit::Heap,
    });
    board::halt()
}

/// A model loaded from flash with its activation arena.
struct Loaded {
    model: Model<'static>,
    arena: Vec<f32>,
}

#[derive(Default)]
struct State {
    loaded: Option<Loaded>,
    staged: Vec<Option<Tensor>>,
    requests: u32,
    bad_frames: u32,
}

impl State {
    fn handle(&mut self, command: Command, answer: &mut Answer) {
        let event = match command {
            Command::Hello { protocol_version } if protocol_version != PROTOCOL_VERSION => {
                Event::Error(AgentError::VersionMismatch { agent: PROTOCOL_VERSION, host: protocol_version })
            }
            Command::Hello { .. } => Event::HelloAck(board_info()),
            Command::Load { path, engine, .. } => {
                self.loaded = None;
                self.staged.clear();
                self.load(&path, engine).unwrap_or_else(Event::Error)
            }
            Command::SetInput { index, chunk } => {
                stage_input(&mut self.staged, usize::from(index), chunk).map_or_else(Event::Error, |()| Event::Done)
            }
            Command::Infer { runs, warmup, outputs } => {
                self.infer(runs, warmup, outputs, answer).map_or_else(Event::Error, Event::InferDone)
            }
            Command::Stats => Event::Stats(AgentStats {
                requests: self.requests,
                bad_frames: self.bad_frames,
                replays: 0,
                heap_in_use: HEAP.in_use() as u64,
                peak_heap: HEAP.peak() as u64,
                peak_rss: ram_peak(),
                cap: HEAP.cap() as u64,
            }),
            Command::Unload => {
                self.loaded = None;
                self.staged.clear();
                Event::Done
            }
            Command::Shutdown => Event::Done,
            Command::Resend { command, .. } if !matches!(*command, Command::Resend { .. }) => {
                return self.handle(*command, answer);
            }
            other => Event::Error(AgentError::BadRequest(alloc::format!(
                "a microcontroller board runs micro-models only; it does not take {}",
                command_name(&other)
            ))),
        };
        answer.emit(event);
    }

    fn load(&mut self, path: &str, engine: EngineKind) -> Result<Event, AgentError> {
        if engine != EngineKind::Micro {
            return Err(AgentError::BadRequest(alloc::format!("this board runs engine micro, not {}", engine.name())));
        }
        if path == TEST_FAULT {
            // SAFETY: none needed: the instruction faults, which is the point.
            unsafe { core::arch::asm!("udf #0") };
        }
        HEAP.reset_peak();
        let started = board::cycles();
        let bytes = flash_model(path)?;
        let model = Model::decode(bytes).map_err(|e| AgentError::ModelLoad(alloc::format!("{path}: {e}")))?;
        let mut arena = Vec::new();
        // The capped allocator refuses a model whose arena passes the cap (its
        // hook sends OutOfMemory); an error here is the arena's fragmentation.
        arena.try_reserve_exact(model.arena as usize).map_err(|_| {
            AgentError::ModelLoad(alloc::format!("no room for the {} byte activation arena", model.arena_bytes()))
        })?;
        arena.resize(model.arena as usize, 0.0);
        let info = |ios: &[edgehil_micro::Io]| -> Vec<TensorInfo> {
            ios.iter()
                .map(|io| TensorInfo {
                    name: io.name.to_string(),
                    dtype: DType::F32,
                    shape: io.shape.iter().map(|d| Some(u64::from(*d))).collect(),
                })
                .collect()
        };
        let report = LoadReport {
            engine,
            opt_level: OptLevel::All,
            threads: 1,
            load_nanos: board::nanos(board::cycles_since(started)),
            weight_bytes: model.weight_bytes() as u64,
            peak_heap: HEAP.peak() as u64,
            peak_rss: ram_peak(),
            inputs: info(&model.inputs),
            outputs: info(&model.outputs),
        };
        self.staged = alloc::vec![None; report.inputs.len()];
        self.loaded = Some(Loaded { model, arena });
        Ok(Event::Loaded(report))
    }

    fn infer(
        &mut self,
        runs: u32,
        warmup: u32,
        mode: OutputMode,
        answer: &mut Answer,
    ) -> Result<InferReport, AgentError> {
        let Some(loaded) = self.loaded.as_mut() else {
            return Err(AgentError::BadRequest("no model loaded".to_string()));
        };
        let mut inputs: Vec<Vec<f32>> = Vec::new();
        for t in &self.staged {
            let t = t.as_ref().ok_or_else(|| AgentError::BadRequest("not every input has been staged".to_string()))?;
            inputs.push(match &t.values {
                Values::F32(v) => v.clone(),
                // A micro-model computes in f32; integer inputs are its values.
                Values::I64(v) => v.iter().map(|x| *x as f32).collect(),
            });
        }
        let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        HEAP.reset_peak();
        let mut outputs = Vec::new();
        let mut heartbeat = Heartbeat::new();
        // At least one run, whose outputs go back.
        for index in 0..(warmup + runs).max(1) {
            let (started, beating) = (board::cycles(), heartbeat.spent);
            let views = edgehil_micro::run_in_with(&loaded.model, &mut loaded.arena, &views, || heartbeat.beat(answer))
                .map_err(|e| AgentError::Engine(e.to_string()))?;
            let cycles = board::cycles_since(started).saturating_sub(heartbeat.spent - beating);
            let nanos = board::nanos(cycles);
            if index + 1 >= warmup + runs {
                outputs = views.iter().map(|v| v.to_vec()).collect();
            }
            if index < warmup + runs {
                answer.emit(Event::Run { index, warmup: index < warmup, nanos, cycles: Some(cycles) });
            }
        }
        for (index, (io, values)) in loaded.model.outputs.iter().zip(outputs).enumerate() {
            let tensor = Tensor {
                name: io.name.to_string(),
                shape: io.shape.iter().map(|d| u64::from(*d)).collect(),
                values: Values::F32(values),
            };
            for part in tensor.output_parts(index as u16, mode) {
                answer.emit(Event::Output(part));
            }
        }
        Ok(InferReport { runs, peak_heap: HEAP.peak() as u64, peak_rss: ram_peak() })
    }
}

/// The micro-model at `flash:0xADDR`, up to the end of the models' region
/// (the decoder reads only what the model holds).
fn flash_model(path: &str) -> Result<&'static [u8], AgentError> {
    let (start, end) = mem::models_region();
    let bad = |why: &str| {
        AgentError::ModelLoad(alloc::format!(
            "model path `{path}`: {why}; this board takes `flash:0xADDR` with ADDR in {start:#010x}..{end:#010x}"
        ))
    };
    let hex =
        path.strip_prefix(FLASH_PREFIX).and_then(|a| a.strip_prefix("0x")).ok_or_else(|| bad("not a flash address"))?;
    let addr = usize::from_str_radix(hex, 16).map_err(|_| bad("the address is not hexadecimal"))?;
    if !(start..end).contains(&addr) {
        return Err(bad("the address is outside the models' flash region"));
    }
    // SAFETY: [addr, end) lies in the models' flash region (linker script),
    // which nothing writes while the firmware runs.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, end - addr) })
}

/// All RAM in use at its peak: statics, the stack's deepest and the heap's peak.
fn ram_peak() -> u64 {
    mem::static_bytes() + mem::peak_stack() + HEAP.peak() as u64
}

fn board_info() -> BoardInfo {
    BoardInfo {
        protocol_version: PROTOCOL_VERSION,
        agent_version: String::from(concat!("edgehil-firmware ", env!("CARGO_PKG_VERSION"))),
        arch: String::from(board::core()),
        cores: 1,
        ram_total: mem::ram_total(),
        ram_free: (HEAP.cap() - HEAP.in_use()) as u64,
        cap: HEAP.cap() as u64,
        engines: alloc::vec![EngineKind::Micro],
        storage: false,
        clock_hz: u64::from(board::CLOCK_HZ),
        flash_total: mem::flash_total(),
    }
}

/// What a command the firmware does not take is for, to say so.
fn command_name(c: &Command) -> &'static str {
    match c {
        Command::SetPrompt { .. } | Command::SetPromptText { .. } | Command::Detokenize { .. } => "prompts",
        Command::Generate(_) => "generation",
        // The model is placed in flash (QEMU's loader, probe-rs), not sent over the UART.
        Command::Upload { .. } | Command::UploadChunk { .. } => "uploads",
        _ => "retrieval",
    }
}
