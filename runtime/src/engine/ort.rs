//! ONNX Runtime, loaded at run time from a libonnxruntime.so (`load-dynamic`),
//! so the agent builds without it and says clearly when it is missing.

use std::format;
use std::path::Path;
use std::string::{String, ToString};
use std::sync::OnceLock;
use std::vec::Vec;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, TensorElementType, ValueType};

use super::{check_inputs, Engine, EngineError, LoadOptions, ModelInfo};
use crate::wire::{DType, EngineKind, OptLevel, Tensor, TensorInfo, Values};

/// The library can be loaded once per process; the first path wins.
static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn environment(library: Option<&Path>) -> Result<&'static ort::environment::Environment, EngineError> {
    let unavailable = |reason: String| EngineError::Unavailable { engine: EngineKind::Ort, reason };
    let env = ENV.get_or_init(|| {
        let path = library.ok_or_else(|| {
            "no ONNX Runtime library given (agent option --ort-library, or EDGEHIL_ORT_LIBRARY; \
             `pip install onnxruntime` ships one in onnxruntime/capi/)"
                .to_string()
        })?;
        if !path.is_file() {
            return Err(format!("ONNX Runtime library {} does not exist", path.display()));
        }
        ort::init_from(path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("edgehil")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", path.display()))
    });
    env.as_ref().map_err(|e| unavailable(e.clone()))
}

/// ONNX Runtime says "Failed to allocate memory" or "bad_alloc" when malloc fails.
fn is_oom(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("bad_alloc") || m.contains("failed to allocate") || m.contains("cannot allocate memory")
}

fn classify(e: impl std::fmt::Display, otherwise: impl FnOnce(String) -> EngineError) -> EngineError {
    let message = e.to_string();
    if is_oom(&message) {
        EngineError::OutOfMemory(message)
    } else {
        otherwise(message)
    }
}

fn tensor_info(outlet: &ort::value::Outlet) -> Result<TensorInfo, EngineError> {
    let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
        return Err(EngineError::Inputs(format!("`{}` is not a tensor", outlet.name())));
    };
    let dtype = match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Int64 => DType::I64,
        other => {
            return Err(EngineError::Inputs(format!(
                "`{}` has type {other:?}, not supported on the wire",
                outlet.name()
            )))
        }
    };
    Ok(TensorInfo {
        name: outlet.name().to_string(),
        dtype,
        shape: shape.iter().map(|d| u64::try_from(*d).ok()).collect(),
    })
}

pub struct OrtEngine {
    session: Session,
    info: ModelInfo,
    staged: Vec<DynValue>,
    last: Vec<DynValue>,
}

impl OrtEngine {
    // ort's builder errors carry the builder back to the caller: large, and not ours.
    #[allow(clippy::result_large_err)]
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, EngineError> {
        let env = environment(opts.ort_library.as_deref())?;
        let load_err = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
        // ONNX Runtime checks the graph and its Gather indices itself, but
        // would block on a FIFO. The graph is not decoded here: an inline
        // model's weights would land on the capped Rust heap, not where
        // ONNX Runtime holds them.
        super::onnx::regular_file(path).map_err(load_err)?;
        let level = match opts.opt_level {
            OptLevel::Disabled => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::Level3,
        };
        let session = Session::builder(env)
            .map_err(|e| classify(e, load_err))?
            .with_optimization_level(level)
            // No arena: it grows in doubling chunks it never returns, 40 MB of a
            // TinyLlama int4 run's peak, on a runtime whose point is a RAM cap.
            .and_then(|b| b.with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()]))
            .and_then(|b| b.with_intra_threads(opts.threads.max(1)))
            .and_then(|b| b.with_inter_threads(1))
            .map_err(|e| classify(e, load_err))?
            .commit_from_file(path)
            .map_err(|e| classify(e, load_err))?;
        let info = ModelInfo {
            inputs: session.inputs().iter().map(tensor_info).collect::<Result<_, _>>()?,
            outputs: session.outputs().iter().map(tensor_info).collect::<Result<_, _>>()?,
            opt_level: opts.opt_level,
            // ONNX Runtime does not expose its initializers; the files hold them.
            weight_bytes: super::model_file_bytes(path),
            index_bounds: Default::default(),
        };
        Ok(Self { session, info, staged: Vec::new(), last: Vec::new() })
    }
}

impl Engine for OrtEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn set_inputs(&mut self, inputs: &[Tensor]) -> Result<(), EngineError> {
        check_inputs(&self.info, inputs)?;
        self.staged = inputs
            .iter()
            .map(|t| {
                let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
                let value = match &t.values {
                    Values::F32(v) => ort::value::Tensor::from_array((shape, v.clone())).map(|t| t.into_dyn()),
                    Values::I64(v) => ort::value::Tensor::from_array((shape, v.clone())).map(|t| t.into_dyn()),
                };
                value.map_err(|e| classify(e, EngineError::Inputs))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn run(&mut self) -> Result<(), EngineError> {
        let feeds: Vec<(String, &DynValue)> =
            self.info.inputs.iter().map(|i| i.name.clone()).zip(self.staged.iter()).collect();
        let outputs = self.session.run(feeds).map_err(|e| classify(e, EngineError::Run))?;
        self.last = outputs.into_iter().map(|(_, v)| v).collect();
        Ok(())
    }

    fn take_outputs(&mut self) -> Result<Vec<Tensor>, EngineError> {
        let last = std::mem::take(&mut self.last);
        if last.is_empty() {
            return Err(EngineError::Run("no run yet".to_string()));
        }
        last.iter()
            .zip(&self.info.outputs)
            .map(|(v, info)| {
                let run_err = |e: ort::Error| EngineError::Run(e.to_string());
                let (shape, values) = match info.dtype {
                    DType::F32 => {
                        let (s, d) = v.try_extract_tensor::<f32>().map_err(run_err)?;
                        (s.to_vec(), Values::F32(d.to_vec()))
                    }
                    DType::I64 => {
                        let (s, d) = v.try_extract_tensor::<i64>().map_err(run_err)?;
                        (s.to_vec(), Values::I64(d.to_vec()))
                    }
                };
                Ok(Tensor { name: info.name.clone(), shape: shape.iter().map(|d| *d as u64).collect(), values })
            })
            .collect()
    }
}
