use std::io::{Read, Write};
use std::str::FromStr;
use std::time::Duration;

use edgehil_wire::EngineKind;
use serialport::{SerialPort, TTYPort};

use crate::{ExitCause, HilError, McuMachine, QemuArch, VmInfo};

/// Where a run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The agent as a child process on a pseudo-terminal, capped as the profile says.
    Emulated,
    /// A board on a serial port.
    Serial { port: String, baud: Option<u32> },
    /// A place of a labgrid farm, reached over its network serial port.
    Labgrid { place: String },
    /// A Linux VM in QEMU with the profile's RAM and cores.
    Qemu { arch: QemuArch },
    /// The microcontroller firmware on a QEMU Cortex-M machine, its UART on a pseudo-terminal.
    QemuMcu { machine: McuMachine },
}

impl FromStr for Target {
    type Err = HilError;
    fn from_str(s: &str) -> Result<Self, HilError> {
        if s == "emu" {
            return Ok(Target::Emulated);
        }
        if let Some(machine) = s.strip_prefix("qemu:").and_then(|m| m.parse().ok()) {
            return Ok(Target::QemuMcu { machine });
        }
        if let Some(place) = s.strip_prefix("labgrid:").filter(|p| !p.is_empty()) {
            return Ok(Target::Labgrid { place: place.into() });
        }
        if let Some(arch) = s.strip_prefix("qemu:") {
            return Ok(Target::Qemu { arch: arch.parse().map_err(|_| HilError::BadTarget(s.into()))? });
        }
        let rest = s.strip_prefix("serial:").filter(|r| !r.is_empty()).ok_or_else(|| HilError::BadTarget(s.into()))?;
        match rest.rsplit_once('@') {
            Some((port, baud)) => {
                let baud = baud.parse().map_err(|_| HilError::BadTarget(s.into()))?;
                Ok(Target::Serial { port: port.into(), baud: Some(baud) })
            }
            None => Ok(Target::Serial { port: rest.into(), baud: None }),
        }
    }
}

/// What a target's latencies are worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// This machine's CPU (the emulated board): the profile's prediction stands for the device.
    Host,
    /// A real board's own clock: device latencies.
    Device,
    /// QEMU without KVM: TCG translates every guest instruction, so its latencies
    /// measure the emulator, not the device. What such a board validates is fit,
    /// the protocol and the numerics of the board's CPU.
    EmulatedInstructions,
}

impl Timing {
    pub fn name(self) -> &'static str {
        match self {
            Timing::Host => "host",
            Timing::Device => "device",
            Timing::EmulatedInstructions => "emulated-instruction",
        }
    }
}

impl Target {
    /// The one engine the board runs, whatever was asked: a microcontroller's micro engine.
    pub fn only_engine(&self) -> Option<EngineKind> {
        matches!(self, Target::QemuMcu { .. }).then_some(EngineKind::Micro)
    }

    pub fn timing(&self) -> Timing {
        match self {
            Target::Emulated => Timing::Host,
            Target::Serial { .. } | Target::Labgrid { .. } => Timing::Device,
            Target::Qemu { .. } | Target::QemuMcu { .. } => Timing::EmulatedInstructions,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Emulated => write!(f, "emu"),
            Target::Serial { port, baud: Some(b) } => write!(f, "serial:{port}@{b}"),
            Target::Serial { port, baud: None } => write!(f, "serial:{port}"),
            Target::Labgrid { place } => write!(f, "labgrid:{place}"),
            Target::Qemu { arch } => write!(f, "qemu:{arch}"),
            Target::QemuMcu { machine } => write!(f, "qemu:{machine}"),
        }
    }
}

/// A byte link to one board: the one transport trait. The serial port
/// ([`SerialLink`]) and the emulated board implement it, and so do the
/// boards to come (QEMU's serial port, RTT through a debug probe, a farm's
/// network serial port): a transport moves bytes and says when its board
/// is gone; framing, resends and timeouts are the session's.
pub trait Link: Send {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError>;
    /// Reads what is there, waiting at most the link's poll interval; 0 if nothing came.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError>;
    /// An error if the board is known to be gone (the emulated board's process ended).
    fn check_alive(&mut self) -> Result<(), Exited> {
        Ok(())
    }
    /// The VM this link reaches, if it is one (a QEMU board).
    fn vm(&self) -> Option<&VmInfo> {
        None
    }
}

/// A board known to be gone: how its agent ended and its last words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub cause: ExitCause,
    pub stderr: String,
}

/// Whether a board that is a child process (the emulated board's agent, QEMU)
/// has ended, remembering it in `exited`; its last words are in `output`.
pub(crate) fn check_child(
    child: &mut std::process::Child,
    exited: &mut Option<std::process::ExitStatus>,
    output: &std::sync::Mutex<String>,
) -> Result<(), Exited> {
    if exited.is_none() {
        *exited = child.try_wait().ok().flatten();
    }
    match *exited {
        None => Ok(()),
        Some(status) => {
            // Give the output's reader a moment to collect the last words.
            std::thread::sleep(Duration::from_millis(20));
            Err(Exited { cause: status.into(), stderr: output.lock().expect("output lock").clone() })
        }
    }
}

/// How long one read waits before the session looks at its clocks and the
/// board's process: short enough to notice a dead board at once, long
/// enough that an idle host does not wake often, since on an emulated board
/// each wake takes a core from the board's engine.
pub(crate) const POLL: Duration = Duration::from_millis(100);

pub struct SerialLink {
    port: TTYPort,
}

impl SerialLink {
    pub fn open(port: &str, baud: u32) -> Result<Self, HilError> {
        let port_handle = serialport::new(port, baud)
            .timeout(POLL)
            .open_native()
            .map_err(|e| HilError::Open { port: port.into(), reason: e.to_string() })?;
        Ok(Self { port: port_handle })
    }

    pub(crate) fn from_port(mut port: TTYPort) -> Result<Self, HilError> {
        port.set_timeout(POLL).map_err(|e| HilError::Open { port: "pty".into(), reason: e.to_string() })?;
        Ok(Self { port })
    }
}

impl Link for SerialLink {
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        self.port.write_all(bytes)?;
        self.port.flush()?;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, HilError> {
        match self.port.read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!("emu".parse::<Target>().unwrap(), Target::Emulated);
        assert_eq!(
            "serial:/dev/ttyUSB0@921600".parse::<Target>().unwrap(),
            Target::Serial { port: "/dev/ttyUSB0".into(), baud: Some(921600) }
        );
        assert_eq!("serial:COM3".parse::<Target>().unwrap(), Target::Serial { port: "COM3".into(), baud: None });
        for machine in McuMachine::ALL {
            let text = format!("qemu:{machine}");
            assert_eq!(text.parse::<Target>().unwrap(), Target::QemuMcu { machine });
            assert_eq!(Target::QemuMcu { machine }.to_string(), text);
        }
        assert_eq!("labgrid:rack-3".parse::<Target>().unwrap(), Target::Labgrid { place: "rack-3".into() });
        assert_eq!(Target::Labgrid { place: "rack-3".into() }.to_string(), "labgrid:rack-3");
        for arch in QemuArch::ALL {
            let text = format!("qemu:{arch}");
            assert_eq!(text.parse::<Target>().unwrap(), Target::Qemu { arch });
            assert_eq!(Target::Qemu { arch }.to_string(), text);
        }
        for bad in [
            "",
            "serial:",
            "usb:x",
            "serial:/dev/x@fast",
            "labgrid:",
            "qemu:",
            "qemu:riscv64",
            "qemu:aarch64:x",
            "qemu:mps2-an999",
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("labgrid:PLACE") && e.contains("qemu:aarch64"),
                "{e}"
            );
        }
    }
}
