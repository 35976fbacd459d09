//! A serial port on the network: RFC 2217 (telnet's COM-PORT-OPTION), the
//! way ser2net serves a farm's serial ports (labgrid's `NetworkSerialPort`).
//!
//! Telnet shares the byte stream with its own commands: a data byte 0xFF
//! travels doubled both ways, and option negotiations and COM-PORT
//! subnegotiations sit between data bytes, split across reads wherever TCP
//! splits them. Both directions are put in binary mode, so CR and NUL travel
//! unchanged, and the line is set up as the profile says (baud, 8N1) before
//! the first frame: the server's answer to SET-BAUDRATE is what proves it
//! speaks RFC 2217 at all.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::link::POLL;
use crate::{HilError, Link};

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;

const BINARY: u8 = 0;
const SUPPRESS_GO_AHEAD: u8 = 3;
const COM_PORT: u8 = 44;

// COM-PORT-OPTION commands from the client; the server answers each with its code + 100.
const SET_BAUDRATE: u8 = 1;
const SET_DATASIZE: u8 = 2;
const SET_PARITY: u8 = 3;
const SET_STOPSIZE: u8 = 4;
const SERVER: u8 = 100;
const PARITY_NONE: u8 = 1;
const STOP_BITS_1: u8 = 1;

/// The options this client does itself (answers DO with WILL) and accepts
/// from the server (answers WILL with DO): nothing else, echo least of all.
const OURS: [u8; 3] = [BINARY, SUPPRESS_GO_AHEAD, COM_PORT];
const THEIRS: [u8; 2] = [BINARY, SUPPRESS_GO_AHEAD];

/// How long connecting, the line set-up and one write may take.
const SETUP: Duration = Duration::from_secs(5);

/// Longest subnegotiation kept; the server's COM-PORT answers are at most 6 bytes.
const MAX_SUB: usize = 64;

/// What a telnet stream holds besides data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Telnet {
    /// DO, DONT, WILL or WONT an option.
    Negotiate { verb: u8, option: u8 },
    /// A subnegotiation's bytes between `IAC SB` and `IAC SE`, unescaped.
    Sub(Vec<u8>),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Data,
    Iac,
    Verb(u8),
    Sub,
    SubIac,
}

/// Splits a telnet stream into data and commands, across reads.
#[derive(Debug, Default)]
struct Decoder {
    state: State,
    sub: Vec<u8>,
}

impl Decoder {
    fn feed(&mut self, raw: &[u8], data: &mut Vec<u8>, commands: &mut Vec<Telnet>) {
        for &b in raw {
            self.state = match (self.state, b) {
                (State::Data, IAC) => State::Iac,
                (State::Data, _) => {
                    data.push(b);
                    State::Data
                }
                (State::Iac, IAC) => {
                    data.push(IAC);
                    State::Data
                }
                (State::Iac, DO | DONT | WILL | WONT) => State::Verb(b),
                (State::Iac, SB) => {
                    self.sub.clear();
                    State::Sub
                }
                // NOP, GA, break and the like carry nothing for a byte link.
                (State::Iac, _) => State::Data,
                (State::Verb(verb), option) => {
                    commands.push(Telnet::Negotiate { verb, option });
                    State::Data
                }
                (State::Sub, IAC) => State::SubIac,
                (State::Sub, _) => {
                    self.push_sub(b);
                    State::Sub
                }
                (State::SubIac, IAC) => {
                    self.push_sub(IAC);
                    State::Sub
                }
                (State::SubIac, SE) => {
                    commands.push(Telnet::Sub(std::mem::take(&mut self.sub)));
                    State::Data
                }
                // A malformed subnegotiation: dropped, and the byte read as a command.
                (State::SubIac, _) => State::Data,
            }
        }
    }

    fn push_sub(&mut self, b: u8) {
        if self.sub.len() < MAX_SUB {
            self.sub.push(b);
        }
    }
}

/// Appends `bytes` with every 0xFF doubled, as data and subnegotiations travel.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == IAC {
            out.push(IAC);
        }
    }
}

/// `IAC SB COM-PORT-OPTION command value IAC SE`.
fn com_port(command: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![IAC, SB, COM_PORT, command];
    escape_into(&mut out, value);
    out.extend([IAC, SE]);
    out
}

/// A board's serial port behind an RFC 2217 server (ser2net).
pub struct Rfc2217Link {
    stream: TcpStream,
    /// `rfc2217://HOST:PORT`, for errors.
    name: String,
    decoder: Decoder,
    /// Data decoded and not yet handed out.
    pending: Vec<u8>,
    /// Options enabled on each side, indexed by option code.
    ours: [bool; 256],
    theirs: [bool; 256],
    /// The baud rate the server confirmed.
    baud: Option<u32>,
}

impl Rfc2217Link {
    /// Connects, negotiates binary mode and COM-PORT-OPTION, and sets the
    /// line to `baud` 8N1; an error if the server does not confirm `baud`.
    pub fn open(host: &str, port: u16, baud: u32) -> Result<Self, HilError> {
        let name = format!("rfc2217://{host}:{port}");
        let open_err = |reason: String| HilError::Open { port: name.clone(), reason };
        let addrs = (host, port).to_socket_addrs().map_err(|e| open_err(e.to_string()))?;
        let mut last = None;
        let stream = addrs
            .into_iter()
            .find_map(|a| TcpStream::connect_timeout(&a, SETUP).map_err(|e| last = Some(e)).ok())
            .ok_or_else(|| open_err(last.map_or("the host name resolves to nothing".into(), |e| e.to_string())))?;
        // Frames are small and the session waits for each answer: no Nagle delay.
        stream.set_nodelay(true).map_err(|e| open_err(e.to_string()))?;
        stream.set_read_timeout(Some(POLL)).map_err(|e| open_err(e.to_string()))?;
        // A board that stops reading fills the server's buffers: a write then fails rather than hangs.
        stream.set_write_timeout(Some(SETUP)).map_err(|e| open_err(e.to_string()))?;
        let mut link = Self {
            stream,
            name: name.clone(),
            decoder: Decoder::default(),
            pending: Vec::new(),
            ours: [false; 256],
            theirs: [false; 256],
            baud: None,
        };
        let mut hello = Vec::new();
        for option in OURS {
            link.ours[option as usize] = true;
            hello.extend([IAC, WILL, option]);
        }
        for option in THEIRS {
            link.theirs[option as usize] = true;
            hello.extend([IAC, DO, option]);
        }
        hello.extend(com_port(SET_BAUDRATE, &baud.to_be_bytes()));
        hello.extend(com_port(SET_DATASIZE, &[8]));
        hello.extend(com_port(SET_PARITY, &[PARITY_NONE]));
        hello.extend(com_port(SET_STOPSIZE, &[STOP_BITS_1]));
        link.stream.write_all(&hello).map_err(|e| open_err(e.to_string()))?;

        let deadline = Instant::now() + SETUP;
        let set = loop {
            if let Some(set) = link.baud {
                break set;
            }
            if Instant::now() >= deadline {
                return Err(open_err(format!(
                    "no answer to SET-BAUDRATE {baud} within {SETUP:?}: not an RFC 2217 server (ser2net needs `telnet(rfc2217)`)"
                )));
            }
            link.read_stream().map_err(|e| open_err(e.to_string()))?;
        };
        if set != baud {
            return Err(open_err(format!("the server set the line to {set} baud, not the {baud} asked")));
        }
        Ok(link)
    }

    /// One read of the socket (waiting at most [`POLL`]): data to `pending`,
    /// commands answered.
    fn read_stream(&mut self) -> Result<(), HilError> {
        let mut raw = [0u8; 4096];
        let n = match self.stream.read(&mut raw) {
            Ok(0) => {
                return Err(HilError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} closed the connection", self.name),
                )))
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        let mut commands = Vec::new();
        self.decoder.feed(&raw[..n], &mut self.pending, &mut commands);
        let mut reply = Vec::new();
        for command in commands {
            self.answer(command, &mut reply)?;
        }
        if !reply.is_empty() {
            self.stream.write_all(&reply)?;
        }
        Ok(())
    }

    /// Answers a negotiation only when it changes an option's state, so two
    /// sides that agree never loop (RFC 1143's rule, without its queue).
    fn answer(&mut self, command: Telnet, reply: &mut Vec<u8>) -> Result<(), HilError> {
        match command {
            Telnet::Negotiate { verb: DO, option } => match OURS.contains(&option) {
                true if !self.ours[option as usize] => {
                    self.ours[option as usize] = true;
                    reply.extend([IAC, WILL, option]);
                }
                true => {}
                false => reply.extend([IAC, WONT, option]),
            },
            Telnet::Negotiate { verb: DONT, option } => {
                if option == COM_PORT {
                    return Err(HilError::Open {
                        port: self.name.clone(),
                        reason: "the server refuses COM-PORT-OPTION (RFC 2217)".into(),
                    });
                }
                if std::mem::take(&mut self.ours[option as usize]) {
                    reply.extend([IAC, WONT, option]);
                }
            }
            Telnet::Negotiate { verb: WILL, option } => match THEIRS.contains(&option) {
                true if !self.theirs[option as usize] => {
                    self.theirs[option as usize] = true;
                    reply.extend([IAC, DO, option]);
                }
                true => {}
                false => reply.extend([IAC, DONT, option]),
            },
            Telnet::Negotiate { option, .. } => {
                if std::mem::take(&mut self.theirs[option as usize]) {
                    reply.extend([IAC, DONT, option]);
                }
            }
            Telnet::Sub(bytes) => {
                if let [COM_PORT, code, a, b, c, d] = bytes[..] {
                    if code == SET_BAUDRATE + SERVER {
                        self.baud = Some(u32::from_be_bytes([a, b, c, d]));
                    }
                }
                // Line and modem state notifications: nothing a byte link acts on.
            }
        }
        Ok(())
    }
}

impl Link for Rfc2217Link {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 64);
        escape_into(&mut out, bytes);
        self.stream.write_all(&out)?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        if self.pending.is_empty() {
            self.read_stream()?;
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(raw: &[u8], piece: usize) -> (Vec<u8>, Vec<Telnet>) {
        let (mut decoder, mut data, mut commands) = (Decoder::default(), Vec::new(), Vec::new());
        for chunk in raw.chunks(piece) {
            decoder.feed(chunk, &mut data, &mut commands);
        }
        (data, commands)
    }

    #[test]
    fn data_and_commands_come_apart_wherever_the_stream_splits() {
        let payload = [0x00, IAC, 0x0D, 0x0A, IAC, IAC, 0x7F];
        let mut raw = vec![IAC, WILL, BINARY];
        escape_into(&mut raw, &payload[..3]);
        raw.extend(com_port(SET_BAUDRATE + SERVER, &0x0001_C2FFu32.to_be_bytes()));
        escape_into(&mut raw, &payload[3..]);
        raw.extend([IAC, 241]); // NOP
        for piece in 1..=raw.len() {
            let (data, commands) = decode_in_pieces(&raw, piece);
            assert_eq!(data, payload, "split every {piece} bytes");
            assert_eq!(
                commands,
                [
                    Telnet::Negotiate { verb: WILL, option: BINARY },
                    Telnet::Sub(vec![COM_PORT, SET_BAUDRATE + SERVER, 0x00, 0x01, 0xC2, IAC]),
                ],
                "split every {piece} bytes"
            );
        }
    }

    #[test]
    fn a_server_that_does_not_speak_rfc2217_is_an_error_within_the_setup_time() {
        // A raw TCP port (ser2net's `tcp` accepter, a console server) takes the bytes and answers nothing.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::thread::spawn(move || listener.accept().map(|(conn, _)| conn));
        let clock = Instant::now();
        let e = Rfc2217Link::open("127.0.0.1", port, 921_600).err().expect("no RFC 2217 answer").to_string();
        assert!(clock.elapsed() < SETUP + Duration::from_secs(1), "{:?}", clock.elapsed());
        assert_eq!(
            e,
            format!(
                "cannot open serial port rfc2217://127.0.0.1:{port}: no answer to SET-BAUDRATE 921600 within 5s: \
                 not an RFC 2217 server (ser2net needs `telnet(rfc2217)`)"
            )
        );
        drop(held.join());
    }

    #[test]
    fn every_0xff_is_doubled_once() {
        let mut out = Vec::new();
        escape_into(&mut out, &[1, IAC, IAC, 2]);
        assert_eq!(out, [1, IAC, IAC, IAC, IAC, 2]);
    }
}
