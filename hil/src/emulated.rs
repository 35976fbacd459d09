use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use serialport::{SerialPort, TTYPort};

use crate::link::{check_child, Exited, SerialLink};
use crate::{HilError, Link};

/// How to start the emulated board.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The `edgehil-agent` binary.
    pub agent: PathBuf,
    /// Heap cap in bytes: the profile's usable RAM.
    pub cap: u64,
    /// Engine threads: the profile's cores, at most the host's.
    pub threads: usize,
    pub ort_library: Option<PathBuf>,
    /// Give the agent storage for uploads: a temporary folder of this
    /// board's own, removed with it. Without it uploads are held in RAM.
    pub storage: bool,
    /// Further agent arguments.
    pub extra_args: Vec<String>,
}

/// The agent as a child process, connected by a pseudo-terminal pair.
pub struct EmulatedBoard {
    link: SerialLink,
    child: Child,
    // Held open (unlocked, so the agent can lock its own) so that the master
    // sees no hang-up before the agent opens the slave or after it exits.
    _slave: TTYPort,
    stderr: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
    /// The agent's `--storage` folder, if it has one.
    storage: Option<PathBuf>,
}

impl EmulatedBoard {
    pub fn spawn(config: &EmulatorConfig) -> Result<Self, HilError> {
        let spawn_err = |cause| HilError::Spawn { agent: config.agent.display().to_string(), cause };
        let (master, slave) = TTYPort::pair().map_err(|e| spawn_err(e.into()))?;
        let slave_path = slave.name().ok_or_else(|| spawn_err(std::io::Error::other("pty without a name")))?;
        let mut cmd = Command::new(&config.agent);
        cmd.arg("--port")
            .arg(&slave_path)
            .arg("--cap")
            .arg(config.cap.to_string())
            .arg("--threads")
            .arg(config.threads.to_string())
            .args(&config.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(lib) = &config.ort_library {
            cmd.arg("--ort-library").arg(lib);
        }
        let storage = match config.storage {
            true => {
                let dir = storage_dir();
                std::fs::create_dir_all(&dir).map_err(spawn_err)?;
                cmd.arg("--storage").arg(&dir);
                Some(dir)
            }
            false => None,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().expect("stderr lock").push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Ok(Self { link: SerialLink::from_port(master)?, child, _slave: slave, stderr, exited: None, storage })
    }

    /// The folder the agent stores uploads in, if it was given one.
    pub fn storage(&self) -> Option<&std::path::Path> {
        self.storage.as_deref()
    }

    /// The agent's process id (for tests that kill or stop it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Link for EmulatedBoard {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        self.link.send(bytes)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        self.link.recv(buf)
    }

    fn check_alive(&mut self) -> Result<(), Exited> {
        check_child(&mut self.child, &mut self.exited, &self.stderr)
    }
}

/// A folder no other emulated board of any process uses.
fn storage_dir() -> PathBuf {
    static BOARDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BOARDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::env::temp_dir().join(format!("edgehil-emu-storage-{}-{n}", std::process::id()))
}

impl Drop for EmulatedBoard {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.storage {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl EmulatedBoard {
    /// Waits briefly for a shut-down agent to exit by itself; kills one that does not.
    fn stop(&mut self) {
        for _ in 0..20 {
            if self.exited.is_some() || self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
