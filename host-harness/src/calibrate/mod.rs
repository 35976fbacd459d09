//! `edgehil calibrate`: the latency model's parameters fitted to measured runs.
//!
//! The model is [`estimate`](crate::estimate)'s: latency = FLOPs / compute + bytes /
//! bandwidth + call overhead + ops × op overhead + tokens × token overhead
//! (+ the 4-bit unpack terms), with `compute_int8` in place of `compute`
//! where the engine runs int8 kernels. The fit minimises the squared log
//! error (a relative error, the same for a case measured twice as slow as
//! for one twice as fast) over every usable case: a log grid over the
//! rates, then coordinate descent, then Nelder–Mead.
//! Overheads are kept ≥ 0 and lightly pulled towards 0, so that of two
//! explanations the cases fit equally well, the one with arithmetic wins.
//!
//! A parameter the cases cannot determine is not fitted: a compute rate no
//! case exercises is the other scaled by the profile's peak_int8 /
//! peak_fp32; the token overhead is 0 if no case has prompt tokens, or if
//! the cases' FLOPs per token differ by less than [`SEPARABLE`] (one model's
//! prompts at several lengths): there a per-token overhead would stand in
//! for arithmetic, which grows with the model while the overhead does not.
//! Likewise one model's cases cannot tell a fixed overhead from one per op:
//! it is all counted per op, as a deeper model pays more.

mod fit;
mod read;
mod render;
mod write;

pub use fit::{fit, Fit, FitRow, Param, PerParam, SEPARABLE};
pub use read::{read, Case, Filter, Measured};
pub use write::{calibrate, default_out, Calibrated};

use std::path::PathBuf;

use crate::profile::ProfileError;
use crate::suite::record::JournalError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrateError {
    /// the measurements file could not be read
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    /// the file looks like `edgehil run --json` output but is not
    #[error("{path}:{line}: not a list of run reports: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    /// the file looks like a suite journal but is not
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// fewer usable cases than parameters to fit
    #[error(
        "{usable} usable cases for {} parameters ({}): measure more runs (status ok, with a latency and a cost)",
        parameters.len(),
        parameters.join(", ")
    )]
    TooFewCases { usable: usize, parameters: Vec<&'static str> },
    /// the usable cases come from more than one engine or target
    #[error("{path}: cases from several {what}s ({found}); choose one with --{what}")]
    Mixed { path: PathBuf, what: &'static str, found: String },
    /// the calibrated profile does not load
    #[error(transparent)]
    Profile(#[from] ProfileError),
}
