//! ONNX models made by edgehil: Hugging Face folders exported to ONNX
//! ([`export`]), the graph builder over tract's protobuf types they are built
//! with, and the fixture models the test suite and the default run use.
//!
//! Building the protobuf directly (rather than through Python) keeps export
//! and the fixtures reproducible from a clean checkout with nothing but cargo;
//! Python is only needed to regenerate the reference outputs in `reference/`.

pub mod arch;
pub mod export;
pub mod fixtures;
pub mod gguf;
pub mod gptq;
pub mod graph;
pub mod hf;
pub mod micro;
pub mod rng;
pub mod split;

pub use graph::{Attr, Dim, Elem, GraphBuilder, OnnxError};
