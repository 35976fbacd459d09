//! A microcontroller board in QEMU: the firmware (runtime/firmware) on one of
//! QEMU's Cortex-M machines, the micro-model and the heap cap placed in its
//! flash by QEMU's generic loader, the firmware's UART on a pseudo-terminal.
//!
//! QEMU has no nRF52840 or STM32H7: a profile's board runs on the Cortex-M
//! machine of its core, with the profile's usable RAM as the heap cap.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc::Receiver;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::link::{check_child, Exited, SerialLink};
use crate::qemu::{pty_of, read_lines};
use crate::{HilError, Link};

/// Where the firmware's linker script (runtime/firmware/link.x) reads the heap cap (a little-endian u32; 0: none).
pub const BOOT_CAP_ADDR: u32 = 0x0020_0000;
/// Where the host puts the micro-model: the start of the firmware's models region.
pub const MODEL_ADDR: u32 = 0x0021_0000;
/// Largest micro-model the models region holds (it ends at 4 MiB).
pub const MODEL_MAX_BYTES: u64 = 0x0040_0000 - MODEL_ADDR as u64;

/// QEMU's `-icount` shift: each instruction advances the virtual clock by
/// 2^shift ns, so the firmware's clock (SysTick on the virtual clock) counts
/// instructions, whatever the host's load.
const ICOUNT_SHIFT: u32 = 0;

/// The instructions a run executed, from the cycles the firmware counted at
/// its `clock_hz` on QEMU's virtual clock (see [`ICOUNT_SHIFT`]).
pub fn instructions(cycles: u64, clock_hz: u64) -> u64 {
    let ns = u128::from(cycles) * 1_000_000_000 / u128::from(clock_hz.max(1));
    (ns >> ICOUNT_SHIFT) as u64
}

/// How long QEMU may take to say which pseudo-terminal is the UART.
const START: Duration = Duration::from_secs(10);

/// A QEMU Cortex-M machine the firmware runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McuMachine {
    /// Arm MPS2 with the AN386 image: Cortex-M4F, CMSDK UART.
    Mps2An386,
    /// Arm MPS2 with the AN500 image: Cortex-M7, the same memory map and UART.
    Mps2An500,
}

impl McuMachine {
    pub const ALL: [McuMachine; 2] = [McuMachine::Mps2An386, McuMachine::Mps2An500];

    /// QEMU's name for it (`-M`).
    pub fn name(self) -> &'static str {
        match self {
            McuMachine::Mps2An386 => "mps2-an386",
            McuMachine::Mps2An500 => "mps2-an500",
        }
    }

    /// The core it emulates.
    pub fn core(self) -> &'static str {
        match self {
            McuMachine::Mps2An386 => "Cortex-M4F",
            McuMachine::Mps2An500 => "Cortex-M7",
        }
    }
}

impl FromStr for McuMachine {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        McuMachine::ALL.into_iter().find(|m| m.name() == s).ok_or(())
    }
}

impl std::fmt::Display for McuMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to boot the board.
#[derive(Debug, Clone)]
pub struct McuConfig {
    pub machine: McuMachine,
    /// The firmware ELF (scripts/firmware.sh).
    pub firmware: PathBuf,
    /// The micro-model file, placed at [`MODEL_ADDR`].
    pub model: Option<PathBuf>,
    /// Heap cap in bytes (the profile's usable RAM), placed at [`BOOT_CAP_ADDR`]; 0: the whole arena.
    pub cap: u64,
}

/// QEMU running the firmware, its UART on a pseudo-terminal.
pub struct QemuMcu {
    link: SerialLink,
    child: Child,
    /// QEMU's stdout and stderr, and what they said so far (for the report of its end).
    lines: Receiver<String>,
    output: Mutex<String>,
    exited: Option<ExitStatus>,
}

impl QemuMcu {
    pub const QEMU: &'static str = "qemu-system-arm";

    pub fn boot(config: &McuConfig) -> Result<Self, HilError> {
        let spawn_err = |cause| HilError::Spawn { agent: format!("{} -M {}", Self::QEMU, config.machine), cause };
        let cap = u32::try_from(config.cap).map_err(|_| {
            spawn_err(std::io::Error::other(format!(
                "a cap of {} bytes does not fit the firmware's 32-bit cap word",
                config.cap
            )))
        })?;
        let mut cmd = Command::new(Self::QEMU);
        cmd.args(["-M", config.machine.name(), "-nographic", "-monitor", "none"])
            .arg("-icount")
            .arg(format!("shift={ICOUNT_SHIFT}"))
            // The UART on a pty named `link`, as the Linux boards' link (`qemu.rs`).
            .args(["-chardev", "pty,id=link", "-serial", "chardev:link", "-kernel"])
            .arg(&config.firmware)
            .arg("-device")
            .arg(format!("loader,addr={BOOT_CAP_ADDR:#x},data={cap},data-len=4"));
        if let Some(model) = &config.model {
            let mut spec = std::ffi::OsString::from("loader,force-raw=on,addr=");
            spec.push(format!("{MODEL_ADDR:#x},file="));
            spec.push(model);
            cmd.arg("-device").arg(spec);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let lines = read_lines(child.stdout.take(), child.stderr.take());
        let started = Instant::now();
        let mut said = Vec::new();
        let pty = loop {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                match pty_of(&line) {
                    Some(pty) => break pty,
                    None => said.push(line),
                }
            }
            if started.elapsed() > START || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                said.extend(lines.try_iter());
                return Err(spawn_err(std::io::Error::other(format!(
                    "QEMU named no serial pseudo-terminal within {START:?}; it said: {}",
                    said.join(" | ")
                ))));
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
        Ok(Self { link, child, lines, output: Mutex::new(said.join("\n")), exited: None })
    }
}

impl Link for QemuMcu {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        self.link.send(bytes)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        self.link.recv(buf)
    }

    fn check_alive(&mut self) -> Result<(), Exited> {
        let output = self.output.get_mut().expect("output lock");
        for line in self.lines.try_iter() {
            output.push('\n');
            output.push_str(&line);
        }
        check_child(&mut self.child, &mut self.exited, &self.output)
    }
}

impl Drop for QemuMcu {
    fn drop(&mut self) {
        // A microcontroller does not power itself off: the board ends with QEMU.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
