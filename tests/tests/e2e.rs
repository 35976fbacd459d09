//! The end-to-end tests, one module per area, linked into one test binary:
//! each test binary links tract, ONNX Runtime's bindings and tokenizers, and
//! one per area took 700 MB of CI's disk and eleven links.

mod common;

mod agent_stdio;
mod calibrate;
mod cli;
mod emulated_board;
mod eval;
mod export;
mod failures;
mod generate;
mod gguf;
mod gptq;
mod hostile;
mod html_report;
mod labgrid;
mod mcu_board;
mod memory_link;
mod micro;
mod noisy_link;
mod protocol;
mod qemu;
mod split;
mod suite;
mod upload;
