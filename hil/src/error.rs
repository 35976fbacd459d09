use std::time::Duration;

use edgehil_wire::{AgentError, ChunkError, EXIT_OUT_OF_MEMORY};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HilError {
    /// a target string that is not emu, serial:PORT[@baud], labgrid:PLACE, qemu:ARCH or qemu:MACHINE
    #[error(
        "bad target `{0}`: expected `emu`, `serial:PORT[@BAUD]` (e.g. serial:/dev/ttyUSB0@115200), `labgrid:PLACE`, `qemu:aarch64` or `qemu:x86_64` (a Linux VM), or `qemu:mps2-an386` / `qemu:mps2-an500` (a Cortex-M4 / M7 microcontroller)"
    )]
    BadTarget(String),
    /// the serial port could not be opened
    #[error("cannot open serial port {port}: {reason}")]
    Open { port: String, reason: String },
    /// a labgrid place could not be acquired or has no serial port
    #[error(transparent)]
    Labgrid(Box<crate::labgrid::LabgridError>),
    /// the agent process could not be started
    #[error("cannot start the agent {agent}: {cause}")]
    Spawn { agent: String, cause: std::io::Error },
    /// a QEMU board did not come up
    #[error(transparent)]
    Boot(Box<crate::qemu::BootFailure>),
    /// reading or writing the link failed
    #[error("link I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// the board stopped answering
    #[error("board did not answer {command} within {waited:.1?} ({sends} sends; no frame for {silent:.1?})")]
    Timeout { command: &'static str, waited: Duration, sends: u32, silent: Duration },
    /// the agent process ended while a request was open
    #[error("agent exited during {command}: {cause}{}", stderr_tail(.stderr))]
    AgentExited { command: &'static str, cause: ExitCause, stderr: String },
    /// host and agent speak different protocol versions
    #[error("protocol version mismatch: the agent speaks version {agent}, this host speaks version {host}; update the agent on the board")]
    VersionMismatch { agent: u16, host: u16 },
    /// the agent answered with an error
    #[error("board error during {command}: {error}")]
    Agent { command: &'static str, error: AgentError },
    /// the agent answered something that does not answer the request
    #[error("unexpected answer to {command}: {event}")]
    Unexpected { command: &'static str, event: String },
    /// an output chunk that does not continue its tensor
    #[error("bad output in the answer to {command}: {error}")]
    BadOutput { command: &'static str, error: ChunkError },
    /// a file to upload that cannot be read, or that changed while it was sent
    #[error("cannot upload {path}: {reason}")]
    File { path: String, reason: String },
    /// a request too large for one frame
    #[error("cannot encode {command}: {reason}")]
    Encode { command: &'static str, reason: String },
}

// Boxed: its texts would double the size of every `Result` a session returns.
impl From<crate::labgrid::LabgridError> for HilError {
    fn from(e: crate::labgrid::LabgridError) -> Self {
        HilError::Labgrid(Box::new(e))
    }
}

/// How a board's agent process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// Stopped by its memory cap ([`EXIT_OUT_OF_MEMORY`]).
    OutOfMemory,
    Code(i32),
    Signal(i32),
    /// Killed by the board kernel's OOM killer (a QEMU board's console said so); `ram` is the board's RAM.
    KernelOom {
        ram: u64,
    },
}

impl From<std::process::ExitStatus> for ExitCause {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(EXIT_OUT_OF_MEMORY), _) => ExitCause::OutOfMemory,
            (Some(code), _) => ExitCause::Code(code),
            (None, Some(signal)) => ExitCause::Signal(signal),
            // A waited-for process has either; the raw status is what is left.
            (None, None) => ExitCause::Code(status.into_raw()),
        }
    }
}

/// "exit code 86" or "killed by signal 9".
impl std::fmt::Display for ExitCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitCause::OutOfMemory => write!(f, "exit code {EXIT_OUT_OF_MEMORY}"),
            ExitCause::Code(code) => write!(f, "exit code {code}"),
            ExitCause::Signal(signal) => write!(f, "killed by signal {signal}"),
            ExitCause::KernelOom { .. } => write!(f, "killed by the board kernel's OOM killer"),
        }
    }
}

fn stderr_tail(stderr: &str) -> String {
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; agent stderr: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
    }
}
