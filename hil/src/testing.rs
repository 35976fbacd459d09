//! Links for tests (feature `testing`): an in-memory pair that an agent's
//! serve loop can run against on a thread, and a wrapper that damages chosen
//! frames of any link. Neither is in a production build.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::link::POLL;
use crate::{Exited, HilError, Link};

/// The host's end of an in-memory duplex link; [`BoardReader`] and
/// [`BoardWriter`] are the board's, the byte stream an agent reads and
/// writes.
pub struct MemoryLink {
    to_board: Sender<Vec<u8>>,
    from_board: Receiver<Vec<u8>>,
    /// Bytes of a board write longer than the host's last read.
    pending: VecDeque<u8>,
}

/// What the host sent, as the board reads it: a read waits for bytes and
/// gives 0 (end of input) once the host's end is dropped.
pub struct BoardReader {
    from_host: Receiver<Vec<u8>>,
    pending: VecDeque<u8>,
}

/// The board's way back to the host: a write fails once the host's end is dropped.
pub struct BoardWriter {
    to_host: Sender<Vec<u8>>,
}

impl MemoryLink {
    pub fn pair() -> (MemoryLink, BoardReader, BoardWriter) {
        let (to_board, from_host) = mpsc::channel();
        let (to_host, from_board) = mpsc::channel();
        (
            MemoryLink { to_board, from_board, pending: VecDeque::new() },
            BoardReader { from_host, pending: VecDeque::new() },
            BoardWriter { to_host },
        )
    }
}

impl Link for MemoryLink {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        // A board that is gone loses what is sent, as a UART would.
        let _ = self.to_board.send(bytes.to_vec());
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        if self.pending.is_empty() {
            match self.from_board.recv_timeout(POLL) {
                Ok(bytes) => self.pending.extend(bytes),
                Err(RecvTimeoutError::Timeout) => return Ok(0),
                Err(RecvTimeoutError::Disconnected) => {
                    // A board that is gone is silent; the session's clocks deal with it.
                    std::thread::sleep(POLL);
                    return Ok(0);
                }
            }
        }
        Ok(drain_into(&mut self.pending, buf))
    }
}

/// Moves what fits of `from` into `buf`; gives how much.
fn drain_into(from: &mut VecDeque<u8>, buf: &mut [u8]) -> usize {
    let n = buf.len().min(from.len());
    for (b, p) in buf.iter_mut().zip(from.drain(..n)) {
        *b = p;
    }
    n
}

impl Read for BoardReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            match self.from_host.recv() {
                Ok(bytes) => self.pending.extend(bytes),
                Err(_) => return Ok(0),
            }
        }
        Ok(drain_into(&mut self.pending, buf))
    }
}

impl Write for BoardWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.to_host.send(buf.to_vec()).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which frames a [`FaultyLink`] damages, counted from 0 in each direction
/// (empty frames, the delimiters sent to resynchronise, are not counted).
/// A cloned handle changes the faults of a link already in a session, so a
/// test can aim at a frame of the request it is about to make.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

#[derive(Default)]
struct FaultState {
    drop_sent: Vec<u64>,
    corrupt_sent: Vec<u64>,
    duplicate_sent: Vec<u64>,
    drop_received: Vec<u64>,
    corrupt_received: Vec<u64>,
    delay_received: Vec<(u64, Duration)>,
    sent: u64,
    received: u64,
}

impl Faults {
    fn with(&self, f: impl FnOnce(&mut FaultState)) -> &Self {
        f(&mut self.0.lock().expect("faults lock"));
        self
    }

    /// Loses the host's frame `index`.
    pub fn drop_sent(&self, index: u64) -> &Self {
        self.with(|s| s.drop_sent.push(index))
    }

    /// Flips a bit in the middle of the host's frame `index`.
    pub fn corrupt_sent(&self, index: u64) -> &Self {
        self.with(|s| s.corrupt_sent.push(index))
    }

    /// Sends the host's frame `index` twice, as a replaying link would.
    pub fn duplicate_sent(&self, index: u64) -> &Self {
        self.with(|s| s.duplicate_sent.push(index))
    }

    /// Loses the board's frame `index`.
    pub fn drop_received(&self, index: u64) -> &Self {
        self.with(|s| s.drop_received.push(index))
    }

    /// Flips a bit in the middle of the board's frame `index`.
    pub fn corrupt_received(&self, index: u64) -> &Self {
        self.with(|s| s.corrupt_received.push(index))
    }

    /// Holds the board's frame `index` back for `delay`; the frames after it
    /// pass, so it arrives out of order, perhaps during a later request.
    pub fn delay_received(&self, index: u64, delay: Duration) -> &Self {
        self.with(|s| s.delay_received.push((index, delay)))
    }

    /// Frames the host has sent through the link so far.
    pub fn sent(&self) -> u64 {
        self.0.lock().expect("faults lock").sent
    }

    /// Frames the board has sent through the link so far.
    pub fn received(&self) -> u64 {
        self.0.lock().expect("faults lock").received
    }
}

/// Wraps a link and damages the frames its [`Faults`] name.
pub struct FaultyLink<L> {
    inner: L,
    faults: Faults,
    /// Bytes of a board frame not yet ended by its delimiter.
    partial: Vec<u8>,
    /// Bytes ready for the host, after the faults.
    ready: VecDeque<u8>,
    /// Delayed board frames and when they are due.
    late: Vec<(Instant, Vec<u8>)>,
}

impl<L: Link> FaultyLink<L> {
    pub fn new(inner: L, faults: Faults) -> Self {
        Self { inner, faults, partial: Vec::new(), ready: VecDeque::new(), late: Vec::new() }
    }

    /// Applies the faults to one whole board frame (delimiter included).
    fn receive_frame(&mut self, frame: Vec<u8>) {
        let mut state = self.faults.0.lock().expect("faults lock");
        let index = state.received;
        state.received += 1;
        if state.drop_received.contains(&index) {
            return;
        }
        let frame = if state.corrupt_received.contains(&index) { corrupt(&frame) } else { frame };
        match state.delay_received.iter().find(|(i, _)| *i == index) {
            Some((_, delay)) => self.late.push((Instant::now() + *delay, frame)),
            None => self.ready.extend(frame),
        }
    }
}

impl<L: Link> Link for FaultyLink<L> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        // The session sends one frame per call (after a resynchronising delimiter).
        let (drop, duplicate, bytes) = {
            let mut state = self.faults.0.lock().expect("faults lock");
            let index = state.sent;
            state.sent += 1;
            let bytes = if state.corrupt_sent.contains(&index) { corrupt(bytes) } else { bytes.to_vec() };
            (state.drop_sent.contains(&index), state.duplicate_sent.contains(&index), bytes)
        };
        if drop {
            return Ok(());
        }
        self.inner.send(&bytes)?;
        if duplicate {
            self.inner.send(&bytes)?;
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        let now = Instant::now();
        for (_, frame) in self.late.extract_if(.., |(due, _)| *due <= now) {
            self.ready.extend(frame);
        }
        if self.ready.is_empty() {
            let n = self.inner.recv(buf)?;
            for &b in &buf[..n] {
                self.partial.push(b);
                if b == 0 {
                    let frame = std::mem::take(&mut self.partial);
                    if frame.len() == 1 {
                        self.ready.push_back(0);
                    } else {
                        self.receive_frame(frame);
                    }
                }
            }
        }
        Ok(drain_into(&mut self.ready, buf))
    }

    fn check_alive(&mut self) -> Result<(), Exited> {
        self.inner.check_alive()
    }
}

/// Flips one bit in the middle of a frame, keeping it free of zero bytes so
/// that it still arrives as one frame and the CRC must catch it.
fn corrupt(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let i = f.len() / 2;
    f[i] = if f[i] ^ 0x10 == 0 { f[i] ^ 0x20 } else { f[i] ^ 0x10 };
    f
}
