//! The micro-model format and its interpreter: small models (fully connected
//! and convolutional, fp32 or int8 weights) on a microcontroller.
//!
//! A micro-model is `postcard(Header) ++ postcard(Model)`. The header is
//! read on its own first, so a file of another format version is refused by
//! its version field rather than misread. Weights are borrowed from the
//! model's bytes ([`Blob`]): a firmware keeps the model in flash and reads
//! each weight in place, converting from little-endian as it goes (no
//! alignment needed). Activations are f32 in one arena whose layout the
//! compiler planned ([`plan`]): its size is known before running, and the
//! firmware may give a static buffer ([`run_in`]) or let [`run`] allocate
//! it, where a failed allocation is an error, not a panic.
//!
//! The host compiles ONNX to this format (`edgehil_onnx::micro`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod interp;
pub mod plan;

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use interp::{run, run_in, run_in_with};

/// The first bytes of every micro-model.
pub const MAGIC: [u8; 4] = *b"EHMM";
/// Bumped on any change to the types below.
pub const FORMAT_VERSION: u16 = 1;

/// Read before the model, on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub magic: [u8; 4],
    pub version: u16,
}

/// Bytes borrowed from the serialized model (postcard `bytes`: a varint length, then the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob<'a>(pub &'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de [u8]>::deserialize(d).map(Blob)
    }
}

/// One model: where each tensor lives in the arena, the weights and the ops in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model<'a> {
    pub name: &'a str,
    /// f32 elements of the activation arena.
    pub arena: u32,
    /// Activation tensors, as regions of the arena; ops name them by index.
    pub buffers: Vec<Buffer>,
    #[serde(borrow)]
    pub inputs: Vec<Io<'a>>,
    #[serde(borrow)]
    pub outputs: Vec<Io<'a>>,
    #[serde(borrow)]
    pub consts: Vec<Const<'a>>,
    pub ops: Vec<Op>,
}

/// `len` f32 elements at `offset` (elements) in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    pub offset: u32,
    pub len: u32,
}

impl Buffer {
    fn range(self) -> core::ops::Range<usize> {
        self.offset as usize..self.offset as usize + self.len as usize
    }
}

/// A graph input or output: its name, shape and buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Io<'a> {
    pub name: &'a str,
    pub shape: Vec<u32>,
    pub buffer: u16,
}

/// A constant tensor (weights, biases), read in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Const<'a> {
    pub shape: Vec<u32>,
    #[serde(borrow)]
    pub data: Weights<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weights<'a> {
    /// Little-endian f32.
    #[serde(borrow)]
    F32(Blob<'a>),
    /// Symmetric int8 codes with one little-endian f32 scale per index of
    /// `axis` (the output channel: N of a Gemm's `[K, N]`, M of a Conv's `[M, C/g, kh, kw]`).
    I8 {
        #[serde(borrow)]
        codes: Blob<'a>,
        #[serde(borrow)]
        scales: Blob<'a>,
        axis: u8,
    },
}

/// An operand: an activation buffer or a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Src {
    Buf(u16),
    Const(u16),
}

/// An activation applied as a value is written (fused into Gemm and Conv, or on its own).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Act {
    None,
    Relu,
    /// Clip; Relu6 is `Clip(0, 6)`.
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinKind {
    Add,
    Mul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolKind {
    Max,
    /// Average; `count_pad` counts padded positions in the divisor (ONNX `count_include_pad`).
    Avg {
        count_pad: bool,
    },
}

/// The geometry of a 2-D window over NCHW (1-D is `h = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub batch: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub dh: u32,
    pub dw: u32,
    /// Padding before (top, left) and after (bottom, right).
    pub pads: [u32; 4],
    /// Conv groups (`c_in` for a depthwise conv); 1 for pooling.
    pub group: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `y[m, n] = act(b[n] + Σ_k x[m, k] · w[k, n])`, `w` a `[k, n]` constant.
    Gemm { x: u16, w: u16, b: Option<u16>, y: u16, m: u32, k: u32, n: u32, act: Act },
    /// NCHW convolution, weights `[c_out, c_in / group, kh, kw]`, bias `[c_out]`.
    Conv { x: u16, w: u16, b: Option<u16>, y: u16, win: Window, act: Act },
    /// Pooling over NCHW (`c_out = c_in`).
    Pool { x: u16, y: u16, kind: PoolKind, win: Window },
    /// Mean over `spatial` values of each of `channels` rows.
    GlobalAvgPool { x: u16, y: u16, channels: u32, spatial: u32 },
    /// `y = a ∘ b` with broadcasting: per output axis, each operand's stride (0 where broadcast).
    Binary { kind: BinKind, a: Src, b: Src, y: u16, shape: Vec<u32>, a_strides: Vec<u32>, b_strides: Vec<u32> },
    /// `y = act(x)`, elementwise; `y` may be `x` (in place).
    Unary { x: u16, y: u16, act: Act },
    /// Softmax over `len` values `inner` apart, for each of `outer × inner` rows; `y` may be `x`.
    Softmax { x: u16, y: u16, outer: u32, len: u32, inner: u32 },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Gemm { .. } => "Gemm",
            Op::Conv { .. } => "Conv",
            Op::Pool { kind: PoolKind::Max, .. } => "MaxPool",
            Op::Pool { .. } => "AveragePool",
            Op::GlobalAvgPool { .. } => "GlobalAveragePool",
            Op::Binary { kind: BinKind::Add, .. } => "Add",
            Op::Binary { .. } => "Mul",
            Op::Unary { .. } => "Activation",
            Op::Softmax { .. } => "Softmax",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not a micro-model: it starts with {found:02x?}, a micro-model with {MAGIC:02x?} (\"EHMM\")")]
    Magic { found: [u8; 4] },
    #[error("micro-model format version {found}, this engine reads version {expected}: compile the model again with a matching edgehil")]
    Version { found: u16, expected: u16 },
    #[error("micro-model cannot be decoded: {0}")]
    Decode(postcard::Error),
    #[error("micro-model cannot be encoded: {0}")]
    Encode(postcard::Error),
    #[error("micro-model op {index} ({op}): {what}")]
    Invalid { index: usize, op: &'static str, what: &'static str },
    #[error("micro-model {what}")]
    Malformed { what: &'static str },
    #[error("the activation arena needs {needed} bytes, {given} given")]
    ArenaTooSmall { needed: usize, given: usize },
    #[error("cannot allocate {bytes} bytes for the {what}")]
    OutOfMemory { bytes: usize, what: &'static str },
    #[error("input {index} has {given} values, the model's has {expected}")]
    InputLength { index: usize, expected: usize, given: usize },
    #[error("{given} inputs given, the model takes {expected}")]
    InputCount { expected: usize, given: usize },
}

impl<'a> Model<'a> {
    /// Reads a model from its bytes, borrowing its names and weights from them, and checks it
    /// (every op's buffers and weights have the sizes its geometry needs), so running it cannot
    /// index out of bounds.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let found: [u8; 4] = bytes.get(..4).and_then(|m| m.try_into().ok()).unwrap_or_default();
        if found != MAGIC {
            return Err(Error::Magic { found });
        }
        let (header, rest) = postcard::take_from_bytes::<Header>(bytes).map_err(Error::Decode)?;
        if header.version != FORMAT_VERSION {
            return Err(Error::Version { found: header.version, expected: FORMAT_VERSION });
        }
        let model: Model<'a> = postcard::from_bytes(rest).map_err(Error::Decode)?;
        model.check()?;
        Ok(model)
    }

    /// The header and the model, as [`Model::decode`] reads them.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out =
            postcard::to_allocvec(&Header { magic: MAGIC, version: FORMAT_VERSION }).map_err(Error::Encode)?;
        out.extend(postcard::to_allocvec(self).map_err(Error::Encode)?);
        Ok(out)
    }

    /// Bytes of the activation arena: the RAM a run needs beyond the decoded model.
    pub fn arena_bytes(&self) -> usize {
        (self.arena as usize).saturating_mul(4)
    }

    /// Bytes of the weights (codes and scales included).
    pub fn weight_bytes(&self) -> usize {
        self.consts
            .iter()
            .map(|c| match c.data {
                Weights::F32(b) => b.0.len(),
                Weights::I8 { codes, scales, .. } => codes.0.len() + scales.0.len(),
            })
            .sum()
    }

    fn check(&self) -> Result<(), Error> {
        for b in &self.buffers {
            if u64::from(b.offset) + u64::from(b.len) > u64::from(self.arena) {
                return Err(Error::Malformed { what: "buffer lies outside the arena" });
            }
        }
        for c in &self.consts {
            c.check()?;
        }
        for io in self.inputs.iter().chain(&self.outputs) {
            let buf =
                self.buffers.get(usize::from(io.buffer)).ok_or(Error::Malformed { what: "I/O buffer missing" })?;
            if elements(&io.shape) != Some(buf.len as usize) {
                return Err(Error::Malformed { what: "I/O shape differs from its buffer" });
            }
        }
        for (index, op) in self.ops.iter().enumerate() {
            interp::check(self, op).map_err(|what| Error::Invalid { index, op: op.name(), what })?;
        }
        Ok(())
    }
}

impl Const<'_> {
    /// Values: the shape's element count.
    pub fn len(&self) -> usize {
        elements(&self.shape).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self) -> Result<(), Error> {
        let n = elements(&self.shape).ok_or(Error::Malformed { what: "constant too large" })?;
        let ok = match self.data {
            Weights::F32(b) => b.0.len() == n * 4,
            Weights::I8 { codes, scales, axis } => {
                let channels = self.shape.get(usize::from(axis)).map(|c| *c as usize);
                codes.0.len() == n && channels.is_some_and(|c| scales.0.len() == c * 4)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Malformed { what: "constant's bytes differ from its shape" })
        }
    }
}

/// Element count of a shape, if it fits.
pub fn elements(shape: &[u32]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// `y = relu(x @ w + b)` for `x [1, 2]`, `w [2, 3]`.
    fn gemm_model<'a>(w: &'a [u8], b: &'a [u8]) -> Model<'a> {
        Model {
            name: "gemm",
            arena: 5,
            buffers: vec![Buffer { offset: 0, len: 2 }, Buffer { offset: 2, len: 3 }],
            inputs: vec![Io { name: "x", shape: vec![1, 2], buffer: 0 }],
            outputs: vec![Io { name: "y", shape: vec![1, 3], buffer: 1 }],
            consts: vec![
                Const { shape: vec![2, 3], data: Weights::F32(Blob(w)) },
                Const { shape: vec![3], data: Weights::F32(Blob(b)) },
            ],
            ops: vec![Op::Gemm { x: 0, w: 0, b: Some(1), y: 1, m: 1, k: 2, n: 3, act: Act::Relu }],
        }
    }

    fn le(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn a_model_round_trips_and_runs() {
        let (w, b) = (le(&[1.0, 2.0, -3.0, 0.5, 0.0, 1.0]), le(&[0.0, 1.0, 0.0]));
        let bytes = gemm_model(&w, &b).encode().unwrap();
        let model = Model::decode(&bytes).unwrap();
        assert_eq!(model, gemm_model(&w, &b));
        // The weights are the model's bytes, not a copy.
        let Weights::F32(blob) = model.consts[0].data else { panic!("f32 weights") };
        assert!(bytes.as_ptr_range().contains(&blob.0.as_ptr()));
        // x = [2, 4]: [2 + 2, 4 + 0 + 1, -6 + 4] → relu
        assert_eq!(run(&model, &[&[2.0, 4.0]]).unwrap(), vec![vec![4.0, 5.0, 0.0]]);
    }

    #[test]
    fn the_firmware_hears_from_the_run_after_every_op() {
        let (w, b) = (le(&[1.0, 2.0, -3.0, 0.5, 0.0, 1.0]), le(&[0.0; 3]));
        let mut model = gemm_model(&w, &b);
        model.ops.push(Op::Unary { x: 1, y: 1, act: Act::Relu });
        let (mut arena, mut calls) = ([0f32; 5], 0);
        let out = run_in_with(&model, &mut arena, &[&[2.0, 4.0]], || calls += 1).unwrap();
        assert_eq!((out, calls), (vec![[4.0, 4.0, 0.0].as_slice()], 2));
    }

    #[test]
    fn another_format_version_is_refused_by_its_number() {
        let (w, b) = (le(&[0.0; 6]), le(&[0.0; 3]));
        let mut bytes = gemm_model(&w, &b).encode().unwrap();
        assert_eq!(bytes[4], FORMAT_VERSION as u8, "the version follows the magic");
        bytes[4] += 1;
        let err = Model::decode(&bytes).unwrap_err();
        assert_eq!(err, Error::Version { found: FORMAT_VERSION + 1, expected: FORMAT_VERSION });
        insta::assert_snapshot!(err.to_string(), @"micro-model format version 2, this engine reads version 1: compile the model again with a matching edgehil");
        let err = Model::decode(b"\x08\x01\x12\x00onnx").unwrap_err();
        insta::assert_snapshot!(err.to_string(), @r#"not a micro-model: it starts with [08, 01, 12, 00], a micro-model with [45, 48, 4d, 4d] ("EHMM")"#);
    }

    #[test]
    fn an_op_reading_past_its_buffers_is_refused_at_decode() {
        let (w, b) = (le(&[0.0; 6]), le(&[0.0; 3]));
        let mut model = gemm_model(&w, &b);
        model.ops[0] = Op::Gemm { x: 0, w: 0, b: Some(1), y: 1, m: 2, k: 2, n: 3, act: Act::None };
        let err = Model::decode(&model.encode().unwrap()).unwrap_err();
        assert_eq!(err, Error::Invalid { index: 0, op: "Gemm", what: "input is not m × k" });
    }

    #[test]
    fn a_small_arena_is_an_error() {
        let (w, b) = (le(&[0.0; 6]), le(&[0.0; 3]));
        let model = gemm_model(&w, &b);
        let mut arena = [0f32; 4];
        let err = run_in(&model, &mut arena, &[&[1.0, 2.0]]).unwrap_err();
        assert_eq!(err, Error::ArenaTooSmall { needed: 20, given: 16 });
        let err = run(&model, &[&[1.0]]).unwrap_err();
        assert_eq!(err, Error::InputLength { index: 0, expected: 2, given: 1 });
    }
}
