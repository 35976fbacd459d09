//! The emulated network between board and cloud: a TCP connection on
//! loopback through a shaping relay that delays each direction by half the
//! round trip and serializes its bytes at the link's rate (a token bucket
//! without burst), as `tc qdisc … netem delay rtt/2 rate R` does on each side.
//!
//! Linux netem itself is the first choice, in a network namespace of our
//! own; [`netem_probe`] says why it was not used here (this sandbox's kernel
//! has no `sch_netem`), and the report repeats it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The link's figures, as SPA's formula takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetParams {
    /// τ: one exchange's round trip.
    pub rtt: Duration,
    /// The link's rate in bits per second.
    pub bits_per_s: f64,
}

impl NetParams {
    /// SPA's T_data: the time `bytes` take at the link's rate.
    pub fn data_time(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 8.0 / self.bits_per_s)
    }

    /// SPA's M × (τ + T_data) for `m` exchanges carrying `bytes` between them.
    pub fn predicted(&self, m: u32, bytes: u64) -> Duration {
        self.rtt * m + self.data_time(bytes)
    }
}

/// A connection between a device end and a cloud end through the shaper.
pub struct EmulatedNet {
    device: TcpStream,
    cloud: TcpStream,
    relays: Vec<JoinHandle<()>>,
}

impl EmulatedNet {
    pub fn start(params: NetParams) -> std::io::Result<Self> {
        let front = TcpListener::bind("127.0.0.1:0")?;
        let back = TcpListener::bind("127.0.0.1:0")?;
        let device = TcpStream::connect(front.local_addr()?)?;
        let (relay_front, _) = front.accept()?;
        let relay_back = TcpStream::connect(back.local_addr()?)?;
        let (cloud, _) = back.accept()?;
        for s in [&device, &cloud, &relay_front, &relay_back] {
            s.set_nodelay(true)?;
        }
        let mut relays = Vec::new();
        relays.extend(shaped(relay_front.try_clone()?, relay_back.try_clone()?, params));
        relays.extend(shaped(relay_back, relay_front, params));
        Ok(Self { device, cloud, relays })
    }

    /// Sends `bytes` from the device to the cloud; gives the time until the cloud has them all.
    pub fn up(&mut self, bytes: &[u8]) -> std::io::Result<Duration> {
        transfer(&mut self.device, &mut self.cloud, bytes)
    }

    /// Sends `bytes` from the cloud to the device; gives the time until the device has them all.
    pub fn down(&mut self, bytes: &[u8]) -> std::io::Result<Duration> {
        transfer(&mut self.cloud, &mut self.device, bytes)
    }
}

impl Drop for EmulatedNet {
    fn drop(&mut self) {
        // The relays end when both ends are closed.
        let _ = self.device.shutdown(std::net::Shutdown::Both);
        let _ = self.cloud.shutdown(std::net::Shutdown::Both);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
    }
}

fn transfer(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Duration> {
    let started = Instant::now();
    // The relay reads whatever arrives into its queue, so this write never waits for the reader below.
    from.write_all(bytes)?;
    let mut got = vec![0u8; bytes.len()];
    to.read_exact(&mut got)?;
    Ok(started.elapsed())
}

/// One direction of the relay: a reader that stamps each chunk with the
/// time its last bit leaves the link (its serialization after the chunks
/// before it) plus the one-way delay, and a writer that delivers it then.
fn shaped(mut from: TcpStream, mut to: TcpStream, params: NetParams) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let one_way = params.rtt / 2;
    let reader = std::thread::spawn(move || {
        let mut free_at = Instant::now();
        // Small reads keep the store-and-forward error of one chunk small.
        let mut buf = [0u8; 1500];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            free_at = free_at.max(Instant::now()) + params.data_time(n as u64);
            if tx.send((free_at + one_way, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    [reader, writer]
}

/// Whether Linux netem can shape a link here: a `netem` qdisc on the
/// loopback of a new user and network namespace (`unshare -rn`). `Err`
/// says why not, in the words of `unshare`/`tc`.
pub fn netem_probe() -> Result<(), String> {
    let out = std::process::Command::new("unshare")
        .args(["-rn", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
        .output()
        .map_err(|e| format!("`unshare -rn tc …` could not start: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "`unshare -rn tc qdisc add dev lo root netem delay 1ms` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}
