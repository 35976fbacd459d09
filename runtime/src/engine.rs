//! Inference engines behind one interface, so the agent, the host reference
//! and the benchmarks all time exactly the same call.

use std::borrow::ToOwned;
use std::boxed::Box;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use crate::wire::{EngineKind, OptLevel, Tensor, TensorInfo};

pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort;
pub mod tract;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// the model could not be loaded
    #[error("cannot load {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// the inputs do not match the model
    #[error("bad inputs: {0}")]
    Inputs(String),
    /// the engine failed while running
    #[error("run failed: {0}")]
    Run(String),
    /// this engine is not in this build, or its library is missing
    #[error("engine {engine:?} unavailable: {reason}")]
    Unavailable { engine: EngineKind, reason: String },
    /// a memory limit refused the engine (ONNX Runtime reports it as an error)
    #[error("out of memory in the engine: {0}")]
    OutOfMemory(String),
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub engine: EngineKind,
    pub opt_level: OptLevel,
    pub threads: usize,
    /// libonnxruntime.so for the `ort` engine.
    pub ort_library: Option<PathBuf>,
}

/// What a loaded model is, as its engine sees it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Which optimisation level actually ran.
    pub opt_level: OptLevel,
    /// Bytes of weights (initializers) in the model.
    pub weight_bytes: u64,
    /// Integer inputs that index a table, and its rows.
    pub index_bounds: onnx::IndexBounds,
}

/// A loaded model. Inputs are staged first so that `run` times only the
/// engine's work, not conversions.
pub trait Engine {
    fn info(&self) -> &ModelInfo;
    fn set_inputs(&mut self, inputs: &[Tensor]) -> Result<(), EngineError>;
    fn run(&mut self) -> Result<(), EngineError>;
    /// The outputs of the last run, in model order.
    fn take_outputs(&mut self) -> Result<Vec<Tensor>, EngineError>;
}

/// Engines compiled into this build.
pub fn available() -> Vec<EngineKind> {
    let mut v = std::vec![EngineKind::Tract];
    if cfg!(feature = "ort") {
        v.push(EngineKind::Ort);
    }
    v
}

pub fn load(path: &Path, opts: &LoadOptions) -> Result<Box<dyn Engine>, EngineError> {
    match opts.engine {
        EngineKind::Tract => Ok(Box::new(tract::TractEngine::load(path, opts.threads)?)),
        #[cfg(feature = "ort")]
        EngineKind::Ort => Ok(Box::new(ort::OrtEngine::load(path, opts)?)),
        #[cfg(not(feature = "ort"))]
        EngineKind::Ort => {
            Err(EngineError::Unavailable { engine: EngineKind::Ort, reason: "built without the `ort` feature".into() })
        }
        EngineKind::Micro => Err(EngineError::Unavailable {
            engine: EngineKind::Micro,
            reason: "the micro engine runs in the microcontroller firmware (runtime/firmware)".into(),
        }),
    }
}

/// Runs `f`, turning a panic inside an engine into the error `wrap` makes
/// of its message: tract asserts on some inputs our checks do not foresee,
/// and a board or a host report must get an error, not a crash.
fn guarded<T>(
    wrap: impl FnOnce(String) -> EngineError,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(wrap(std::format!("the engine panicked: {message}")))
    })
}

/// Size of a model file and of its external data file (`<model>.data`), the
/// weight figure for engines that do not expose their initializers.
pub fn model_file_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut data = path.as_os_str().to_owned();
    data.push(".data");
    size(path) + size(Path::new(&data))
}

/// Checks staged inputs against the model's: count, names, types, fixed
/// dims, and ids within the tables they index.
fn check_inputs(model: &ModelInfo, got: &[Tensor]) -> Result<(), EngineError> {
    let expected = &model.inputs;
    if expected.len() != got.len() {
        return Err(EngineError::Inputs(std::format!("model takes {} inputs, got {}", expected.len(), got.len())));
    }
    for (e, g) in expected.iter().zip(got) {
        let fixed_ok =
            e.shape.len() == g.shape.len() && e.shape.iter().zip(&g.shape).all(|(d, n)| d.is_none_or(|d| d == *n));
        if e.name != g.name || e.dtype != g.values.dtype() || !fixed_ok {
            return Err(EngineError::Inputs(std::format!(
                "input `{}` wants {:?} {:?}, got `{}` {:?} {:?}",
                e.name,
                e.dtype,
                e.shape,
                g.name,
                g.values.dtype(),
                g.shape
            )));
        }
        let n = g.shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d));
        if n != Some(g.values.len() as u64) {
            let n = n.map_or_else(|| "more than 2^64".into(), |n| std::format!("{n}"));
            return Err(EngineError::Inputs(std::format!(
                "input `{}` has shape {:?} ({n} values) but {} values",
                g.name,
                g.shape,
                g.values.len()
            )));
        }
        if let (Some(bound), crate::wire::Values::I64(ids)) = (model.index_bounds.get(&g.name), &g.values) {
            if let Some((at, id)) = ids.iter().enumerate().find(|(_, id)| !(0..bound.rows as i64).contains(*id)) {
                return Err(EngineError::Inputs(std::format!(
                    "input `{}` holds {id} at index {at}, outside the {} rows of `{}` it indexes (0..{})",
                    g.name,
                    bound.rows,
                    bound.table,
                    bound.rows
                )));
            }
        }
    }
    Ok(())
}
