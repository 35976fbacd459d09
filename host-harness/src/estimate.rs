//! The roofline latency model for a board the run did not happen on.
//!
//! predicted = FLOPs / compute + unpacked weights × unpack (or, for one row, × unpack_one_row)
//!             + bytes moved / bandwidth + call overhead + ops × op overhead + tokens × token overhead
//!
//! The compute and memory times add rather than overlap (the max of a pure
//! roofline): on CPU engines a layer streams its weights and then multiplies,
//! and calibrated on one model the sum predicts five others with a median
//! error of 5.7 % where the max gave 11.4 % (the latency_fidelity bench).
//!
//! FLOPs are 2 × the multiply-accumulates tract counts for the graph with
//! the run's input shapes; bytes moved are the weights plus the inputs and
//! outputs, each read or written once per inference (activations are assumed
//! to stay in cache). Peak compute is the profile's int8 rate only when the
//! engine runs int8 kernels (ONNX Runtime at Extended or All fuses an int8
//! DequantizeLinear→MatMul into one; a 4-bit MatMulNBits quantizes its
//! activations only at `accuracy_level` 4); otherwise weights are dequantized
//! and the multiply runs in fp32. ONNX Runtime's 4-bit MatMulNBits with fp32
//! activations widens every weight to fp32 again on each call of more than one
//! row: that is the unpack term, per weight. One row has its own kernel, which
//! reads the 4-bit blocks as they are but slower than the memory allows on
//! this machine, hence its own, smaller, cost per weight.
//!
//! The parameters are the profile's datasheet figures (no token overhead),
//! or, for the engine a profile was calibrated with, the figures
//! `edgehil calibrate` fitted to measured runs.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto};
use tract_onnx::prelude::{Datum, InferenceFact, InferenceModelExt, TypedFact};
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::Cost;

use edgehil_runtime::engine::tract;
use edgehil_runtime::wire::{DType, EngineKind, OptLevel, Tensor};

use crate::profile::Profile;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EstimateError {
    /// tract could not analyse the graph
    #[error("cannot analyse {path}: {reason}")]
    Graph { path: String, reason: String },
    /// the model file failed its checks or did not parse
    #[error(transparent)]
    Model(#[from] edgehil_runtime::engine::EngineError),
}

/// What one inference costs, from the graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GraphCost {
    pub flops: f64,
    pub weight_bytes: u64,
    pub io_bytes: u64,
    /// ONNX Runtime can multiply some weights in int8 (see [`kernels`]).
    pub int8_weights: bool,
    /// Operations per call (those that depend on an input): each costs an
    /// engine a dispatch whatever its size.
    #[serde(default)]
    pub ops: u64,
    /// 4-bit weights ONNX Runtime keeps with fp32 activations (MatMulNBits
    /// below `accuracy_level` 4), which it widens to fp32 on calls of more than one row.
    #[serde(default)]
    pub fp32_activation_weights: u64,
}

pub fn graph_cost(path: &Path, inputs: &[Tensor]) -> Result<GraphCost, EstimateError> {
    let err = |e: tract_onnx::prelude::TractError| EstimateError::Graph {
        path: path.display().to_string(),
        reason: format!("{e:#}"),
    };
    let (proto, mut model) = tract::parse(path)?;
    let int8_weights = proto.graph.as_ref().is_some_and(int8_arithmetic);
    let fp32_activation_weights = proto.graph.as_ref().map_or(0, fp32_activation_weights);
    for (i, t) in inputs.iter().enumerate() {
        let shape: Vec<usize> = t.shape.iter().map(|d| *d as usize).collect();
        let fact = match t.values.dtype() {
            DType::F32 => InferenceFact::dt_shape(f32::datum_type(), shape),
            DType::I64 => InferenceFact::dt_shape(i64::datum_type(), shape),
        };
        model.set_input_fact(i, fact).map_err(err)?;
    }
    let model = model.into_typed().map_err(err)?;
    // Weights as the files store them: tract holds int4 tables as packed
    // blocks behind an fp32 fact, so counting its constants would see fp32.
    // An embedding table only gathered from is not read whole: one row per token.
    let mut gathered = 0u64;
    for node in model.nodes() {
        let Some(c) = node.op_as::<Const>() else { continue };
        let successors = &node.outputs[0].successors;
        if !successors.is_empty() && successors.iter().all(|s| model.node(s.node).op.name() == "Gather") {
            gathered += (c.val().len() * c.val().datum_type().size_of()) as u64;
        }
    }
    let weight_bytes = edgehil_runtime::engine::model_file_bytes(path).saturating_sub(gathered);
    let model = model.into_decluttered().map_err(err)?;
    let (mut flops, mut ops) = (0f64, 0u64);
    // Arithmetic on weights alone (dequantizing a table tract did not fold)
    // is load-time work for an engine that folds or fuses it, not the
    // model's arithmetic per call: only nodes that depend on an input count.
    let mut on_weights = vec![false; model.nodes().len()];
    for id in model.eval_order().map_err(err)? {
        let node = model.node(id);
        on_weights[id] =
            node.op_is::<Const>() || (!node.inputs.is_empty() && node.inputs.iter().all(|o| on_weights[o.node]));
        if on_weights[id] {
            continue;
        }
        ops += 1;
        let facts: Vec<&TypedFact> =
            node.inputs.iter().map(|o| model.outlet_fact(*o)).collect::<Result<_, _>>().map_err(err)?;
        for (cost, count) in node.op.cost(&facts).map_err(err)? {
            let n = count.to_i64().unwrap_or(0) as f64;
            match cost {
                Cost::FMA(_) => flops += 2.0 * n,
                Cost::Div(_) => flops += n,
                _ => {}
            }
        }
    }
    let out_bytes: u64 = model
        .output_outlets()
        .map_err(err)?
        .iter()
        .map(|o| {
            model
                .outlet_fact(*o)
                .map(|f| f.shape.as_concrete().map_or(0, |s| s.iter().product::<usize>()) * f.datum_type.size_of())
        })
        .sum::<Result<usize, _>>()
        .map_err(err)? as u64;
    let in_bytes: u64 = inputs.iter().map(|t| t.values.len() as u64 * dtype_size(t.values.dtype())).sum();
    Ok(GraphCost { flops, weight_bytes, io_bytes: in_bytes + out_bytes, int8_weights, ops, fp32_activation_weights })
}

/// Whether ONNX Runtime can multiply in int8 here: int8 tables behind
/// `DequantizeLinear` (fused with their MatMul from Extended on), or 4-bit
/// `MatMulNBits` told to quantize its activations (`accuracy_level` 4).
fn int8_arithmetic(graph: &GraphProto) -> bool {
    let bytes = [DataType::Int8 as i32, DataType::Uint8 as i32];
    let tables: HashSet<&str> =
        graph.initializer.iter().filter(|t| bytes.contains(&t.data_type)).map(|t| t.name.as_str()).collect();
    graph.node.iter().any(|n| match n.op_type.as_str() {
        "DequantizeLinear" => n.input.first().is_some_and(|i| tables.contains(i.as_str())),
        "MatMulNBits" => n.attribute.iter().any(|a| a.name == "accuracy_level" && a.i == 4),
        _ => false,
    })
}

/// K × N of each MatMulNBits that keeps fp32 activations.
fn fp32_activation_weights(graph: &GraphProto) -> u64 {
    let int = |n: &tract_onnx::pb::NodeProto, name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "MatMulNBits" && int(n, "accuracy_level").unwrap_or(0) != 4)
        .map(|n| (int(n, "K").unwrap_or(0) * int(n, "N").unwrap_or(0)).max(0) as u64)
        .sum()
}

fn dtype_size(d: DType) -> u64 {
    match d {
        DType::F32 => 4,
        DType::I64 => 8,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Compute,
    Memory,
}

/// Which of a profile's compute rates a prediction used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Peak {
    Fp32,
    Int8,
}

impl Peak {
    pub fn name(self) -> &'static str {
        match self {
            Peak::Fp32 => "fp32",
            Peak::Int8 => "int8",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub latency_ms: f64,
    pub compute_ms: f64,
    pub memory_ms: f64,
    /// The call's fixed overhead plus its ops' and tokens' overhead.
    pub overhead_ms: f64,
    pub bound: Bound,
    pub peak: Peak,
    /// The profile's calibration gave the parameters (absent: its datasheet figures).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calibrated: bool,
}

/// Which kernels an engine runs for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kernels {
    /// int8 arithmetic (the profile's int8 rate).
    pub int8: bool,
    /// Weights widened to fp32 during the call.
    pub unpacked: u64,
    /// 4-bit weights multiplied as blocks by a one-row kernel.
    pub one_row: u64,
}

/// The kernels `engine` at `opt_level` runs on this graph with `tokens`
/// prompt tokens (0: not a language model, rows unknown). Only ONNX Runtime's
/// are known; tract's are costed as plain fp32 arithmetic.
pub fn kernels(cost: &GraphCost, engine: EngineKind, opt_level: OptLevel, tokens: u64) -> Kernels {
    let ort = engine == EngineKind::Ort;
    Kernels {
        int8: ort && cost.int8_weights && matches!(opt_level, OptLevel::Extended | OptLevel::All),
        unpacked: if ort && tokens != 1 { cost.fp32_activation_weights } else { 0 },
        one_row: if ort && tokens == 1 { cost.fp32_activation_weights } else { 0 },
    }
}

/// The latency model's parameters, in FLOP/s, B/s and s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub compute: f64,
    pub compute_int8: f64,
    pub bandwidth: f64,
    pub call_overhead: f64,
    pub op_overhead: f64,
    pub token_overhead: f64,
    /// Seconds per weight widened to fp32.
    pub unpack: f64,
    /// Seconds per 4-bit weight of a one-row call.
    pub unpack_one_row: f64,
}

impl Params {
    /// The profile's datasheet figures.
    pub fn datasheet(profile: &Profile) -> Self {
        Params {
            compute: profile.peak_fp32.value.0,
            compute_int8: profile.peak_int8.value.0,
            bandwidth: profile.bandwidth.value.0,
            call_overhead: profile.call_overhead.value.0,
            op_overhead: 0.0,
            token_overhead: 0.0,
            unpack: 0.0,
            unpack_one_row: 0.0,
        }
    }

    /// The profile's calibration, if it was made with `engine`.
    pub fn calibrated(profile: &Profile, engine: EngineKind) -> Option<Self> {
        profile.calibration.as_ref().filter(|c| c.engine == engine).map(|c| Params {
            compute: c.compute.value.0,
            compute_int8: c.compute_int8.value.0,
            bandwidth: c.bandwidth.value.0,
            call_overhead: c.call_overhead.value.0,
            op_overhead: c.op_overhead.as_ref().map_or(0.0, |f| f.value.0),
            token_overhead: c.token_overhead.value.0,
            unpack: c.unpack.as_ref().map_or(0.0, |f| f.value.0),
            unpack_one_row: c.unpack_one_row.as_ref().map_or(0.0, |f| f.value.0),
        })
    }

    /// Seconds for one call costing `cost` with `tokens` prompt tokens.
    pub fn latency_s(&self, cost: &GraphCost, tokens: u64, kernels: Kernels) -> f64 {
        let (compute_s, memory_s, overhead_s) = self.parts(cost, tokens, kernels);
        compute_s + memory_s + overhead_s
    }

    fn parts(&self, cost: &GraphCost, tokens: u64, kernels: Kernels) -> (f64, f64, f64) {
        let rate = if kernels.int8 { self.compute_int8 } else { self.compute };
        let unpack_s = kernels.unpacked as f64 * self.unpack + kernels.one_row as f64 * self.unpack_one_row;
        let compute_s = cost.flops / rate + unpack_s;
        (compute_s, (cost.weight_bytes + cost.io_bytes) as f64 / self.bandwidth, self.overhead_s(cost, tokens))
    }

    /// The seconds a call costs beyond its arithmetic and memory traffic.
    pub fn overhead_s(&self, cost: &GraphCost, tokens: u64) -> f64 {
        self.call_overhead + cost.ops as f64 * self.op_overhead + tokens as f64 * self.token_overhead
    }
}

/// The latency of one call with `tokens` prompt tokens (0 for a model without) on `profile`.
pub fn predict(
    cost: &GraphCost,
    tokens: u64,
    profile: &Profile,
    engine: EngineKind,
    opt_level: OptLevel,
) -> Prediction {
    let kernels = kernels(cost, engine, opt_level, tokens);
    let calibrated = Params::calibrated(profile, engine);
    let params = calibrated.unwrap_or_else(|| Params::datasheet(profile));
    let (compute_s, memory_s, overhead_s) = params.parts(cost, tokens, kernels);
    Prediction {
        latency_ms: (compute_s + memory_s + overhead_s) * 1e3,
        compute_ms: compute_s * 1e3,
        memory_ms: memory_s * 1e3,
        overhead_ms: overhead_s * 1e3,
        bound: if compute_s >= memory_s { Bound::Compute } else { Bound::Memory },
        peak: if kernels.int8 { Peak::Int8 } else { Peak::Fp32 },
        calibrated: calibrated.is_some(),
    }
}
