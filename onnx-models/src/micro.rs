//! ONNX to the micro-model format of `edgehil-micro` (a no_std interpreter for
//! microcontrollers): shapes fixed (symbolic dimensions, the batch, become 1),
//! initializers folded into the weights (`DequantizeLinear` of int8 codes
//! becomes per-channel int8 weights, `Transpose`/`Reshape` of constants are
//! applied here), biases and activations fused into the Gemm or Conv before
//! them where nothing else reads the intermediate, and the activation arena
//! planned. Anything outside the op set is refused, naming the op and node.

use std::collections::HashMap;
use std::path::Path;

use edgehil_micro::plan::{plan, Lifetime};
use edgehil_micro::{Act, BinKind, Blob, Buffer, Const, Io, Model, Op, PoolKind, Src, Weights, Window};
use prost::Message;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};

/// The ONNX ops the compiler takes (Identity and Dropout pass values through;
/// DequantizeLinear, Transpose and Constant only on constants).
pub const OPS: &str = "Gemm, MatMul, Conv, MaxPool, AveragePool, GlobalAveragePool, Add, Mul, Relu, Clip, Sigmoid, Tanh, Softmax, Reshape, Flatten, Identity, Dropout, DequantizeLinear, Transpose, Constant";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MicroError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path} is not an ONNX model: {cause}")]
    Parse { path: String, cause: prost::DecodeError },
    /// an op outside the set
    #[error("node `{node}`: {op} is not an op of the micro engine (it has {OPS})")]
    Unsupported { op: String, node: String },
    /// an op of the set in a form the engine does not run
    #[error("node `{node}` ({op}): {what}")]
    Form { op: String, node: String, what: String },
    #[error("tensor `{name}`: {what}")]
    Tensor { name: String, what: String },
    #[error("{0}")]
    Graph(String),
    #[error(transparent)]
    Format(#[from] edgehil_micro::Error),
}

/// What the compiled model costs the board, as ST Edge AI's analyze reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MicroReport {
    /// The serialized model: what goes into flash.
    pub flash_bytes: u64,
    /// Of which weights (int8 codes and their scales included).
    pub weight_bytes: u64,
    /// The activation arena: the RAM a run needs for tensors.
    pub arena_bytes: u64,
    /// The largest set of tensors alive at once (a lower bound of any arena).
    pub peak_live_bytes: u64,
    pub ops: usize,
    /// Weight tensors stored as int8.
    pub int8_tensors: usize,
    pub f32_tensors: usize,
}

#[derive(Debug, Clone)]
pub struct Compiled {
    pub bytes: Vec<u8>,
    pub report: MicroReport,
}

pub fn compile_file(path: &Path) -> Result<Compiled, MicroError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|cause| MicroError::Read { path: p.clone(), cause })?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|cause| MicroError::Parse { path: p, cause })?;
    compile(&model)
}

/// A constant's values as the compiler holds them.
#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    /// int8 codes; scales per index of `axis`, or one for the whole tensor.
    I8 {
        q: Vec<i8>,
        scales: Vec<f32>,
        axis: Option<usize>,
    },
    I64(Vec<i64>),
}

#[derive(Debug, Clone)]
struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl Tensor {
    fn f32s(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|x| *x as f32).collect(),
            Data::I8 { q, scales, axis } => {
                let (inner, ch) = match axis {
                    Some(a) => (self.shape[a + 1..].iter().product::<usize>(), self.shape[*a]),
                    None => (1, 1),
                };
                q.iter().enumerate().map(|(i, c)| f32::from(*c) * scales[(i / inner) % ch]).collect()
            }
        }
    }

    /// int8 with one scale per index of `axis`, where the codes allow it; f32 otherwise.
    fn per_channel(self, axis: usize) -> Tensor {
        match self.data {
            Data::I8 { q, scales, axis: None } => {
                let scales = vec![scales[0]; self.shape[axis]];
                Tensor { shape: self.shape, data: Data::I8 { q, scales, axis: Some(axis) } }
            }
            Data::I8 { axis: Some(a), .. } if a == axis => self,
            _ => Tensor { data: Data::F32(self.f32s()), shape: self.shape },
        }
    }

    /// `permute` applied to the values (int8 codes keep their scales' axis).
    fn transpose(&self, perm: &[usize]) -> Tensor {
        let shape: Vec<usize> = perm.iter().map(|p| self.shape[*p]).collect();
        let (src, dst) = (strides(&self.shape), strides(&shape));
        let index = |o: usize| {
            let mut rest = o;
            let mut at = 0;
            for (d, s) in dst.iter().enumerate() {
                at += (rest / s) * src[perm[d]];
                rest %= s;
            }
            at
        };
        let n = shape.iter().product::<usize>();
        let data = match &self.data {
            Data::F32(v) => Data::F32((0..n).map(|o| v[index(o)]).collect()),
            Data::I64(v) => Data::I64((0..n).map(|o| v[index(o)]).collect()),
            Data::I8 { q, scales, axis } => Data::I8 {
                q: (0..n).map(|o| q[index(o)]).collect(),
                scales: scales.clone(),
                axis: axis.map(|a| perm.iter().position(|p| *p == a).unwrap_or(a)),
            },
        };
        Tensor { shape, data }
    }
}

fn read_tensor(t: &TensorProto) -> Result<Tensor, MicroError> {
    let err = |what: String| MicroError::Tensor { name: t.name.clone(), what };
    if t.data_location == Some(1) {
        return Err(err("weights in an external data file: the micro engine takes a self-contained model".into()));
    }
    let shape: Vec<usize> = t.dims.iter().map(|d| *d as usize).collect();
    let n: usize = shape.iter().product();
    let raw = &t.raw_data;
    let data = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if !raw.is_empty() => {
            Data::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        Ok(DataType::Float) => Data::F32(t.float_data.clone()),
        Ok(DataType::Int8) if !raw.is_empty() => {
            Data::I8 { q: raw.iter().map(|b| *b as i8).collect(), scales: vec![1.0], axis: None }
        }
        Ok(DataType::Int8) => {
            Data::I8 { q: t.int32_data.iter().map(|v| *v as i8).collect(), scales: vec![1.0], axis: None }
        }
        Ok(DataType::Uint8) if !raw.is_empty() => Data::I64(raw.iter().map(|b| i64::from(*b)).collect()),
        Ok(DataType::Int32) if !raw.is_empty() => {
            Data::I64(raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect())
        }
        Ok(DataType::Uint8 | DataType::Int32) => Data::I64(t.int32_data.iter().map(|v| i64::from(*v)).collect()),
        Ok(DataType::Int64) if !raw.is_empty() => {
            Data::I64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
        }
        Ok(DataType::Int64) => Data::I64(t.int64_data.clone()),
        _ => {
            return Err(err(format!(
                "data type {} (the micro engine takes float, int8, uint8, int32, int64)",
                t.data_type
            )))
        }
    };
    let len = match &data {
        Data::F32(v) => v.len(),
        Data::I8 { q, .. } => q.len(),
        Data::I64(v) => v.len(),
    };
    if len != n {
        return Err(err(format!("{len} values for shape {shape:?}")));
    }
    Ok(Tensor { shape, data })
}

#[derive(Debug, Clone)]
enum Val {
    Act { shape: Vec<usize>, buf: usize },
    Const(Tensor),
}

struct Compiler<'m> {
    opset: i64,
    vals: HashMap<String, Val>,
    /// Readers not yet compiled, per activation buffer (graph outputs are readers that never come).
    pending: Vec<usize>,
    lens: Vec<usize>,
    /// Readers of each value name (nodes and graph outputs).
    readers: HashMap<&'m str, usize>,
    ops: Vec<Op>,
    consts: Vec<Tensor>,
}

/// The node being compiled, for errors and attributes.
struct Node<'n>(&'n NodeProto);

impl Node<'_> {
    fn form(&self, what: impl Into<String>) -> MicroError {
        MicroError::Form { op: self.0.op_type.clone(), node: self.name(), what: what.into() }
    }

    fn name(&self) -> String {
        if self.0.name.is_empty() {
            self.0.output.first().cloned().unwrap_or_default()
        } else {
            self.0.name.clone()
        }
    }

    fn attr(&self, name: &str) -> Option<&tract_onnx::pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    fn string(&self, name: &str) -> String {
        self.attr(name).map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_default()
    }

    /// Input `i`, if given (an empty name is an absent optional input).
    fn input(&self, i: usize) -> Option<&str> {
        self.0.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }
}

fn u32_of(v: usize, what: &str) -> Result<u32, MicroError> {
    u32::try_from(v).map_err(|_| MicroError::Graph(format!("{what} of {v} is too large for the micro format")))
}

fn u16_of(v: usize, what: &str) -> Result<u16, MicroError> {
    u16::try_from(v).map_err(|_| MicroError::Graph(format!("more than 65535 {what}")))
}

/// A dimension's normalized axis (negative counts from the end).
fn axis_of(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (rank as i64 + axis).max(0) as usize
    } else {
        axis as usize
    }
}

pub fn compile(model: &ModelProto) -> Result<Compiled, MicroError> {
    let graph = model.graph.as_ref().ok_or_else(|| MicroError::Graph("the model has no graph".into()))?;
    let opset =
        model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(17, |o| o.version);
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for name in graph.node.iter().flat_map(|n| n.input.iter()).chain(graph.output.iter().map(|o| &o.name)) {
        *readers.entry(name.as_str()).or_default() += 1;
    }
    let mut c =
        Compiler { opset, vals: HashMap::new(), pending: vec![], lens: vec![], readers, ops: vec![], consts: vec![] };
    for t in &graph.initializer {
        c.vals.insert(t.name.clone(), Val::Const(read_tensor(t)?));
    }
    let mut inputs = Vec::new();
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for input in graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())) {
        let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(tract_onnx::pb::type_proto::Value::TensorType(t)) => t,
            _ => return Err(MicroError::Graph(format!("input `{}` is not a tensor", input.name))),
        };
        if tensor.elem_type != DataType::Float as i32 {
            return Err(MicroError::Graph(format!("input `{}`: the micro engine takes float inputs only", input.name)));
        }
        // Batch 1: a symbolic (or unknown) dimension becomes 1.
        let shape: Vec<usize> = tensor
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => v as usize,
                        _ => 1,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let buf = c.new_buf(shape.iter().product(), &input.name);
        c.vals.insert(input.name.clone(), Val::Act { shape, buf });
        inputs.push((input.name.clone(), buf));
    }
    for node in &graph.node {
        c.node(&Node(node))?;
    }
    let mut outputs = Vec::new();
    for output in &graph.output {
        match c.vals.get(&output.name) {
            Some(Val::Act { buf, .. }) => outputs.push((output.name.clone(), *buf)),
            Some(Val::Const(_)) => {
                return Err(MicroError::Graph(format!("output `{}` is a constant: nothing to run", output.name)))
            }
            None => return Err(MicroError::Graph(format!("output `{}` is given by no node", output.name))),
        }
    }
    c.finish(&graph.name, &inputs, &outputs)
}

impl<'m> Compiler<'m> {
    fn new_buf(&mut self, len: usize, name: &str) -> usize {
        self.lens.push(len);
        self.pending.push(self.readers.get(name).copied().unwrap_or(0));
        self.lens.len() - 1
    }

    fn get(&self, node: &Node, i: usize) -> Result<Val, MicroError> {
        let name = node.input(i).ok_or_else(|| node.form(format!("input {i} is missing")))?;
        self.vals
            .get(name)
            .cloned()
            .ok_or_else(|| node.form(format!("reads `{name}`, which no earlier node or initializer gives")))
    }

    /// Input `i` as an activation: its shape and buffer, counting this node as a reader done.
    fn act(&mut self, node: &Node, i: usize) -> Result<(Vec<usize>, usize), MicroError> {
        match self.get(node, i)? {
            Val::Act { shape, buf } => {
                self.pending[buf] -= 1;
                Ok((shape, buf))
            }
            Val::Const(_) => {
                Err(node.form(format!("input {i} is a constant where the micro engine runs an activation")))
            }
        }
    }

    fn konst(&self, node: &Node, i: usize) -> Result<Tensor, MicroError> {
        match self.get(node, i)? {
            Val::Const(t) => Ok(t),
            Val::Act { .. } => {
                Err(node
                    .form(format!("input {i} is computed; the micro engine needs a constant (an initializer) there")))
            }
        }
    }

    /// The node's output `i` is a new activation.
    fn output(&mut self, node: &Node, shape: Vec<usize>) -> Result<usize, MicroError> {
        self.extra_outputs(node)?;
        let name = &node.0.output[0];
        let buf = self.new_buf(shape.iter().product(), name);
        self.vals.insert(name.clone(), Val::Act { shape, buf });
        Ok(buf)
    }

    /// The node's output is `buf` under another shape (Reshape, Flatten, Identity, an in-place or fused op).
    fn alias(&mut self, node: &Node, shape: Vec<usize>, buf: usize) -> Result<(), MicroError> {
        self.extra_outputs(node)?;
        let name = &node.0.output[0];
        self.pending[buf] += self.readers.get(name.as_str()).copied().unwrap_or(0);
        self.vals.insert(name.clone(), Val::Act { shape, buf });
        Ok(())
    }

    fn extra_outputs(&self, node: &Node) -> Result<(), MicroError> {
        if node.0.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(node.form("its second output is read; the micro engine gives the first only"));
        }
        Ok(())
    }

    fn constant(&mut self, node: &Node, t: Tensor) {
        self.vals.insert(node.0.output[0].clone(), Val::Const(t));
    }

    fn emit_const(&mut self, t: Tensor) -> Result<u16, MicroError> {
        self.consts.push(t);
        u16_of(self.consts.len() - 1, "constants")
    }

    /// The last op, if it wrote `buf` and nothing read it since: a bias or an activation can go into it.
    fn fusable(&mut self, buf: usize) -> Option<&mut Op> {
        if self.pending[buf] != 0 {
            return None;
        }
        let last = self.ops.last_mut()?;
        let y = match last {
            Op::Gemm { y, .. } | Op::Conv { y, .. } => *y,
            _ => return None,
        };
        (usize::from(y) == buf).then_some(last)
    }

    fn node(&mut self, node: &Node) -> Result<(), MicroError> {
        if !(node.0.domain.is_empty() || node.0.domain == "ai.onnx") {
            return Err(MicroError::Unsupported {
                op: format!("{}::{}", node.0.domain, node.0.op_type),
                node: node.name(),
            });
        }
        match node.0.op_type.as_str() {
            "Constant" => {
                let t = node.attr("value").and_then(|a| a.t.as_ref()).ok_or_else(|| node.form("no tensor `value`"))?;
                let t = read_tensor(t)?;
                self.constant(node, t);
            }
            "Identity" | "Dropout" => match self.get(node, 0)? {
                Val::Const(t) => self.constant(node, t),
                Val::Act { .. } => {
                    let (shape, buf) = self.act(node, 0)?;
                    self.alias(node, shape, buf)?;
                }
            },
            "DequantizeLinear" => self.dequantize(node)?,
            "Transpose" => {
                let t = self
                    .konst(node, 0)
                    .map_err(|_| node.form("Transpose of an activation (only of constants, folded at compile time)"))?;
                let perm: Vec<usize> = node
                    .ints("perm")
                    .map_or_else(|| (0..t.shape.len()).rev().collect(), |p| p.iter().map(|v| *v as usize).collect());
                self.constant(node, t.transpose(&perm));
            }
            "Reshape" | "Flatten" => {
                let val = self.get(node, 0)?;
                let shape = match &val {
                    Val::Act { shape, .. } | Val::Const(Tensor { shape, .. }) => shape.clone(),
                };
                let new = if node.0.op_type == "Flatten" {
                    let a = axis_of(node.int("axis", 1), shape.len());
                    vec![shape[..a].iter().product(), shape[a..].iter().product()]
                } else {
                    let spec = match self.konst(node, 1)?.data {
                        Data::I64(v) => v,
                        _ => return Err(node.form("shape is not an integer tensor")),
                    };
                    reshape(&shape, &spec, node.int("allowzero", 0) != 0)
                        .ok_or_else(|| node.form(format!("cannot reshape {shape:?} to {spec:?}")))?
                };
                match val {
                    Val::Const(t) => self.constant(node, Tensor { shape: new, data: t.data }),
                    Val::Act { .. } => {
                        let (_, buf) = self.act(node, 0)?;
                        self.alias(node, new, buf)?;
                    }
                }
            }
            "MatMul" | "Gemm" => self.gemm(node)?,
            "Conv" => self.conv(node)?,
            "MaxPool" | "AveragePool" => self.pool(node)?,
            "GlobalAveragePool" => {
                let (shape, x) = self.act(node, 0)?;
                if shape.len() < 3 {
                    return Err(node.form(format!("input of rank {} (N, C and spatial axes expected)", shape.len())));
                }
                let channels = shape[0] * shape[1];
                let spatial = shape[2..].iter().product();
                let mut out = shape.clone();
                out[2..].fill(1);
                let y = self.output(node, out)?;
                self.ops.push(Op::GlobalAvgPool {
                    x: u16_of(x, "buffers")?,
                    y: u16_of(y, "buffers")?,
                    channels: u32_of(channels, "channels")?,
                    spatial: u32_of(spatial, "spatial size")?,
                });
            }
            "Add" | "Mul" => self.binary(node)?,
            "Relu" | "Sigmoid" | "Tanh" | "Clip" => {
                let act = match node.0.op_type.as_str() {
                    "Relu" => Act::Relu,
                    "Sigmoid" => Act::Sigmoid,
                    "Tanh" => Act::Tanh,
                    _ => {
                        let bound = |i: usize, attr: &str, default: f32| -> Result<f32, MicroError> {
                            if self.opset < 11 {
                                return Ok(node.float(attr, default));
                            }
                            match node.input(i) {
                                None => Ok(default),
                                Some(_) => self
                                    .konst(node, i)?
                                    .f32s()
                                    .first()
                                    .copied()
                                    .ok_or_else(|| node.form(format!("empty `{attr}`"))),
                            }
                        };
                        Act::Clip { min: bound(1, "min", f32::NEG_INFINITY)?, max: bound(2, "max", f32::INFINITY)? }
                    }
                };
                let (shape, x) = self.act(node, 0)?;
                if let Some(Op::Gemm { act: a @ Act::None, .. } | Op::Conv { act: a @ Act::None, .. }) = self.fusable(x)
                {
                    *a = act;
                    return self.alias(node, shape, x);
                }
                let y = self.in_place_or_new(node, shape, x)?;
                self.ops.push(Op::Unary { x: u16_of(x, "buffers")?, y: u16_of(y, "buffers")?, act });
            }
            "Softmax" => {
                let (shape, x) = self.act(node, 0)?;
                let a = axis_of(node.int("axis", if self.opset >= 13 { -1 } else { 1 }), shape.len());
                let outer: usize = shape[..a].iter().product();
                // Before opset 13, Softmax normalizes over every axis from `axis` on.
                let (len, inner) = if self.opset >= 13 {
                    (shape.get(a).copied().unwrap_or(1), shape[(a + 1).min(shape.len())..].iter().product())
                } else {
                    (shape[a..].iter().product(), 1)
                };
                let y = self.in_place_or_new(node, shape, x)?;
                self.ops.push(Op::Softmax {
                    x: u16_of(x, "buffers")?,
                    y: u16_of(y, "buffers")?,
                    outer: u32_of(outer, "rows")?,
                    len: u32_of(len, "axis")?,
                    inner: u32_of(inner, "rows")?,
                });
            }
            other => return Err(MicroError::Unsupported { op: other.into(), node: node.name() }),
        }
        Ok(())
    }

    /// Elementwise ops write over their input when nothing reads it later.
    fn in_place_or_new(&mut self, node: &Node, shape: Vec<usize>, x: usize) -> Result<usize, MicroError> {
        if self.pending[x] == 0 {
            self.alias(node, shape, x)?;
            Ok(x)
        } else {
            self.output(node, shape)
        }
    }

    fn dequantize(&mut self, node: &Node) -> Result<(), MicroError> {
        let x = self
            .konst(node, 0)
            .map_err(|_| node.form("DequantizeLinear of an activation (only of constant weights)"))?;
        let scale = self.konst(node, 1)?.f32s();
        let zero = match node.input(2) {
            Some(_) => Some(self.konst(node, 2)?.f32s()),
            None => None,
        };
        let axis = (scale.len() > 1).then(|| axis_of(node.int("axis", 1), x.shape.len()));
        if axis.is_some_and(|a| x.shape.get(a) != Some(&scale.len())) {
            return Err(node.form(format!("{} scales for shape {:?}", scale.len(), x.shape)));
        }
        let symmetric = zero.as_ref().is_none_or(|z| z.iter().all(|v| *v == 0.0));
        let t = match x.data {
            Data::I8 { q, .. } if symmetric => Tensor { shape: x.shape, data: Data::I8 { q, scales: scale, axis } },
            // Zero points or uint8 codes: folded to f32 here.
            data => {
                let codes = Tensor { shape: x.shape.clone(), data }.f32s();
                let inner: usize = axis.map_or(1, |a| x.shape[a + 1..].iter().product());
                let ch = |i: usize| axis.map_or(0, |a| (i / inner) % x.shape[a]);
                let z = |i: usize| zero.as_ref().map_or(0.0, |z| z[ch(i) % z.len()]);
                let v = codes.iter().enumerate().map(|(i, c)| (c - z(i)) * scale[ch(i)]).collect();
                Tensor { shape: x.shape, data: Data::F32(v) }
            }
        };
        self.constant(node, t);
        Ok(())
    }

    fn gemm(&mut self, node: &Node) -> Result<(), MicroError> {
        let is_gemm = node.0.op_type == "Gemm";
        if is_gemm && node.int("transA", 0) != 0 {
            return Err(node.form("transA = 1 (the micro engine takes A as [M, K])"));
        }
        let mut w = self.konst(node, 1).map_err(|_| {
            node.form("the right-hand side is computed: the micro engine multiplies by constant weights only")
        })?;
        let (shape, x) = self.act(node, 0)?;
        if w.shape.len() != 2 || shape.is_empty() || (is_gemm && shape.len() != 2) {
            return Err(
                node.form(format!("shapes {shape:?} × {:?} (an activation [.., K] by weights [K, N])", w.shape))
            );
        }
        if is_gemm && node.int("transB", 0) != 0 {
            w = w.transpose(&[1, 0]);
        }
        let (k, n) = (w.shape[0], w.shape[1]);
        if shape[shape.len() - 1] != k {
            return Err(node.form(format!("shapes {shape:?} × {:?} do not agree on K", w.shape)));
        }
        let mut w = w.per_channel(1);
        let alpha = if is_gemm { node.float("alpha", 1.0) } else { 1.0 };
        if alpha != 1.0 {
            match &mut w.data {
                Data::F32(v) => v.iter_mut().for_each(|x| *x *= alpha),
                Data::I8 { scales, .. } => scales.iter_mut().for_each(|x| *x *= alpha),
                Data::I64(_) => unreachable!("per_channel gives f32 or int8"),
            }
        }
        let b = match node.input(2).filter(|_| is_gemm) {
            Some(_) => {
                let beta = node.float("beta", 1.0);
                let c = self.konst(node, 2)?;
                if c.f32s().len() != n {
                    return Err(
                        node.form(format!("a bias of shape {:?} (one value per output column expected)", c.shape))
                    );
                }
                Some(self.emit_const(Tensor {
                    shape: vec![n],
                    data: Data::F32(c.f32s().iter().map(|v| v * beta).collect()),
                })?)
            }
            None => None,
        };
        let m: usize = shape[..shape.len() - 1].iter().product();
        let mut out = shape.clone();
        *out.last_mut().expect("rank ≥ 1") = n;
        let y = self.output(node, out)?;
        let w = self.emit_const(w)?;
        self.ops.push(Op::Gemm {
            x: u16_of(x, "buffers")?,
            w,
            b,
            y: u16_of(y, "buffers")?,
            m: u32_of(m, "rows")?,
            k: u32_of(k, "K")?,
            n: u32_of(n, "N")?,
            act: Act::None,
        });
        Ok(())
    }

    /// The window of a Conv or pool over `shape` (NCL or NCHW) with kernel `k` (one or two sizes).
    fn window(
        &self,
        node: &Node,
        shape: &[usize],
        kernel: &[usize],
        c_out: usize,
        ceil: bool,
    ) -> Result<(Window, Vec<usize>), MicroError> {
        let spatial =
            shape.len().checked_sub(2).filter(|s| (1..=2).contains(s) && kernel.len() == *s).ok_or_else(|| {
                node.form(format!(
                    "input {shape:?} with kernel {kernel:?} (1-D or 2-D windows over N, C, spatial axes)"
                ))
            })?;
        let ones = vec![1i64; spatial];
        let strides = node.ints("strides").unwrap_or_else(|| ones.clone());
        let dilations = node.ints("dilations").unwrap_or(ones);
        let input = &shape[2..];
        let mut pads = node.ints("pads").map_or(vec![0usize; 2 * spatial], |p| p.iter().map(|v| *v as usize).collect());
        if strides.len() != spatial || dilations.len() != spatial || pads.len() != 2 * spatial || kernel.contains(&0) {
            return Err(node.form(format!("strides {strides:?}, dilations {dilations:?}, pads {pads:?} or kernel {kernel:?} do not fit {spatial} spatial axes")));
        }
        let auto = node.string("auto_pad");
        let mut out = Vec::new();
        for i in 0..spatial {
            let (s, d) = (strides[i].max(1) as usize, dilations[i].max(1) as usize);
            let span = (kernel[i] - 1) * d + 1;
            match auto.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let o = input[i].div_ceil(s);
                    let total = ((o - 1) * s + span).saturating_sub(input[i]);
                    let small = total / 2;
                    (pads[i], pads[i + spatial]) =
                        if auto == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                    out.push(o);
                }
                "VALID" | "NOTSET" | "" => {
                    if auto == "VALID" {
                        (pads[i], pads[i + spatial]) = (0, 0);
                    }
                    let room = (input[i] + pads[i] + pads[i + spatial])
                        .checked_sub(span)
                        .ok_or_else(|| node.form(format!("window {span} wider than its padded input {}", input[i])))?;
                    out.push(if ceil { room.div_ceil(s) } else { room / s } + 1);
                }
                other => return Err(node.form(format!("auto_pad {other}"))),
            }
        }
        // 1-D is 2-D with a height of 1 (and no padding above or below).
        let two = |v: &[usize], fill: usize| if spatial == 1 { [fill, v[0]] } else { [v[0], v[1]] };
        let (pad_begin, pad_end) = (two(&pads[..spatial], 0), two(&pads[spatial..], 0));
        let [h, w] = two(input, 1);
        let [oh, ow] = two(&out, 1);
        let [kh, kw] = two(kernel, 1);
        let [sh, sw] = two(&strides.iter().map(|v| v.max(&1).unsigned_abs() as usize).collect::<Vec<_>>(), 1);
        let [dh, dw] = two(&dilations.iter().map(|v| v.max(&1).unsigned_abs() as usize).collect::<Vec<_>>(), 1);
        let u = |v: usize| u32_of(v, "window size");
        let win = Window {
            batch: u(shape[0])?,
            c_in: u(shape[1])?,
            h: u(h)?,
            w: u(w)?,
            c_out: u(c_out)?,
            oh: u(oh)?,
            ow: u(ow)?,
            kh: u(kh)?,
            kw: u(kw)?,
            sh: u(sh)?,
            sw: u(sw)?,
            dh: u(dh)?,
            dw: u(dw)?,
            pads: [u(pad_begin[0])?, u(pad_begin[1])?, u(pad_end[0])?, u(pad_end[1])?],
            group: 1,
        };
        let mut out_shape = vec![shape[0], c_out];
        out_shape.extend(out);
        Ok((win, out_shape))
    }

    fn conv(&mut self, node: &Node) -> Result<(), MicroError> {
        let w = self.konst(node, 1)?.per_channel(0);
        let b = match node.input(2) {
            Some(_) => Some(self.konst(node, 2)?),
            None => None,
        };
        let (shape, x) = self.act(node, 0)?;
        let group = node.int("group", 1).max(1) as usize;
        if w.shape.len() != shape.len() || shape.len() < 3 || w.shape[1] * group != shape[1] || w.shape[0] % group != 0
        {
            return Err(node.form(format!("input {shape:?}, weights {:?}, group {group}", w.shape)));
        }
        let c_out = w.shape[0];
        let (mut win, out) = self.window(node, &shape, &w.shape[2..], c_out, false)?;
        win.group = u32_of(group, "groups")?;
        // The engine's weights are always [M, C/g, kh, kw].
        let w = Tensor { shape: vec![w.shape[0], w.shape[1], win.kh as usize, win.kw as usize], data: w.data };
        let b = match b {
            Some(b) if b.f32s().len() == c_out => {
                Some(self.emit_const(Tensor { shape: vec![c_out], data: Data::F32(b.f32s()) })?)
            }
            Some(b) => return Err(node.form(format!("a bias of shape {:?} for {c_out} channels", b.shape))),
            None => None,
        };
        let y = self.output(node, out)?;
        let w = self.emit_const(w)?;
        self.ops.push(Op::Conv { x: u16_of(x, "buffers")?, w, b, y: u16_of(y, "buffers")?, win, act: Act::None });
        Ok(())
    }

    fn pool(&mut self, node: &Node) -> Result<(), MicroError> {
        let max = node.0.op_type == "MaxPool";
        let (shape, x) = self.act(node, 0)?;
        let kernel: Vec<usize> = node
            .ints("kernel_shape")
            .ok_or_else(|| node.form("no kernel_shape"))?
            .iter()
            .map(|v| *v as usize)
            .collect();
        if !max && node.ints("dilations").is_some_and(|d| d.iter().any(|v| *v != 1)) {
            return Err(node.form("dilations other than 1"));
        }
        let (win, out) =
            self.window(node, &shape, &kernel, shape.get(1).copied().unwrap_or(0), node.int("ceil_mode", 0) != 0)?;
        let kind = if max { PoolKind::Max } else { PoolKind::Avg { count_pad: node.int("count_include_pad", 0) != 0 } };
        let y = self.output(node, out)?;
        self.ops.push(Op::Pool { x: u16_of(x, "buffers")?, y: u16_of(y, "buffers")?, kind, win });
        Ok(())
    }

    fn binary(&mut self, node: &Node) -> Result<(), MicroError> {
        let kind = if node.0.op_type == "Add" { BinKind::Add } else { BinKind::Mul };
        let (a, b) = (self.get(node, 0)?, self.get(node, 1)?);
        let shape_of = |v: &Val| match v {
            Val::Act { shape, .. } | Val::Const(Tensor { shape, .. }) => shape.clone(),
        };
        let (sa, sb) = (shape_of(&a), shape_of(&b));
        let rank = sa.len().max(sb.len());
        let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
        let (pa, pb) = (pad(&sa), pad(&sb));
        let out: Vec<usize> = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| match (x, y) {
                (x, y) if x == y => Ok(*x),
                (1, y) => Ok(*y),
                (x, 1) => Ok(*x),
                _ => Err(node.form(format!("shapes {sa:?} and {sb:?} do not broadcast"))),
            })
            .collect::<Result<_, _>>()?;
        // A bias after a Gemm (over its last axis) or a Conv (over its channels) goes into it.
        if kind == BinKind::Add {
            for (act, other) in [(&a, &b), (&b, &a)] {
                if let (Val::Act { buf, shape }, Val::Const(t)) = (act, other) {
                    let count = t.shape.iter().product::<usize>();
                    let nonunit: Vec<usize> =
                        pad(&t.shape).iter().enumerate().filter(|(_, d)| **d != 1).map(|(i, _)| i).collect();
                    let (buf, shape, t) = (*buf, shape.clone(), t.clone());
                    self.pending[buf] -= 1;
                    let fused = match self.fusable(buf) {
                        Some(Op::Gemm { b: b @ None, act: Act::None, n, .. })
                            if nonunit.iter().all(|i| *i == rank - 1) && count == *n as usize =>
                        {
                            Some(b)
                        }
                        Some(Op::Conv { b: b @ None, act: Act::None, win, .. })
                            if nonunit.iter().all(|i| *i == 1)
                                && count == win.c_out as usize
                                && rank == shape.len() =>
                        {
                            Some(b)
                        }
                        _ => None,
                    }
                    .is_some();
                    if fused && out == shape {
                        let id = self.emit_const(Tensor { shape: vec![count], data: Data::F32(t.f32s()) })?;
                        let Some(Op::Gemm { b, .. } | Op::Conv { b, .. }) = self.ops.last_mut() else {
                            unreachable!("fusable")
                        };
                        *b = Some(id);
                        return self.alias(node, shape, buf);
                    }
                    self.pending[buf] += 1;
                }
            }
        }
        let src = |v: Val, padded: &[usize], c: &mut Self| -> Result<(Src, Vec<u32>), MicroError> {
            let st = strides(padded);
            let strides = padded
                .iter()
                .zip(&out)
                .zip(st)
                .map(|((d, o), s)| if d == o { s } else { 0 })
                .map(|s| u32_of(s, "stride"))
                .collect::<Result<_, _>>()?;
            let src = match v {
                Val::Act { buf, .. } => {
                    c.pending[buf] -= 1;
                    Src::Buf(u16_of(buf, "buffers")?)
                }
                Val::Const(t) => {
                    let t = match t.data {
                        Data::I8 { axis: Some(_), .. } => t,
                        _ => Tensor { data: Data::F32(t.f32s()), shape: t.shape },
                    };
                    Src::Const(c.emit_const(t)?)
                }
            };
            Ok((src, strides))
        };
        let (sa_src, a_strides) = src(a, &pa, self)?;
        let (sb_src, b_strides) = src(b, &pb, self)?;
        let len: usize = out.iter().product();
        let reusable = [sa_src, sb_src].into_iter().find_map(|s| match s {
            Src::Buf(i) if self.pending[usize::from(i)] == 0 && self.lens[usize::from(i)] == len => {
                Some(usize::from(i))
            }
            _ => None,
        });
        let y = match reusable {
            Some(buf) => {
                self.alias(node, out.clone(), buf)?;
                buf
            }
            None => self.output(node, out.clone())?,
        };
        let u = |v: &[usize]| v.iter().map(|d| u32_of(*d, "dimension")).collect::<Result<Vec<_>, _>>();
        self.ops.push(Op::Binary {
            kind,
            a: sa_src,
            b: sb_src,
            y: u16_of(y, "buffers")?,
            shape: u(&out)?,
            a_strides,
            b_strides,
        });
        Ok(())
    }

    fn finish(
        self,
        name: &str,
        inputs: &[(String, usize)],
        outputs: &[(String, usize)],
    ) -> Result<Compiled, MicroError> {
        // Time 0: inputs written; op i runs at time i + 1; outputs are read after the last op.
        let end = self.ops.len() as u32 + 1;
        let mut first: Vec<Option<u32>> = vec![None; self.lens.len()];
        let mut last = vec![0u32; self.lens.len()];
        let mut touch = |b: usize, t: u32, write: bool| {
            if write && first[b].is_none() {
                first[b] = Some(t);
            }
            last[b] = last[b].max(t);
        };
        for (_, b) in inputs {
            touch(*b, 0, true);
        }
        for (i, op) in self.ops.iter().enumerate() {
            let t = i as u32 + 1;
            let (reads, write) = match op {
                Op::Gemm { x, y, .. }
                | Op::Conv { x, y, .. }
                | Op::Pool { x, y, .. }
                | Op::GlobalAvgPool { x, y, .. }
                | Op::Unary { x, y, .. }
                | Op::Softmax { x, y, .. } => (vec![*x], *y),
                Op::Binary { a, b, y, .. } => {
                    ([*a, *b].iter().filter_map(|s| if let Src::Buf(i) = s { Some(*i) } else { None }).collect(), *y)
                }
            };
            for r in reads {
                touch(usize::from(r), t, false);
            }
            touch(usize::from(write), t, true);
        }
        for (_, b) in outputs {
            touch(*b, end, false);
        }
        let lifetimes: Vec<Lifetime> = self
            .lens
            .iter()
            .enumerate()
            .map(|(b, len)| {
                let first = first[b].unwrap_or(last[b]);
                Ok(Lifetime { len: u32_of(*len, "tensor length")?, first, last: last[b].max(first) })
            })
            .collect::<Result<_, MicroError>>()?;
        let p = plan(&lifetimes);
        let buffers = p.offsets.iter().zip(&lifetimes).map(|(o, l)| Buffer { offset: *o, len: l.len }).collect();
        let blobs: Vec<(Vec<u8>, Vec<u8>)> = self
            .consts
            .iter()
            .map(|t| match &t.data {
                Data::I8 { q, scales, axis: Some(_) } => {
                    (q.iter().map(|v| *v as u8).collect(), scales.iter().flat_map(|s| s.to_le_bytes()).collect())
                }
                _ => (t.f32s().iter().flat_map(|v| v.to_le_bytes()).collect(), Vec::new()),
            })
            .collect();
        let consts: Vec<Const> = self
            .consts
            .iter()
            .zip(&blobs)
            .map(|(t, (data, scales))| {
                let shape = t.shape.iter().map(|d| u32_of(*d, "dimension")).collect::<Result<_, _>>()?;
                let data = match t.data {
                    Data::I8 { axis: Some(axis), .. } => {
                        Weights::I8 { codes: Blob(data.as_slice()), scales: Blob(scales.as_slice()), axis: axis as u8 }
                    }
                    _ => Weights::F32(Blob(data.as_slice())),
                };
                Ok(Const { shape, data })
            })
            .collect::<Result<_, MicroError>>()?;
        let model = Model {
            name,
            arena: p.arena,
            buffers,
            inputs: io(&self.vals, inputs)?,
            outputs: io(&self.vals, outputs)?,
            consts,
            ops: self.ops.clone(),
        };
        let bytes = model.encode()?;
        // What the firmware will check on reading it.
        let model = Model::decode(&bytes)?;
        let report = MicroReport {
            flash_bytes: bytes.len() as u64,
            weight_bytes: model.weight_bytes() as u64,
            arena_bytes: model.arena_bytes() as u64,
            peak_live_bytes: u64::from(p.peak_live) * 4,
            ops: model.ops.len(),
            int8_tensors: model.consts.iter().filter(|c| matches!(c.data, Weights::I8 { .. })).count(),
            f32_tensors: model.consts.iter().filter(|c| matches!(c.data, Weights::F32(_))).count(),
        };
        Ok(Compiled { bytes, report })
    }
}

/// The graph's inputs or outputs as the format lists them.
fn io<'a>(vals: &HashMap<String, Val>, list: &'a [(String, usize)]) -> Result<Vec<Io<'a>>, MicroError> {
    list.iter()
        .map(|(name, b)| {
            let shape = match &vals[name] {
                Val::Act { shape, .. } => shape.iter().map(|d| u32_of(*d, "dimension")).collect::<Result<_, _>>()?,
                Val::Const(_) => unreachable!("compile refuses constant outputs"),
            };
            Ok(Io { name: name.as_str(), shape, buffer: u16_of(*b, "buffers")? })
        })
        .collect()
}

/// ONNX Reshape's target: 0 copies the input's dimension (unless `allowzero`), -1 takes the rest.
fn reshape(shape: &[usize], spec: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let total: usize = shape.iter().product();
    let mut out: Vec<usize> = spec
        .iter()
        .enumerate()
        .map(|(i, d)| match *d {
            0 if !allowzero => shape.get(i).copied().unwrap_or(0),
            -1 => 1,
            d => d as usize,
        })
        .collect();
    if let Some(i) = spec.iter().position(|d| *d == -1) {
        let known: usize = out.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| d).product();
        out[i] = total.checked_div(known)?;
    }
    (out.iter().product::<usize>() == total).then_some(out)
}
