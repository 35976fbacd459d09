//! The part of edgehil that runs on the board.
//!
//! The wire types, framing, metric types and allocator accounting live in
//! `edgehil-wire` (no_std, shared with firmware and the host) and are
//! re-exported here under their old paths. With `std` this crate adds the
//! inference engines and the agent loop that the `edgehil-agent` binary runs
//! on Linux boards and on the emulated board.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub use edgehil_wire as wire;
pub use edgehil_wire::{cap, metrics};

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
#[cfg(feature = "std")]
pub mod train;
