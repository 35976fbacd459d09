//! The edgehil host harness.
//!
//! A run goes: pick a device profile → compute the reference on the host
//! (fp32, uncapped, tract) → predict the device latency from the graph →
//! run the model on the board (or the emulated board) under the profile's
//! RAM cap → compare. The board's figures and the prediction sit side by
//! side in the report because the emulated board's timings are host timings:
//! the prediction is what to expect on the device until a real board says
//! otherwise.

pub mod accuracy;
pub mod board;
pub mod calibrate;
pub mod catalog;
pub mod estimate;
pub mod eval;
pub mod generate;
pub mod inputs;
pub mod listing;
pub mod mcu;
pub mod plan;
pub mod profile;
pub mod report;
pub mod run;
pub mod split;
pub mod study;
pub mod suite;
pub mod sweep;
pub mod text;
pub mod train;
pub mod units;
