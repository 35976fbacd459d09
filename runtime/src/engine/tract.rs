//! tract: pure Rust, the engine a board without a C++ runtime can have.

use std::format;
use std::path::Path;
use std::string::{String, ToString};
use std::sync::Arc;
use std::vec::Vec;

use tract_linalg::block_quant::BlockQuantStorage;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    DatumType, InferenceModel, InferenceModelExt, TValue, TVec, Tensor as TTensor, TypedModel, TypedSimplePlan,
};
use tract_onnx::tract_core::model::IntoRunnable;
use tract_onnx::tract_core::ops::konst::Const;

mod prepack;

use super::{check_inputs, Engine, EngineError, ModelInfo};
use crate::wire::{DType, OptLevel, Tensor, TensorInfo, Values};

pub struct TractEngine {
    plan: Arc<TypedSimplePlan>,
    info: ModelInfo,
    staged: TVec<TValue>,
    last: Option<TVec<TValue>>,
}

fn dtype(dt: DatumType) -> Result<DType, EngineError> {
    match dt {
        DatumType::F32 => Ok(DType::F32),
        DatumType::I64 => Ok(DType::I64),
        other => Err(EngineError::Inputs(format!("tensor type {other:?} is not supported on the wire"))),
    }
}

fn infos(model: &TypedModel, outlets: &[tract_onnx::prelude::OutletId]) -> Result<Vec<TensorInfo>, EngineError> {
    outlets
        .iter()
        .map(|o| {
            let fact = model.outlet_fact(*o).map_err(|e| EngineError::Inputs(e.to_string()))?;
            let name = model.outlet_label(*o).unwrap_or(&model.node(o.node).name).to_string();
            Ok(TensorInfo {
                name,
                dtype: dtype(fact.datum_type)?,
                shape: fact.shape.iter().map(|d| d.to_i64().ok().map(|v| v as u64)).collect(),
            })
        })
        .collect()
}

fn plain<T: tract_onnx::prelude::Datum + Copy>(v: &TValue) -> Result<Vec<T>, EngineError> {
    Ok(v.to_plain_array_view::<T>().map_err(|e| EngineError::Run(format!("{e:#}")))?.iter().copied().collect())
}

/// The ONNX file at `path` (external data beside it), checked, as its
/// protobuf and as tract's model.
pub fn parse(path: &Path) -> Result<(ModelProto, InferenceModel), EngineError> {
    let proto = super::onnx::read(path)?;
    let load_err = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
    let parsed = tract_onnx::onnx()
        .parse(&proto, path.parent().and_then(Path::to_str))
        .map_err(|e| load_err(format!("{e:#}")))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(load_err(format!(
            "inputs {:?} are neither graph inputs nor initializers",
            parsed.unresolved_inputs
        )));
    }
    Ok((proto, parsed.model))
}

impl TractEngine {
    pub fn load(path: &Path, threads: usize) -> Result<Self, EngineError> {
        let load_err = |reason| EngineError::Load { path: path.to_path_buf(), reason };
        super::guarded(load_err, || Self::load_unguarded(path, threads))
    }

    fn load_unguarded(path: &Path, threads: usize) -> Result<Self, EngineError> {
        let load_err = |e: tract_onnx::prelude::TractError| EngineError::Load {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        if threads > 1 {
            tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::multithread(threads));
        }
        let (proto, mut model) = parse(path)?;
        let graph = proto.graph.unwrap_or_default();
        let index_bounds = super::onnx::index_bounds(&graph);
        prepack::prepack(&graph, &mut model).map_err(load_err)?;
        drop(graph);
        let typed = model.into_typed().map_err(load_err)?;
        let weight_bytes = typed
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Const>())
            .map(|c| match c.val().storage_as::<BlockQuantStorage>() {
                // A packed tensor's shape and type are those of the f32 it stands for.
                Some(packed) => packed.value().len() as u64,
                None => (c.val().len() * c.val().datum_type().size_of()) as u64,
            })
            .sum();
        let optimized = typed.into_optimized().map_err(load_err)?;
        let inputs = infos(&optimized, optimized.input_outlets().map_err(load_err)?)?;
        let outputs = infos(&optimized, optimized.output_outlets().map_err(load_err)?)?;
        let plan = optimized.into_runnable().map_err(load_err)?;
        let info = ModelInfo { inputs, outputs, opt_level: OptLevel::All, weight_bytes, index_bounds };
        Ok(Self { plan, info, staged: TVec::new(), last: None })
    }
}

impl Engine for TractEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn set_inputs(&mut self, inputs: &[Tensor]) -> Result<(), EngineError> {
        check_inputs(&self.info, inputs)?;
        self.staged = inputs
            .iter()
            .map(|t| {
                let shape: Vec<usize> = t.shape.iter().map(|d| *d as usize).collect();
                let tensor = match &t.values {
                    Values::F32(v) => TTensor::from_shape(&shape, v),
                    Values::I64(v) => TTensor::from_shape(&shape, v),
                };
                tensor.map(TValue::from).map_err(|e| EngineError::Inputs(format!("{e:#}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn run(&mut self) -> Result<(), EngineError> {
        let out = super::guarded(EngineError::Run, || {
            self.plan.run(self.staged.clone()).map_err(|e| EngineError::Run(format!("{e:#}")))
        })?;
        self.last = Some(out);
        Ok(())
    }

    fn take_outputs(&mut self) -> Result<Vec<Tensor>, EngineError> {
        let out = self.last.take().ok_or_else(|| EngineError::Run("no run yet".to_string()))?;
        out.iter()
            .zip(&self.info.outputs)
            .map(|(v, info)| {
                let values = match v.datum_type() {
                    DatumType::F32 => Values::F32(plain(v)?),
                    DatumType::I64 => Values::I64(plain(v)?),
                    other => {
                        return Err(EngineError::Run(format!("output type {other:?} is not supported on the wire")))
                    }
                };
                Ok(Tensor { name: info.name.clone(), shape: v.shape().iter().map(|d| *d as u64).collect(), values })
            })
            .collect()
    }
}
