use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgehil_wire::call::{self, Call, IndexState};
use edgehil_wire::{
    encode_frame, AgentError, AgentStats, BoardInfo, ChunkError, Command, Digest, EngineKind, Event, FrameDecoder,
    GenParams, GenReport, InferReport, LoadReport, Missing, OptLevel, OutputMode, OutputPart, Request, Tensor, ToHost,
    PROMPT_CHUNK, PROTOCOL_VERSION,
};

use crate::{Exited, HilError, Link};

/// Host-side time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Silence (no frame, not even a heartbeat) after which a request is
    /// first sent again; each further unanswered send waits [`BACKOFF`]
    /// times longer, up to [`MAX_BACKOFF`] times this.
    pub resend_after: Duration,
    /// Sends in a row without a frame in return before the board is
    /// declared unresponsive. A resend that brings frames back starts the
    /// count again: on a noisy link every exchange may lose a frame.
    pub max_sends: u32,
    /// Longest any one request may take, heartbeats, resends or not.
    pub request: Duration,
}

/// Growth of the silence waited after each unanswered send.
pub const BACKOFF: f64 = 1.5;
/// The longest wait, as a multiple of `resend_after`.
pub const MAX_BACKOFF: f64 = 4.0;

/// Missing events named one by one in a resend; any beyond are asked for
/// with `Missing::from`, keeping the resend small.
const MAX_MISSING: usize = 256;

impl Timeouts {
    /// The silence to wait after `unanswered` sends in a row.
    fn wait(&self, unanswered: u32) -> Duration {
        let factor = BACKOFF.powi(unanswered.saturating_sub(1).min(16) as i32).min(MAX_BACKOFF);
        self.resend_after.mul_f64(factor)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        // The agent sends a heartbeat every 250 ms while working.
        Self { resend_after: Duration::from_millis(1500), max_sends: 8, request: Duration::from_secs(600) }
    }
}

/// One output as the board sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    Full(Tensor),
    /// Per row: indices and values of the largest k.
    TopK {
        name: String,
        shape: Vec<u64>,
        rows: Vec<(Vec<u32>, Vec<f32>)>,
    },
    Digest {
        name: String,
        shape: Vec<u64>,
        digest: Digest,
    },
}

impl OutputData {
    pub fn name(&self) -> &str {
        match self {
            OutputData::Full(t) => &t.name,
            OutputData::TopK { name, .. } | OutputData::Digest { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone)]
pub struct InferResult {
    /// Timed runs only, in nanoseconds as the board measured them.
    pub latencies_ns: Vec<u64>,
    /// Timed runs' core cycles, where the board counts them (microcontrollers).
    pub cycles: Vec<u64>,
    pub outputs: Vec<OutputData>,
    pub report: InferReport,
}

/// Link-level counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bad_frames: u64,
    pub resends: u64,
}

/// A conversation with one board's agent.
pub struct Session {
    link: Box<dyn Link>,
    timeouts: Timeouts,
    decoder: FrameDecoder,
    next_id: u32,
    pub stats: LinkStats,
}

impl Session {
    pub fn new(link: Box<dyn Link>, timeouts: Timeouts) -> Self {
        Self { link, timeouts, decoder: FrameDecoder::new(), next_id: 1, stats: LinkStats::default() }
    }

    /// The VM the session's link reaches (a QEMU board): its console log and boot time.
    pub fn vm(&self) -> Option<&crate::VmInfo> {
        self.link.vm()
    }

    /// Sends `call` and gives its answer; `on_event` sees each event that
    /// comes before the answer (runs, outputs, tokens) once, in order.
    pub fn call<C: Call>(&mut self, call: C, on_event: impl FnMut(&Event)) -> Result<C::Answer, HilError> {
        let terminal = self.request(C::NAME, call.into_command(), on_event)?;
        C::answer(terminal).map_err(|event| HilError::Unexpected { command: C::NAME, event: format!("{event:?}") })
    }

    /// Opens the session: protocol version check and what the board is.
    pub fn hello(&mut self) -> Result<BoardInfo, HilError> {
        match self.call(call::Hello { protocol_version: PROTOCOL_VERSION }, |_| {}) {
            Ok(info) if info.protocol_version == PROTOCOL_VERSION => Ok(info),
            Ok(info) => Err(HilError::VersionMismatch { agent: info.protocol_version, host: PROTOCOL_VERSION }),
            Err(HilError::Agent { error: AgentError::VersionMismatch { agent, host }, .. }) => {
                Err(HilError::VersionMismatch { agent, host })
            }
            Err(e) => Err(e),
        }
    }

    pub fn load(
        &mut self,
        path: &str,
        engine: EngineKind,
        opt_level: OptLevel,
        threads: u16,
    ) -> Result<LoadReport, HilError> {
        self.call(call::Load { path: path.into(), engine, opt_level, threads }, |_| {})
    }

    /// Stages the inputs on the board, chunk by chunk.
    pub fn set_inputs(&mut self, inputs: &[Tensor]) -> Result<(), HilError> {
        for (index, t) in inputs.iter().enumerate() {
            for chunk in t.chunks() {
                self.call(call::SetInput { index: index as u16, chunk }, |_| {})?;
            }
        }
        Ok(())
    }

    /// Runs `warmup` + `runs` inferences; `on_run` sees each timed latency as it arrives.
    pub fn infer(
        &mut self,
        runs: u32,
        warmup: u32,
        mode: OutputMode,
        mut on_run: impl FnMut(u32, u64),
    ) -> Result<InferResult, HilError> {
        let mut latencies_ns = Vec::new();
        let mut cycles = Vec::new();
        let mut outputs: Vec<OutputData> = Vec::new();
        let mut bad_chunk = None;
        let report = self.call(call::Infer { runs, warmup, outputs: mode }, |event| match event {
            Event::Run { index, warmup: false, nanos, cycles: counted } => {
                on_run(*index, *nanos);
                latencies_ns.push(*nanos);
                cycles.extend(*counted);
            }
            Event::Output(part) => {
                if let Err(e) = collect_output(&mut outputs, part.clone()) {
                    bad_chunk.get_or_insert(e);
                }
            }
            _ => {}
        })?;
        match bad_chunk {
            Some(error) => Err(HilError::BadOutput { command: call::Infer::NAME, error }),
            None => Ok(InferResult { latencies_ns, cycles, outputs, report }),
        }
    }

    /// Stages a prompt's token ids on the board.
    pub fn set_prompt(&mut self, ids: &[u32]) -> Result<(), HilError> {
        // An empty prompt still clears what an earlier one staged.
        let chunks = ids.chunks(PROMPT_CHUNK).map(<[u32]>::to_vec);
        for (i, chunk) in chunks.chain(ids.is_empty().then(Vec::new)).enumerate() {
            self.call(call::SetPrompt { offset: (i * PROMPT_CHUNK) as u32, ids: chunk }, |_| {})?;
        }
        Ok(())
    }

    /// Tokenizes `text` on the board and stages it as the prompt; gives the ids.
    pub fn set_prompt_text(&mut self, text: &str) -> Result<Vec<u32>, HilError> {
        self.call(call::SetPromptText { text: text.into() }, |_| {})
    }

    /// Decodes token ids on the board.
    pub fn detokenize(&mut self, ids: &[u32]) -> Result<String, HilError> {
        self.call(call::Detokenize { ids: ids.to_vec() }, |_| {})
    }

    /// Generates from the staged prompt; `on_token(index, id, nanos)` sees
    /// each token as the board sends it.
    pub fn generate(
        &mut self,
        params: GenParams,
        mut on_token: impl FnMut(u32, u32, u64),
    ) -> Result<(Vec<u32>, GenReport), HilError> {
        let mut tokens = Vec::new();
        let report = self.call(call::Generate(params), |event| {
            if let Event::Token { index, id, nanos } = event {
                on_token(*index, *id, *nanos);
                tokens.push(*id);
            }
        })?;
        Ok((tokens, report))
    }

    /// Loads a sentence-embedding model beside the language model; the
    /// board's index starts empty.
    pub fn load_embedder(&mut self, path: &str, engine: EngineKind, threads: u16) -> Result<(), HilError> {
        self.call(call::LoadEmbedder { path: path.into(), engine, threads }, |_| {}).map(drop)
    }

    /// Embeds one item on the board and adds it to the index; gives (items, index bytes, peak heap).
    pub fn index_add(&mut self, ids: &[u32]) -> Result<(u32, u64, u64), HilError> {
        let IndexState { items, bytes, peak_heap } = self.call(call::IndexAdd { ids: ids.to_vec() }, |_| {})?;
        Ok((items, bytes, peak_heap))
    }

    pub fn index_clear(&mut self) -> Result<(), HilError> {
        self.call(call::IndexClear {}, |_| {}).map(drop)
    }

    /// The `k` indexed items nearest the query, best first, with their scores.
    pub fn retrieve(&mut self, ids: &[u32], k: u16) -> Result<Vec<(u32, f32)>, HilError> {
        let (items, scores) = self.call(call::Retrieve { ids: ids.to_vec(), k }, |_| {})?;
        Ok(items.into_iter().zip(scores).collect())
    }

    pub fn stats(&mut self) -> Result<AgentStats, HilError> {
        self.call(call::Stats {}, |_| {})
    }

    pub fn shutdown(&mut self) -> Result<(), HilError> {
        self.call(call::Shutdown {}, |_| {})
    }

    fn send_frame(&mut self, frame: &[u8]) -> Result<(), HilError> {
        self.stats.frames_sent += 1;
        self.link.send(frame)
    }

    /// Sends a request and collects its answer; `on_event` sees each
    /// non-terminal event once, in order, even across resends.
    fn request(
        &mut self,
        what: &'static str,
        command: Command,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Event, HilError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let request = Request { id, command };
        let frame = encode_request(what, &request)?;
        self.send_frame(&frame)?;
        let started = Instant::now();
        let mut last_heard = started;
        let mut sends = 1;
        // Sends since a frame of this request last came back.
        let mut unanswered = 1;
        let mut events: BTreeMap<u32, Event> = BTreeMap::new();
        let mut delivered = 0u32;
        let mut terminal_seq: Option<u32> = None;
        let mut buf = [0u8; 4096];
        loop {
            let n = self.link.recv(&mut buf)?;
            let mut frames = Vec::new();
            self.decoder.feed::<ToHost>(&buf[..n], |f| frames.push(f));
            for f in frames {
                self.stats.frames_received += 1;
                match f {
                    Err(_) => self.stats.bad_frames += 1,
                    Ok(ToHost::Heartbeat { id: hid, .. }) if hid == id => {
                        last_heard = Instant::now();
                        unanswered = 1;
                    }
                    Ok(ToHost::Event { id: eid, seq, event }) if eid == id => {
                        last_heard = Instant::now();
                        unanswered = 1;
                        if let Event::Error(error) = event {
                            // An error ends the answer whatever came before it.
                            return Err(HilError::Agent { command: what, error });
                        }
                        if event.is_terminal() {
                            terminal_seq = Some(seq);
                        }
                        events.entry(seq).or_insert(event);
                        while let Some(e) = events.get(&delivered) {
                            if !e.is_terminal() {
                                on_event(e);
                            }
                            delivered += 1;
                        }
                    }
                    Ok(_) => {} // late frames of an earlier request
                }
            }
            if let Some(t) = terminal_seq {
                if delivered > t {
                    return Ok(events.remove(&t).expect("terminal event present"));
                }
            }
            if n == 0 {
                if let Err(Exited { cause, stderr }) = self.link.check_alive() {
                    return Err(HilError::AgentExited { command: what, cause, stderr });
                }
            }
            let silent = last_heard.elapsed();
            let wait = self.timeouts.wait(unanswered);
            if started.elapsed() > self.timeouts.request || (silent > wait && unanswered >= self.timeouts.max_sends) {
                return Err(HilError::Timeout { command: what, waited: started.elapsed(), sends, silent });
            }
            // Resend on silence, or at once when the terminal event came
            // and left a gap: frames arrive in order, so the gap is a loss.
            let gap = terminal_seq.is_some();
            if silent > wait || gap {
                self.stats.resends += 1;
                sends += 1;
                if !gap {
                    unanswered += 1;
                }
                terminal_seq = None;
                last_heard = Instant::now();
                let resend = self.resend_frame(what, &request, &events, delivered);
                self.send_frame(resend.as_deref().unwrap_or(&frame))?;
            }
        }
    }

    /// The request again, asking only for the events not yet here; `None`
    /// (send it as it was) while nothing of the answer has come, or if the
    /// list does not fit a frame.
    fn resend_frame(
        &self,
        what: &'static str,
        request: &Request,
        events: &BTreeMap<u32, Event>,
        delivered: u32,
    ) -> Option<Vec<u8>> {
        // Before any event, the request may not have arrived, or the agent
        // may speak another version (Hello): send it unchanged.
        let highest = *events.keys().next_back()?;
        let mut seqs = (delivered..highest).filter(|s| !events.contains_key(s));
        let listed: Vec<u32> = seqs.by_ref().take(MAX_MISSING).collect();
        let from = seqs.next().unwrap_or(highest + 1);
        let command =
            Command::Resend { missing: Missing { seqs: listed, from }, command: Box::new(request.command.clone()) };
        encode_request(what, &Request { id: request.id, command }).ok()
    }
}

/// A request's frame, after a delimiter that ends whatever a lost
/// delimiter left in the agent's decoder (it ignores empty frames).
fn encode_request(what: &'static str, request: &Request) -> Result<Vec<u8>, HilError> {
    let frame = encode_frame(request).map_err(|e| HilError::Encode { command: what, reason: e.to_string() })?;
    Ok([&[0u8][..], &frame].concat())
}

/// Adds one part of an answer to the outputs; a chunk that does not
/// continue its tensor is an error.
fn collect_output(outputs: &mut Vec<OutputData>, part: OutputPart) -> Result<(), ChunkError> {
    let index = match &part {
        OutputPart::Chunk { index, .. } | OutputPart::TopK { index, .. } | OutputPart::Digest { index, .. } => {
            usize::from(*index)
        }
    };
    match part {
        OutputPart::Chunk { chunk, .. } => match outputs.get_mut(index) {
            Some(OutputData::Full(t)) => return t.append(chunk),
            _ => outputs.push(OutputData::Full(chunk.into())),
        },
        OutputPart::TopK { name, shape, indices, values, .. } => match outputs.get_mut(index) {
            Some(OutputData::TopK { rows, .. }) => rows.push((indices, values)),
            _ => outputs.push(OutputData::TopK { name, shape, rows: vec![(indices, values)] }),
        },
        OutputPart::Digest { name, shape, digest, .. } => outputs.push(OutputData::Digest { name, shape, digest }),
    }
    Ok(())
}
