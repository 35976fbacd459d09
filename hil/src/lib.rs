//! Links from the host to boards, and the board session that runs over them.
//!
//! [`Link`] is the one transport: a real board on a UART and the emulated
//! board (the same agent binary as a child process on a pseudo-terminal
//! pair) implement it, and so does a labgrid place's network serial port
//! (RFC 2217, [`labgrid`]), as will QEMU boards and RTT through a probe.
//! The [`Session`] sees only the trait, so the emulated board exercises
//! exactly the code path of a real one, down to the serial port settings.
//! [`Session::upload`] puts a model and the files beside it on a board that
//! does not share the host's files. With the feature `testing`, [`testing`]
//! adds an in-memory link and one that damages chosen frames.

mod emulated;
mod error;
pub mod labgrid;
mod link;
pub mod process;
mod qemu;
mod qemu_mcu;
mod rfc2217;
mod session;
mod upload;

pub use emulated::{EmulatedBoard, EmulatorConfig};
pub use error::{ExitCause, HilError};
pub use link::{Exited, Link, SerialLink, Target, Timing};
pub use qemu::{console_tail, BootFailure, QemuArch, QemuBoard, QemuConfig, VmInfo, AGENT_STARTED};
pub use qemu_mcu::{instructions, McuConfig, McuMachine, QemuMcu, BOOT_CAP_ADDR, MODEL_ADDR, MODEL_MAX_BYTES};
pub use rfc2217::Rfc2217Link;
pub use session::{InferResult, LinkStats, OutputData, Session, Timeouts};
pub use upload::{Bundle, BundleFile, UploadStep, Uploaded};

#[cfg(feature = "testing")]
pub mod testing;
