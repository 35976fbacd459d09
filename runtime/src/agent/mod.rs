//! The agent loop: read requests from a link, answer with events.
//!
//! This file is the link side: framing, the recorded answers replayed for a
//! repeated request, the held token frames, heartbeats and the out-of-memory
//! hook. What each command does is in `handlers.rs`; uploaded files are
//! kept by `store.rs`.
//!
//! One request is worked on at a time. Every answer is recorded, so a
//! request the host sends again (same id) after losing a frame is answered
//! by replaying the record, not by running the model twice. While a request
//! is being worked on, a heartbeat goes out every [`HEARTBEAT`] so the host
//! can tell a slow board from a hung one.

mod handlers;
mod store;

use std::boxed::Box;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::cap::{CappedAlloc, Refusal};
use crate::wire::{
    encode_frame, encode_frame_into, AgentError, Command, Event, FrameDecoder, MemLimit, Request, ToHost,
    EXIT_OUT_OF_MEMORY, MAX_PAYLOAD,
};
use handlers::State;

pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// After a generation's first token, tokens go out together at most this
/// often. Each write wakes the host (and, on a pty, a kernel worker), which
/// on an emulated board whose cores the engine fills takes an engine thread
/// off its core: about 0.1 ms a token measured against a 12 ms GPT-2 int4
/// step here. 20 updates a second still read as a stream; the board times
/// each token.
pub const STREAM_EVERY: Duration = Duration::from_millis(50);

// What the refusal hook needs to send its frame without allocating: one
// agent per process, as in the `edgehil-agent` binary.
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
    /// Where uploaded files are kept (`--storage`); none: held in RAM,
    /// counted against the cap.
    pub storage: Option<PathBuf>,
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

/// What the heartbeat thread needs to know of the serve loop.
#[derive(Default)]
struct Working {
    /// A request is being worked on.
    busy: AtomicBool,
    /// Its id.
    id: AtomicU32,
    /// The serve loop has returned.
    ended: AtomicBool,
}

/// Serves requests until `Shutdown` or the end of input, on any byte
/// stream: a serial port, stdin/stdout, or an in-memory link in tests.
///
/// `out_fd` is the descriptor behind `writer`, for the out-of-memory path
/// (negative: none, and a refusal only ends the process).
pub fn serve(
    reader: impl Read,
    writer: Box<dyn Write + Send>,
    out_fd: i32,
    alloc: &'static CappedAlloc<crate::sys::MapLarge>,
    config: AgentConfig,
) -> io::Result<()> {
    OUT_FD.store(out_fd, Ordering::SeqCst);
    let writer = Arc::new(Mutex::new(Writer { out: writer }));
    let working = Arc::new(Working::default());
    spawn_heartbeat(writer.clone(), working.clone());
    let result = serve_requests(reader, &writer, &working, State::new(config, alloc));
    working.ended.store(true, Ordering::SeqCst);
    result
}

fn serve_requests(
    mut reader: impl Read,
    writer: &Mutex<Writer>,
    working: &Working,
    mut state: State,
) -> io::Result<()> {
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
            working.id.store(req.id, Ordering::SeqCst);
            working.busy.store(true, Ordering::SeqCst);
            let mut answer = Answer::new(req.id, writer, STREAM_EVERY);
            let shutdown = matches!(req.command, Command::Shutdown);
            let result = state.handle(req.command.clone(), &mut answer);
            working.busy.store(false, Ordering::SeqCst);
            result?;
            last = Some((req, answer.frames));
            if shutdown {
                return Ok(());
            }
        }
    }
}

fn spawn_heartbeat(writer: Arc<Mutex<Writer>>, working: Arc<Working>) {
    let started = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(HEARTBEAT);
        if working.ended.load(Ordering::SeqCst) {
            return;
        }
        if working.busy.load(Ordering::SeqCst) {
            let msg = ToHost::Heartbeat {
                id: working.id.load(Ordering::SeqCst),
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
pub(crate) struct Answer<'a> {
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

    pub(crate) fn emit(&mut self, event: Event) -> io::Result<()> {
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
        Event::Error(AgentError::Storage(m)) => AgentError::Storage(cut(m)),
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
