//! tract: pure Rust, the engine a board without a C++ runtime can have.

use std::boxed::Box;
use std::format;
use std::path::Path;
use std::string::String;
use std::string::ToString;
use std::sync::Arc;
use std::vec::Vec;

use tract_linalg::block_quant::{BlockQuantFact, BlockQuantStorage, Q4_0};
use tract_onnx::pb::GraphProto;
use tract_onnx::prelude::{
    DatumType, Framework, InferenceModel, InferenceModelExt, TValue, TVec, Tensor as TTensor, TractResult, TypedModel,
    TypedSimplePlan,
};
use tract_onnx::tract_core::model::IntoRunnable;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_hir::internal::*;

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

impl TractEngine {
    pub fn load(path: &Path, threads: usize) -> Result<Self, EngineError> {
        let load_err = |e: tract_onnx::prelude::TractError| EngineError::Load {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        if threads > 1 {
            tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::multithread(threads));
        }
        let onnx = tract_onnx::onnx();
        let proto = onnx.proto_model_for_path(path).map_err(load_err)?;
        let dir = path.parent().and_then(Path::to_str);
        let parsed = onnx.parse(&proto, dir).map_err(load_err)?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(EngineError::Load {
                path: path.to_path_buf(),
                reason: format!("inputs {:?} are neither graph inputs nor initializers", parsed.unresolved_inputs),
            });
        }
        let mut model = parsed.model;
        prepack_q4(&proto.graph.unwrap_or_default(), &mut model).map_err(load_err)?;
        let typed = model.into_typed().map_err(load_err)?;
        let weight_bytes = typed
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Const>())
            .map(|c| (c.val().len() * c.val().datum_type().size_of()) as u64)
            .sum();
        let optimized = typed.into_optimized().map_err(load_err)?;
        let inputs = infos(&optimized, optimized.input_outlets().map_err(load_err)?)?;
        let outputs = infos(&optimized, optimized.output_outlets().map_err(load_err)?)?;
        let plan = optimized.into_runnable().map_err(load_err)?;
        let info = ModelInfo { inputs, outputs, opt_level: OptLevel::All, weight_bytes };
        Ok(Self { plan, info, staged: TVec::new(), last: None })
    }
}

/// Packs every 4-bit `MatMulNBits` weight to tract's Q4_0 before the model
/// is typed, freeing each ONNX table as soon as its packed copy exists.
///
/// tract's own import packs them all while typing the model, and the ONNX
/// tables stay alive until typing ends: the load then peaks at twice the
/// weights (1.4 GB for TinyLlama int4, 714 MB of weights). Done here one
/// weight at a time, the peak is the weights plus one table.
fn prepack_q4(graph: &GraphProto, model: &mut InferenceModel) -> TractResult<()> {
    for node in graph.node.iter().filter(|n| n.op_type == "MatMulNBits") {
        let int = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i as usize);
        let (Some(k), Some(n)) = (int("K"), int("N")) else { continue };
        let simple = int("bits").unwrap_or(4) == 4
            && int("block_size") == Some(32)
            && k % 32 == 0
            && node.input.iter().skip(3).all(String::is_empty);
        // Anything else (zero points, bias, other blocks) keeps tract's import.
        if !simple {
            continue;
        }
        let id = model.node_id_by_name(&node.name)?;
        let (b, scales) = (model.node(id).inputs[1], model.node(id).inputs[2]);
        let konst = |m: &InferenceModel, o: OutletId| {
            m.node(o.node).op_as::<Const>().map(|c| c.val().clone()).with_context(|| {
                format!("MatMulNBits `{}`: input {} must be a constant", node.name, m.node(o.node).name)
            })
        };
        let packed = {
            let table = konst(model, b)?;
            let scales = konst(model, scales)?.cast_to::<f32>()?.into_owned();
            let (table, scales) = (table.try_as_plain_ram()?, scales.try_as_plain_ram()?);
            let blob = Q4_0.pack_prequantized_nibbles(table.as_slice::<u8>()?, scales.as_slice::<f32>()?, n, k)?;
            BlockQuantStorage::new(Box::new(Q4_0), n, k, Arc::new(blob))?
                .into_tensor_with_shape(f32::datum_type(), &[1, n, k])
        };
        // The table is now only referenced by its node: a one-byte stand-in frees it.
        let stub = TTensor::zero::<u8>(&[1])?;
        model.node_mut(b.node).op = Box::new(Const::new(stub.clone().into_arc_tensor())?);
        model.set_outlet_fact(b, InferenceFact::from(stub))?;
        model.node_mut(id).op = expand(PackedQ4 { n, k, weight: Arc::new(packed) });
    }
    Ok(())
}

/// `Y = A · Wᵀ` with W already packed as Q4_0; the ONNX weight and scale
/// inputs are left unconnected.
#[derive(Debug, Clone)]
struct PackedQ4 {
    n: usize,
    k: usize,
    weight: Arc<TTensor>,
}

impl Expansion for PackedQ4 {
    fn name(&self) -> StaticName {
        "MatMulNBits(Q4_0)".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        let n = self.n.to_dim();
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            s.equals(&outputs[0].rank, rank as i64)?;
            for ax in 0..rank - 1 {
                s.equals(&outputs[0].shape[ax], &inputs[0].shape[ax])?;
            }
            s.equals(&outputs[0].shape[rank - 1], n.clone())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?;
        let (dt, rank) = (fact.datum_type, fact.rank());
        let a = model.wire_node(format!("{prefix}.cast_a"), cast(f32::datum_type()), &[inputs[0]])?[0];
        let exotic = Box::new(BlockQuantFact::new(Box::new(Q4_0), [1, self.n, self.k].into_iter().collect()));
        let w = model.wire_node(
            format!("{prefix}.weight_q4_0"),
            Const::new_with_exotic_fact(self.weight.clone(), exotic)?,
            &[],
        )?[0];
        let lead: String = "abcdefgh".chars().take(rank - 1).collect();
        let axes = AxesMapping::from_strs(&[format!("{lead}k"), "gnk".to_string()], &[format!("{lead}n")])?;
        let y = model.wire_node(format!("{prefix}.matmul"), EinSum::new(axes, f32::datum_type()), &[a, w])?[0];
        model.wire_node(format!("{prefix}.cast_y"), cast(dt), &[y])
    }
}

impl Engine for TractEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn set_inputs(&mut self, inputs: &[Tensor]) -> Result<(), EngineError> {
        check_inputs(&self.info.inputs, inputs)?;
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
        let out = self.plan.run(self.staged.clone()).map_err(|e| EngineError::Run(format!("{e:#}")))?;
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
