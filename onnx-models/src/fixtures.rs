//! The fixture models: an MLP classifier, one pre-norm transformer block and
//! two MLPerf Tiny–shaped models for microcontrollers (an anomaly-detection
//! autoencoder and a DS-CNN keyword spotter), each in fp32 and in int8
//! (per-channel symmetric weights, dequantized before MatMul or Conv as the
//! export format prescribes). Weights come from a fixed seed, so
//! `make-fixtures` rewrites the committed files byte for byte.

use std::path::{Path, PathBuf};

use tract_onnx::pb::ModelProto;

use crate::graph::{write_model, Attr, Dim, Elem, GraphBuilder, OnnxError};
use crate::rng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Int8,
}

/// Every fixture: (file name, model).
pub fn all() -> Vec<(&'static str, ModelProto)> {
    vec![
        ("mlp.onnx", mlp(Precision::F32)),
        ("mlp-int8.onnx", mlp(Precision::Int8)),
        ("block.onnx", block(Precision::F32)),
        ("block-int8.onnx", block(Precision::Int8)),
        ("ad-autoencoder.onnx", autoencoder(Precision::F32)),
        ("ad-autoencoder-int8.onnx", autoencoder(Precision::Int8)),
        ("ds-cnn.onnx", ds_cnn(Precision::F32)),
        ("ds-cnn-int8.onnx", ds_cnn(Precision::Int8)),
    ]
}

/// The folder holding the committed fixtures.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, OnnxError> {
    std::fs::create_dir_all(dir).map_err(|cause| OnnxError::Write { path: dir.display().to_string(), cause })?;
    all()
        .into_iter()
        .map(|(name, model)| {
            let path = dir.join(name);
            write_model(&model, &path)?;
            Ok(path)
        })
        .collect()
}

/// Per-column symmetric int8 quantization of a `[k, n]` row-major matrix:
/// scale_j = max_i |w_ij| / 127.
pub fn quantize_per_column(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    debug_assert_eq!(w.len(), k * n);
    quantize_per_channel(w, n, |i| i % n)
}

/// Symmetric int8 quantization with one scale per channel (`channel(i)` is
/// element `i`'s, below `channels`): scale = max |w| of the channel / 127.
pub fn quantize_per_channel(w: &[f32], channels: usize, channel: impl Fn(usize) -> usize) -> (Vec<i8>, Vec<f32>) {
    let mut max = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        max[channel(i)] = max[channel(i)].max(v.abs());
    }
    let scales: Vec<f32> = max.iter().map(|m| if *m == 0.0 { 1.0 } else { m / 127.0 }).collect();
    let q = w.iter().enumerate().map(|(i, v)| (v / scales[channel(i)]).round().clamp(-127.0, 127.0) as i8).collect();
    (q, scales)
}

/// Model building with deterministic weights.
struct Builder {
    g: GraphBuilder,
    rng: SplitMix64,
    precision: Precision,
}

impl Builder {
    fn new(name: &str, seed: u64, precision: Precision) -> Self {
        Self { g: GraphBuilder::new(name), rng: SplitMix64::new(seed), precision }
    }

    /// `x @ W + b` for a random `[k, n]` weight scaled by 1/sqrt(k).
    fn linear(&mut self, x: &str, name: &str, k: usize, n: usize) -> String {
        let w = self.rng.fill(k * n, 1.0 / (k as f32).sqrt());
        let b = self.rng.fill(n, 0.1);
        let weight = self.weight(name, &[k as i64, n as i64], &w, 1);
        let bias = self.g.f32s(&format!("{name}.bias"), &[n as i64], &b);
        let y = self.g.node("MatMul", &[x, &weight], &[]);
        self.g.node("Add", &[&y, &bias], &[])
    }

    /// A weight as the precision stores it: f32, or int8 codes with one scale per index of
    /// the output-channel axis `axis` (1 for MatMul's `[K, N]`, 0 for Conv's `[M, C/g, k..]`).
    fn weight(&mut self, name: &str, dims: &[i64], w: &[f32], axis: usize) -> String {
        match self.precision {
            Precision::F32 => self.g.f32s(&format!("{name}.weight"), dims, w),
            Precision::Int8 => {
                let channels = dims[axis] as usize;
                let inner: usize = dims[axis + 1..].iter().map(|d| *d as usize).product();
                let (q, scales) = quantize_per_channel(w, channels, |i| (i / inner) % channels);
                let q = self.g.i8s(&format!("{name}.weight_q"), dims, &q);
                let s = self.g.f32s(&format!("{name}.weight_scale"), &[channels as i64], &scales);
                self.g.node("DequantizeLinear", &[&q, &s], &[Attr::Int("axis", axis as i64)])
            }
        }
    }

    /// A Conv with bias over NCHW (or NCL, with one kernel size): random `[c_out, c_in / group, kernel..]`
    /// weights scaled by 1/sqrt(fan-in).
    fn conv(
        &mut self,
        x: &str,
        name: &str,
        (c_in, c_out, group): (usize, usize, usize),
        kernel: &[i64],
        attrs: &[Attr],
    ) -> String {
        let fan_in = c_in / group * kernel.iter().product::<i64>() as usize;
        let w = self.rng.fill(c_out * fan_in, 1.0 / (fan_in as f32).sqrt());
        let b = self.rng.fill(c_out, 0.1);
        let dims = [&[c_out as i64, (c_in / group) as i64], kernel].concat();
        let weight = self.weight(name, &dims, &w, 0);
        let bias = self.g.f32s(&format!("{name}.bias"), &[c_out as i64], &b);
        let attrs = [attrs, &[Attr::Ints("kernel_shape", kernel.to_vec()), Attr::Int("group", group as i64)]].concat();
        self.g.node("Conv", &[x, &weight, &bias], &attrs)
    }

    /// Fully connected layers `fc1..` through `widths`, ReLU between them (not after the last).
    fn dense_stack(&mut self, x: &str, widths: &[usize]) -> String {
        let layers = widths.len() - 1;
        let mut h = x.to_string();
        for (i, pair) in widths.windows(2).enumerate() {
            h = self.linear(&h, &format!("fc{}", i + 1), pair[0], pair[1]);
            if i + 1 < layers {
                h = self.g.node("Relu", &[&h], &[]);
            }
        }
        h
    }

    fn layer_norm(&mut self, x: &str, name: &str, d: usize) -> String {
        let gamma: Vec<f32> = self.rng.fill(d, 0.1).iter().map(|v| 1.0 + v).collect();
        let beta = self.rng.fill(d, 0.1);
        let gamma = self.g.f32s(&format!("{name}.weight"), &[d as i64], &gamma);
        let beta = self.g.f32s(&format!("{name}.bias"), &[d as i64], &beta);
        self.g.node("LayerNormalization", &[x, &gamma, &beta], &[Attr::Int("axis", -1), Attr::Float("epsilon", 1e-5)])
    }
}

fn fixed(dims: &[i64]) -> Vec<Dim> {
    dims.iter().map(|d| Dim::Fixed(*d)).collect()
}

/// MLPerf Tiny's anomaly-detection autoencoder, narrowed: `input [1, 640]` (5 frames of 128 mel
/// bands) → 4 × 64 → 8 → 4 × 64 → `reconstruction [1, 640]`, ReLU after every hidden layer.
/// MLPerf's has 128 a layer; 64 keeps the committed file small with the same shape of graph.
pub fn autoencoder(precision: Precision) -> ModelProto {
    let widths = [640, 64, 64, 64, 64, 8, 64, 64, 64, 64, 640];
    let mut b = Builder::new("ad-autoencoder", 0x5eed_0003, precision);
    let h = b.g.input("input", Elem::F32, &fixed(&[1, 640]));
    let h = b.dense_stack(&h, &widths);
    b.g.node_to("Identity", &[&h], "reconstruction", &[]);
    b.g.output("reconstruction", Elem::F32, &fixed(&[1, 640]));
    b.g.build()
}

/// MLPerf Tiny's keyword-spotting DS-CNN: `input [1, 1, 49, 10]` (49 frames of 10 MFCCs) →
/// Conv 10×4 stride 2, 64 channels, ReLU → 4 × (depthwise 3×3, ReLU, pointwise 1×1, ReLU) →
/// global average pool → FC 12 → `probs [1, 12]` (softmax). Batch norms are folded into the convs.
pub fn ds_cnn(precision: Precision) -> ModelProto {
    const C: usize = 64;
    let mut b = Builder::new("ds-cnn", 0x5eed_0004, precision);
    let x = b.g.input("input", Elem::F32, &fixed(&[1, 1, 49, 10]));
    // TensorFlow's "same" padding for 49 × 10 with a 10 × 4 window, stride 2: 25 × 5 out.
    let stem = [Attr::Ints("strides", vec![2, 2]), Attr::Ints("pads", vec![4, 1, 5, 1])];
    let h = b.conv(&x, "conv1", (1, C, 1), &[10, 4], &stem);
    let mut h = b.g.node("Relu", &[&h], &[]);
    for i in 1..=4 {
        let dw = b.conv(&h, &format!("dw{i}"), (C, C, C), &[3, 3], &[Attr::Ints("pads", vec![1, 1, 1, 1])]);
        let dw = b.g.node("Relu", &[&dw], &[]);
        let pw = b.conv(&dw, &format!("pw{i}"), (C, C, 1), &[1, 1], &[]);
        h = b.g.node("Relu", &[&pw], &[]);
    }
    let pooled = b.g.node("GlobalAveragePool", &[&h], &[]);
    let flat = b.g.node("Flatten", &[&pooled], &[Attr::Int("axis", 1)]);
    let logits = b.linear(&flat, "fc", C, 12);
    b.g.node_to("Softmax", &[&logits], "probs", &[Attr::Int("axis", -1)]);
    b.g.output("probs", Elem::F32, &fixed(&[1, 12]));
    b.g.build()
}

/// The micro engine's other ops in one small model (not committed: the micro engine's tests
/// build it): `signal [1, 4, 32]` → Conv1D k3 → Relu6 (Clip 0..6) → MaxPool 2 → Sigmoid ·
/// Tanh of itself → AveragePool 3 stride 2 with padding → Mul by a per-channel constant →
/// Reshape → Gemm (transB, alpha, beta) → `out [1, 5]`.
pub fn micro_ops(precision: Precision) -> ModelProto {
    let mut b = Builder::new("micro-ops", 0x5eed_0005, precision);
    let x = b.g.input("signal", Elem::F32, &fixed(&[1, 4, 32]));
    let h = b.conv(&x, "conv", (4, 8, 1), &[3], &[Attr::Ints("pads", vec![1, 1])]);
    let zero = b.g.f32s("zero", &[], &[0.0]);
    let six = b.g.f32s("six", &[], &[6.0]);
    let h = b.g.node("Clip", &[&h, &zero, &six], &[]);
    let h = b.g.node("MaxPool", &[&h], &[Attr::Ints("kernel_shape", vec![2]), Attr::Ints("strides", vec![2])]);
    let s = b.g.node("Sigmoid", &[&h], &[]);
    let t = b.g.node("Tanh", &[&h], &[]);
    let h = b.g.node("Mul", &[&s, &t], &[]);
    let pool = [Attr::Ints("kernel_shape", vec![3]), Attr::Ints("strides", vec![2]), Attr::Ints("pads", vec![1, 1])];
    let h = b.g.node("AveragePool", &[&h], &pool);
    let gain = b.rng.fill(8, 1.0);
    let gain = b.g.f32s("gain", &[1, 8, 1], &gain);
    let h = b.g.node("Mul", &[&h, &gain], &[]);
    let shape = b.g.i64s("flat_shape", &[2], &[1, -1]);
    let h = b.g.node("Reshape", &[&h, &shape], &[]);
    let w = b.rng.fill(5 * 64, 0.125);
    let w = b.weight("fc", &[5, 64], &w, 0);
    let bias = b.rng.fill(5, 0.1);
    let bias = b.g.f32s("fc.bias", &[5], &bias);
    let gemm = [Attr::Int("transB", 1), Attr::Float("alpha", 0.5), Attr::Float("beta", 2.0)];
    b.g.node_to("Gemm", &[&h, &w, &bias], "out", &gemm);
    b.g.output("out", Elem::F32, &fixed(&[1, 5]));
    b.g.build()
}

/// MLP classifier: `input [4, 64]` → 128 → 64 → `logits [4, 10]`, ReLU between.
pub fn mlp(precision: Precision) -> ModelProto {
    mlp_sized("mlp", 4, &[64, 128, 64, 10], precision)
}

/// An MLP of any size: `input [batch, widths[0]]` → … → `logits [batch, last]`,
/// for benchmarks and memory tests that need a model of a given weight.
pub fn mlp_sized(name: &str, batch: i64, widths: &[usize], precision: Precision) -> ModelProto {
    let mut b = Builder::new(name, 0x5eed_0001, precision);
    let h = b.g.input("input", Elem::F32, &fixed(&[batch, widths[0] as i64]));
    let h = b.dense_stack(&h, widths);
    let layers = widths.len() - 1;
    b.g.node_to("Identity", &[&h], "logits", &[]);
    b.g.output("logits", Elem::F32, &fixed(&[batch, widths[layers] as i64]));
    b.g.build()
}

/// One pre-norm transformer block with causal self-attention:
/// `hidden [1, 16, 64]` → `output [1, 16, 64]`, 4 heads of 16, MLP of 256 with GELU.
pub fn block(precision: Precision) -> ModelProto {
    const T: i64 = 16;
    const D: usize = 64;
    const H: i64 = 4;
    const HD: i64 = 16;
    let mut b = Builder::new("block", 0x5eed_0002, precision);
    let x = b.g.input("hidden", Elem::F32, &fixed(&[1, T, D as i64]));

    let ln1 = b.layer_norm(&x, "ln1", D);
    let heads = b.g.i64s("heads_shape", &[4], &[1, T, H, HD]);
    let merged = b.g.i64s("merged_shape", &[3], &[1, T, D as i64]);
    let split = |b: &mut Builder, name: &str| {
        let p = b.linear(&ln1, name, D, D);
        let p = b.g.node("Reshape", &[&p, &heads], &[]);
        b.g.node("Transpose", &[&p], &[Attr::Ints("perm", vec![0, 2, 1, 3])])
    };
    let q = split(&mut b, "q");
    let k = split(&mut b, "k");
    let v = split(&mut b, "v");
    let kt = b.g.node("Transpose", &[&k], &[Attr::Ints("perm", vec![0, 1, 3, 2])]);
    let scores = b.g.node("MatMul", &[&q, &kt], &[]);
    let scale = b.g.f32s("attn_scale", &[], &[1.0 / (HD as f32).sqrt()]);
    let scores = b.g.node("Mul", &[&scores, &scale], &[]);
    let causal: Vec<f32> = (0..T).flat_map(|i| (0..T).map(move |j| if j > i { -1e9 } else { 0.0 })).collect();
    let mask = b.g.f32s("causal_mask", &[T, T], &causal);
    let scores = b.g.node("Add", &[&scores, &mask], &[]);
    let probs = b.g.node("Softmax", &[&scores], &[Attr::Int("axis", -1)]);
    let ctx = b.g.node("MatMul", &[&probs, &v], &[]);
    let ctx = b.g.node("Transpose", &[&ctx], &[Attr::Ints("perm", vec![0, 2, 1, 3])]);
    let ctx = b.g.node("Reshape", &[&ctx, &merged], &[]);
    let attn = b.linear(&ctx, "o", D, D);
    let h = b.g.node("Add", &[&x, &attn], &[]);

    let ln2 = b.layer_norm(&h, "ln2", D);
    let up = b.linear(&ln2, "up", D, 4 * D);
    // GELU as 0.5·x·(1 + erf(x/√2)): Gelu itself is only in opset 20.
    let inv_sqrt2 = b.g.f32s("inv_sqrt2", &[], &[std::f32::consts::FRAC_1_SQRT_2]);
    let one = b.g.f32s("one", &[], &[1.0]);
    let half = b.g.f32s("half", &[], &[0.5]);
    let t = b.g.node("Mul", &[&up, &inv_sqrt2], &[]);
    let t = b.g.node("Erf", &[&t], &[]);
    let t = b.g.node("Add", &[&t, &one], &[]);
    let t = b.g.node("Mul", &[&up, &t], &[]);
    let act = b.g.node("Mul", &[&t, &half], &[]);
    let down = b.linear(&act, "down", 4 * D, D);
    b.g.node_to("Add", &[&h, &down], "output", &[]);
    b.g.output("output", Elem::F32, &fixed(&[1, T, D as i64]));
    b.g.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let w = [0.5, -2.0, 0.25, 1.0, -0.5, 0.0];
        let (q, s) = quantize_per_column(&w, 2, 3);
        assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0, 0.25 / 127.0]);
        for (i, v) in w.iter().enumerate() {
            assert!((f32::from(q[i]) * s[i % 3] - v).abs() <= s[i % 3] / 2.0 + 1e-7);
        }
    }

    #[test]
    fn committed_fixtures_are_what_the_builder_makes() {
        use prost::Message;
        for (name, model) in all() {
            let committed =
                std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}; run make-fixtures"));
            assert!(
                committed == model.encode_to_vec(),
                "{name} differs from the builder's output: run `cargo run -p edgehil-onnx --bin make-fixtures`"
            );
        }
    }
}
