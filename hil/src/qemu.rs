//! A Linux board in QEMU: the VM process, its console log and the agent's
//! UART exposed as a pseudo-terminal, reached through [`SerialLink`].
//!
//! The VM boots an image (a kernel and an initramfs whose init starts the
//! agent on a second UART and prints markers on the console); the console
//! goes to a log file of its own, so the kernel's words (its OOM killer
//! above all) never mix with the agent's frames. There is no KVM here, so
//! QEMU runs under TCG: what a QEMU board validates is fit under a real
//! kernel and RAM size, the protocol over a UART and the numerics of the
//! board's CPU, not its latencies.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::link::{Exited, SerialLink};
use crate::{ExitCause, HilError, Link};

/// The CPU architecture of a QEMU board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QemuArch {
    /// Machine `virt` with a Cortex-A76 (the Raspberry Pi 5's core).
    Aarch64,
    /// Machine `pc` with QEMU's `max` CPU (every extension TCG emulates).
    X86_64,
}

impl QemuArch {
    pub const ALL: [QemuArch; 2] = [QemuArch::Aarch64, QemuArch::X86_64];

    pub fn name(self) -> &'static str {
        match self {
            QemuArch::Aarch64 => "aarch64",
            QemuArch::X86_64 => "x86_64",
        }
    }

    /// The QEMU program that emulates it.
    pub fn program(self) -> &'static str {
        match self {
            QemuArch::Aarch64 => "qemu-system-aarch64",
            QemuArch::X86_64 => "qemu-system-x86_64",
        }
    }

    pub fn machine(self) -> &'static str {
        match self {
            QemuArch::Aarch64 => "virt",
            QemuArch::X86_64 => "pc",
        }
    }

    pub fn cpu(self) -> &'static str {
        match self {
            QemuArch::Aarch64 => "cortex-a76",
            QemuArch::X86_64 => "max",
        }
    }

    /// The guest's console device.
    fn console(self) -> &'static str {
        match self {
            QemuArch::Aarch64 => "ttyAMA0",
            QemuArch::X86_64 => "ttyS0",
        }
    }

    /// The agent's UART: the second 16550 on a PC; on `virt`, which has one
    /// PL011 (the console), a PCI 16550 (8250_pci is built into Debian's kernel).
    fn link_device(self) -> [&'static str; 2] {
        match self {
            QemuArch::Aarch64 => ["-device", "pci-serial,chardev=link"],
            QemuArch::X86_64 => ["-serial", "chardev:link"],
        }
    }
}

impl FromStr for QemuArch {
    type Err = HilError;
    fn from_str(s: &str) -> Result<Self, HilError> {
        QemuArch::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| HilError::BadTarget(format!("qemu:{s}")))
    }
}

impl std::fmt::Display for QemuArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a QEMU board boots and with how much.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub arch: QemuArch,
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The gzipped cpio initramfs whose init prints [`AGENT_STARTED`] and starts the agent.
    pub initrd: PathBuf,
    /// The VM's RAM: the profile's total.
    pub ram_bytes: u64,
    /// The VM's cores: the profile's.
    pub cores: u32,
    /// The agent's heap cap (0: none), passed on the kernel command line.
    pub agent_cap: u64,
    pub agent_threads: usize,
    /// Where the guest's console is written.
    pub console_log: PathBuf,
    /// Longest the boot may take, from starting QEMU to the agent's start.
    pub boot_timeout: Duration,
}

/// The init's line when the agent starts; then "EDGEHIL-AGENT-EXIT CODE" when it ends.
pub const AGENT_STARTED: &str = "EDGEHIL-AGENT-START";
const AGENT_EXIT: &str = "EDGEHIL-AGENT-EXIT ";
/// The guest kernel's OOM killer (mm/oom_kill.c).
const OOM_KILLED: &str = "Out of memory: Killed process";

/// A booted QEMU board, as the report describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmInfo {
    pub arch: QemuArch,
    pub ram_bytes: u64,
    pub cores: u32,
    pub console_log: PathBuf,
    /// From starting QEMU to the agent's start.
    pub boot: Duration,
}

/// A running VM; killed when dropped.
pub struct QemuBoard {
    link: SerialLink,
    child: Child,
    info: VmInfo,
    /// How far the console log has been read.
    console_read: u64,
    /// The console since the agent last started (what an ended agent left).
    since_start: String,
    exited: Option<Exited>,
}

impl QemuBoard {
    /// Starts QEMU and waits for the agent to start.
    pub fn boot(config: &QemuConfig) -> Result<Self, HilError> {
        let program = config.arch.program();
        let spawn_err = |cause| HilError::Spawn { agent: program.into(), cause };
        let append = format!(
            "console={} quiet panic=-1 edgehil.cap={} edgehil.threads={}",
            config.arch.console(),
            config.agent_cap,
            config.agent_threads
        );
        let mut console_arg = std::ffi::OsString::from("file:");
        console_arg.push(&config.console_log);
        let mut cmd = Command::new(program);
        cmd.args(["-M", config.arch.machine(), "-cpu", config.arch.cpu(), "-accel", "tcg"])
            .args(["-m", &format!("{}M", config.ram_bytes.div_ceil(1 << 20))])
            .args(["-smp", &config.cores.to_string()])
            // No network: nothing needs it, and the PC's boot ROM would try it first.
            .args(["-nographic", "-no-reboot", "-monitor", "none", "-nic", "none"])
            .arg("-kernel")
            .arg(&config.kernel)
            .arg("-initrd")
            .arg(&config.initrd)
            .args(["-append", &append])
            .arg("-serial")
            .arg(console_arg)
            .args(["-chardev", "pty,id=link"])
            .args(config.arch.link_device())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let lines = read_lines(child.stdout.take(), child.stderr.take());
        let pty = match wait_for_pty(&mut child, &lines, config, started) {
            Ok(pty) => pty,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let link = match SerialLink::open(&pty, 115_200) {
            Ok(link) => link,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        // From here on, dropping the board kills the VM.
        let mut board = Self {
            link,
            child,
            info: VmInfo {
                arch: config.arch,
                ram_bytes: config.ram_bytes,
                cores: config.cores,
                console_log: config.console_log.clone(),
                boot: Duration::ZERO,
            },
            console_read: 0,
            since_start: String::new(),
            exited: None,
        };
        board.wait_for_agent(config, started)?;
        Ok(board)
    }

    fn wait_for_agent(&mut self, config: &QemuConfig, started: Instant) -> Result<(), HilError> {
        loop {
            self.read_console();
            if let Some((_, after)) = self.since_start.split_once(AGENT_STARTED) {
                self.info.boot = started.elapsed();
                self.since_start = after.to_string();
                return Ok(());
            }
            let status = self.child.try_wait().ok().flatten();
            if status.is_some() || started.elapsed() > config.boot_timeout {
                return Err(boot_error(config, started, status, ""));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the VM is and how long it took to boot.
    pub fn info(&self) -> &VmInfo {
        &self.info
    }

    /// Appends what the console wrote since the last read.
    fn read_console(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.info.console_log) else { return };
        if file.seek(SeekFrom::Start(self.console_read)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if let Ok(n) = file.read_to_end(&mut bytes) {
            self.console_read += n as u64;
            self.since_start.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

/// Waits for QEMU to name the link's pty; an error if it ends or the boot times out first.
fn wait_for_pty(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    config: &QemuConfig,
    started: Instant,
) -> Result<String, HilError> {
    let mut said = Vec::new();
    loop {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            match pty_of(&line) {
                Some(pty) => return Ok(pty),
                None => said.push(line),
            }
        }
        let status = child.try_wait().ok().flatten();
        if status.is_some() || started.elapsed() > config.boot_timeout {
            // QEMU's last words reach the pipes just after it ends.
            std::thread::sleep(Duration::from_millis(50));
            said.extend(lines.try_iter());
            return Err(boot_error(config, started, status, &said.join(" | ")));
        }
    }
}

/// "char device redirected to /dev/pts/3 (label link)" → "/dev/pts/3".
pub(crate) fn pty_of(line: &str) -> Option<String> {
    let rest = line.strip_prefix("char device redirected to ")?;
    let (path, label) = rest.split_once(' ')?;
    (label.trim() == "(label link)").then(|| path.to_string())
}

/// QEMU's stdout and stderr, line by line, on one channel.
pub(crate) fn read_lines(
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let pipes: [Option<Box<dyn Read + Send>>; 2] =
        [stdout.map(|p| Box::new(p) as Box<dyn Read + Send>), stderr.map(|p| Box::new(p) as Box<dyn Read + Send>)];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // Read to the end even once nobody listens: a full pipe would stop QEMU.
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    rx
}

/// The last lines of a console log, for errors.
pub fn console_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Why a QEMU board did not come up, with what QEMU and the console said last.
#[derive(Debug, thiserror::Error)]
#[error(
    "QEMU board {arch} did not boot within {waited:.1?}{}{}; console log {} ends: {console_tail}",
    exit.map(|e| format!(" (QEMU ended: {e})")).unwrap_or_default(),
    if qemu_said.is_empty() { String::new() } else { format!("; QEMU said: {qemu_said}") },
    console_log.display()
)]
pub struct BootFailure {
    pub arch: QemuArch,
    pub waited: Duration,
    pub exit: Option<ExitCause>,
    pub qemu_said: String,
    pub console_log: PathBuf,
    pub console_tail: String,
}

fn boot_error(config: &QemuConfig, started: Instant, status: Option<ExitStatus>, qemu_said: &str) -> HilError {
    HilError::Boot(Box::new(BootFailure {
        arch: config.arch,
        waited: started.elapsed(),
        exit: status.map(ExitCause::from),
        qemu_said: qemu_said.into(),
        console_log: config.console_log.clone(),
        console_tail: console_tail(&config.console_log, 8),
    }))
}

impl Link for QemuBoard {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        self.link.send(bytes)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        self.link.recv(buf)
    }

    /// The agent is gone when the console says it ended (killed by the
    /// guest's OOM killer, or exited), or when QEMU itself ended.
    fn check_alive(&mut self) -> Result<(), Exited> {
        if let Some(e) = &self.exited {
            return Err(e.clone());
        }
        self.read_console();
        let tail = || console_tail(&self.info.console_log, 5);
        let cause = if let Some(status) = self.child.try_wait().ok().flatten() {
            Some(ExitCause::from(status))
        } else if let Some((_, after)) = self.since_start.split_once(AGENT_EXIT) {
            // The line is complete once its newline is there.
            let code = after.split_once('\n').map(|(c, _)| c.trim().parse::<i32>().unwrap_or(-1));
            code.map(|code| match code {
                _ if self.since_start.contains(OOM_KILLED) => ExitCause::KernelOom { ram: self.info.ram_bytes },
                // The shell's 128 + N for a signal.
                129..=192 => ExitCause::Signal(code - 128),
                86 => ExitCause::OutOfMemory,
                code => ExitCause::Code(code),
            })
        } else {
            None
        };
        match cause {
            None => Ok(()),
            Some(cause) => {
                let exited =
                    Exited { cause, stderr: format!("console {}: {}", self.info.console_log.display(), tail()) };
                self.exited = Some(exited.clone());
                Err(exited)
            }
        }
    }

    fn vm(&self) -> Option<&VmInfo> {
        Some(&self.info)
    }
}

impl Drop for QemuBoard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_link_pty_in_qemu_output() {
        assert_eq!(pty_of("char device redirected to /dev/pts/7 (label link)"), Some("/dev/pts/7".into()));
        assert_eq!(pty_of("char device redirected to /dev/pts/7 (label serial0)"), None);
        assert_eq!(pty_of("qemu-system-aarch64: -m 9T: ram size too large"), None);
    }

    #[test]
    fn parses_archs() {
        for arch in QemuArch::ALL {
            assert_eq!(arch.name().parse::<QemuArch>().unwrap(), arch);
        }
        assert!("riscv64".parse::<QemuArch>().unwrap_err().to_string().contains("qemu:riscv64"));
    }
}
