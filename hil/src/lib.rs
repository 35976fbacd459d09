//! Links from the host to boards, and the board session that runs over them.
//!
//! A real board on a UART and the emulated board (the same agent binary as a
//! child process on a pseudo-terminal pair) are the same [`Link`] to the
//! [`Session`]: the emulated board exercises exactly the code path of a
//! real one, down to the serial port settings.

mod emulated;
mod error;
mod link;
mod session;

pub use emulated::{describe, EmulatedBoard, EmulatorConfig};
pub use error::HilError;
pub use link::{Link, SerialLink, Target};
pub use session::{Faults, InferResult, LinkStats, OutputData, Session, Timeouts};
