//! Links from the host to boards, and the board session that runs over them.
//!
//! [`Link`] is the one transport: a real board on a UART and the emulated
//! board (the same agent binary as a child process on a pseudo-terminal
//! pair) implement it, as will QEMU boards, RTT through a probe and a board
//! farm's network serial ports. The [`Session`] sees only the trait, so the
//! emulated board exercises exactly the code path of a real one, down to the
//! serial port settings. With the feature `testing`, [`testing`] adds an
//! in-memory link and one that damages chosen frames.

mod emulated;
mod error;
mod link;
mod qemu_mcu;
mod session;

pub use emulated::{EmulatedBoard, EmulatorConfig};
pub use error::{ExitCause, HilError};
pub use link::{Exited, Link, SerialLink, Target, Timing};
pub use qemu_mcu::{McuConfig, McuMachine, QemuMcu, BOOT_CAP_ADDR, MODEL_ADDR, MODEL_MAX_BYTES};
pub use session::{InferResult, LinkStats, OutputData, Session, Timeouts};

#[cfg(feature = "testing")]
pub mod testing;
