//! The fixture models: an MLP classifier and one pre-norm transformer block,
//! each in fp32 and in int8 (per-channel symmetric weights, dequantized
//! before MatMul as the export format prescribes). Weights come from a fixed
//! seed, so `make-fixtures` rewrites the committed files byte for byte.

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
    let scales: Vec<f32> = (0..n)
        .map(|j| {
            let max = (0..k).map(|i| w[i * n + j].abs()).fold(0f32, f32::max);
            if max == 0.0 {
                1.0
            } else {
                max / 127.0
            }
        })
        .collect();
    let q = w.iter().enumerate().map(|(idx, v)| (v / scales[idx % n]).round().clamp(-127.0, 127.0) as i8).collect();
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
        let dims = [k as i64, n as i64];
        let weight = match self.precision {
            Precision::F32 => self.g.f32s(&format!("{name}.weight"), &dims, &w),
            Precision::Int8 => {
                let (q, scales) = quantize_per_column(&w, k, n);
                let q = self.g.i8s(&format!("{name}.weight_q"), &dims, &q);
                let s = self.g.f32s(&format!("{name}.weight_scale"), &[n as i64], &scales);
                self.g.node("DequantizeLinear", &[&q, &s], &[Attr::Int("axis", 1)])
            }
        };
        let bias = self.g.f32s(&format!("{name}.bias"), &[n as i64], &b);
        let y = self.g.node("MatMul", &[x, &weight], &[]);
        self.g.node("Add", &[&y, &bias], &[])
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

/// MLP classifier: `input [4, 64]` → 128 → 64 → `logits [4, 10]`, ReLU between.
pub fn mlp(precision: Precision) -> ModelProto {
    mlp_sized("mlp", 4, &[64, 128, 64, 10], precision)
}

/// An MLP of any size: `input [batch, widths[0]]` → … → `logits [batch, last]`,
/// for benchmarks and memory tests that need a model of a given weight.
pub fn mlp_sized(name: &str, batch: i64, widths: &[usize], precision: Precision) -> ModelProto {
    let mut b = Builder::new(name, 0x5eed_0001, precision);
    let mut h = b.g.input("input", Elem::F32, &fixed(&[batch, widths[0] as i64]));
    let layers = widths.len() - 1;
    for (i, pair) in widths.windows(2).enumerate() {
        h = b.linear(&h, &format!("fc{}", i + 1), pair[0], pair[1]);
        if i + 1 < layers {
            h = b.g.node("Relu", &[&h], &[]);
        }
    }
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
