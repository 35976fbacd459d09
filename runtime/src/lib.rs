//! The part of edgehil that runs on the board.
//!
//! The core (no features) is `#![no_std]` + `alloc` so that the same wire
//! types, framing and allocator accounting serve a microcontroller firmware
//! and the host: there is one definition of every message, not two that drift.
//! With `std` it adds the inference engines and the agent loop that the
//! `edgehil-agent` binary runs on Linux boards and on the emulated board.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod cap;
pub mod metrics;
pub mod wire;

#[cfg(feature = "std")]
pub mod agent;
#[cfg(feature = "std")]
pub mod engine;
#[cfg(feature = "std")]
pub mod generate;
#[cfg(feature = "std")]
pub mod retrieve;
#[cfg(feature = "std")]
pub mod sys;
