//! The end-to-end tests, one module per area, linked into one test binary:
//! each binary links tract, ONNX Runtime's bindings and tokenizers, and a
//! binary per area cost CI most of its disk.

mod common;

mod agent_stdio;
mod calibrate;
mod cli;
mod emulated_board;
mod eval;
mod export;
mod failures;
mod generate;
mod html_report;
mod protocol;
mod suite;
