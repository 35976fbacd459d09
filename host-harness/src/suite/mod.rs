//! Nightly suites: a matrix of cases from one TOML file, run one worker
//! process per case, each result appended to a journal as it completes.

pub mod compare;
pub mod file;
pub mod html;
pub mod record;
pub mod reports;
pub mod runner;
