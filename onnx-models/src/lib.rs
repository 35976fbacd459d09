//! ONNX models made by edgehil: a graph builder over tract's protobuf types
//! and the fixture models the test suite and the default run use.
//!
//! Building the protobuf directly (rather than through Python) keeps the
//! fixtures reproducible from a clean checkout with nothing but cargo, and
//! the same builder is what the Hugging Face export grows from.

pub mod export;
pub mod fixtures;
pub mod graph;
pub mod hf;
pub mod rng;

pub use graph::{Attr, Dim, Elem, GraphBuilder, OnnxError};
