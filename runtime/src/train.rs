//! One LoRA training step on the board, measured under the agent's cap: a
//! Llama-family model (fp32 Hugging Face folder) with LoRA adapters A and B on
//! q, k and v of every layer, the frozen base's forward pass, the backward
//! pass through it into A and B, and an AdamW update: the study's setting
//! (lr 5e-4, batch 1), without LoRA dropout (it only masks A's input).
//!
//! The graph is written out by hand rather than taken from a training
//! framework: ONNX Runtime's wheel here has no training module, and an
//! autodiff crate would add a large build to the agent of every board image
//! for a few hundred lines of arithmetic. The finite-difference test checks
//! the backward pass, and the forward pass matches transformers' logits.

use std::format;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::time::Instant;
use std::vec;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::generate::Rng;

/// Uniform in [-1, 1).
fn symmetric(rng: &mut Rng) -> f32 {
    (2.0 * rng.unit() - 1.0) as f32
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("{0}")]
    Setting(String),
}

/// A Llama configuration's sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub rope_theta: f32,
    pub eps: f32,
}

/// One decoder layer's frozen weights, `[out, in]` as PyTorch keeps them.
struct Layer {
    input_norm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    post_norm: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

/// The frozen base model.
pub struct Base {
    pub shape: Shape,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// None: tied to the embeddings.
    lm_head: Option<Vec<f32>>,
}

/// A (rank × in) and B (out × rank) of one projection; gradients have the same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// Adapters on q, k and v of every layer; the update is scaled by alpha / rank.
#[derive(Debug, Clone, PartialEq)]
pub struct Lora {
    pub rank: usize,
    pub scale: f32,
    pub adapters: Vec<[Adapter; 3]>,
}

impl Lora {
    /// PEFT's initialisation: A uniform as Kaiming's (a = √5), B zero.
    pub fn new(shape: &Shape, rank: usize, alpha: f32, rng: &mut Rng) -> Self {
        let d = shape.hidden;
        let bound = 1.0 / (d as f32).sqrt();
        let adapters = (0..shape.layers)
            .map(|_| {
                shape.qkv_out().map(|out| Adapter {
                    a: (0..rank * d).map(|_| bound * symmetric(rng)).collect(),
                    b: vec![0.0; out * rank],
                })
            })
            .collect();
        Lora { rank, scale: alpha / rank as f32, adapters }
    }

    pub fn trainable(&self) -> usize {
        self.adapters.iter().flatten().map(|ad| ad.a.len() + ad.b.len()).sum()
    }

    fn zeros_like(&self) -> Vec<[Adapter; 3]> {
        self.adapters
            .iter()
            .map(|l| l.clone().map(|ad| Adapter { a: vec![0.0; ad.a.len()], b: vec![0.0; ad.b.len()] }))
            .collect()
    }
}

impl Shape {
    fn qkv_out(&self) -> [usize; 3] {
        let kv = self.kv_heads * self.head_dim;
        [self.heads * self.head_dim, kv, kv]
    }
}

/// y (n × m) = x (n × k) · wᵀ, w being m × k: a linear layer.
fn linear(x: &[f32], w: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut y = vec![0.0; n * m];
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(m)) {
        for (wr, yv) in w.chunks_exact(k).zip(yr.iter_mut()) {
            *yv = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
        }
    }
    debug_assert_eq!(y.len(), n * m);
    y
}

/// dx (n × k) += dy (n × m) · w, w being m × k: a linear layer's input gradient.
fn linear_back(dy: &[f32], w: &[f32], dx: &mut [f32], k: usize, m: usize) {
    for (dyr, dxr) in dy.chunks_exact(m).zip(dx.chunks_exact_mut(k)) {
        for (&g, wr) in dyr.iter().zip(w.chunks_exact(k)) {
            dxr.iter_mut().zip(wr).for_each(|(d, w)| *d += g * w);
        }
    }
}

/// out (p × q) += aᵀ · b, a being n × p and b n × q: a weight's gradient.
fn outer_sum(a: &[f32], b: &[f32], out: &mut [f32], p: usize, q: usize) {
    for (ar, br) in a.chunks_exact(p).zip(b.chunks_exact(q)) {
        for (&av, or) in ar.iter().zip(out.chunks_exact_mut(q)) {
            or.iter_mut().zip(br).for_each(|(o, b)| *o += av * b);
        }
    }
}

/// RMSNorm of each row, with the rows' 1/rms kept for the backward pass.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut y = vec![0.0; x.len()];
    let mut inv = Vec::with_capacity(x.len() / d);
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let r = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
        yr.iter_mut().zip(xr).zip(w).for_each(|((y, x), w)| *y = x * r * w);
        inv.push(r);
    }
    (y, inv)
}

/// dx += RMSNorm's input gradient: r·g − x·r³·mean(g·x), g = dy·w.
fn rms_norm_back(dy: &[f32], x: &[f32], w: &[f32], inv: &[f32], dx: &mut [f32]) {
    let d = w.len();
    for (((dyr, xr), dxr), &r) in dy.chunks_exact(d).zip(x.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).zip(inv) {
        let gx: f32 = dyr.iter().zip(w).zip(xr).map(|((g, w), x)| g * w * x).sum::<f32>() / d as f32;
        for ((dx, (g, w)), x) in dxr.iter_mut().zip(dyr.iter().zip(w)).zip(xr) {
            *dx += r * g * w - x * r * r * r * gx;
        }
    }
}

/// Rotary embedding (rotate-half, as transformers' Llama), in place on rows
/// of `heads` heads; `sign` −1 applies its transpose, for the backward pass.
fn rope(x: &mut [f32], heads: usize, head_dim: usize, theta: f32, sign: f32) {
    let half = head_dim / 2;
    for (pos, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let angle = pos as f32 * theta.powf(-2.0 * i as f32 / head_dim as f32);
                let (s, c) = (sign * angle.sin(), angle.cos());
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// What one layer's forward pass keeps for the backward pass. The inputs of
/// the frozen projections (o, gate, up, down) are not kept: only their input
/// gradients are needed, and those take the weights, not the inputs.
struct Saved {
    x: Vec<f32>,
    h: Vec<f32>,
    inv1: Vec<f32>,
    /// h · Aᵀ of q, k and v.
    u: [Vec<f32>; 3],
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention probabilities, head × query × key.
    probs: Vec<f32>,
    mid: Vec<f32>,
    inv2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Base {
    fn lm_head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    fn layer_forward(&self, l: &Layer, ad: &[Adapter; 3], scale: f32, x: Vec<f32>, t: usize) -> (Vec<f32>, Saved) {
        let s = &self.shape;
        let (d, hd, rank) = (s.hidden, s.head_dim, ad[0].a.len() / s.hidden);
        let (h, inv1) = rms_norm(&x, &l.input_norm, s.eps);
        let outs = s.qkv_out();
        let mut u: [Vec<f32>; 3] = Default::default();
        let mut proj: [Vec<f32>; 3] = Default::default();
        for (i, w) in [&l.q, &l.k, &l.v].into_iter().enumerate() {
            let mut y = linear(&h, w, t, d, outs[i]);
            u[i] = linear(&h, &ad[i].a, t, d, rank);
            let lora = linear(&u[i], &ad[i].b, t, rank, outs[i]);
            y.iter_mut().zip(lora).for_each(|(y, l)| *y += scale * l);
            proj[i] = y;
        }
        let [mut q, mut k, v] = proj;
        rope(&mut q, s.heads, hd, s.rope_theta, 1.0);
        rope(&mut k, s.kv_heads, hd, s.rope_theta, 1.0);
        let group = s.heads / s.kv_heads;
        let norm = 1.0 / (hd as f32).sqrt();
        let mut probs = vec![0.0; s.heads * t * t];
        let mut attn = vec![0.0; t * s.heads * hd];
        for head in 0..s.heads {
            let g = head / group;
            for i in 0..t {
                let qi = &q[(i * s.heads + head) * hd..][..hd];
                let p = &mut probs[(head * t + i) * t..][..t];
                for j in 0..=i {
                    let kj = &k[(j * s.kv_heads + g) * hd..][..hd];
                    p[j] = norm * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>();
                }
                let max = p[..=i].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                p[..=i].iter_mut().for_each(|v| *v = (*v - max).exp());
                let sum: f32 = p[..=i].iter().sum();
                p[..=i].iter_mut().for_each(|v| *v /= sum);
                let out = &mut attn[(i * s.heads + head) * hd..][..hd];
                for (j, &pj) in p[..=i].iter().enumerate() {
                    let vj = &v[(j * s.kv_heads + g) * hd..][..hd];
                    out.iter_mut().zip(vj).for_each(|(o, v)| *o += pj * v);
                }
            }
        }
        let mut mid = linear(&attn, &l.o, t, s.heads * hd, d);
        mid.iter_mut().zip(&x).for_each(|(m, x)| *m += x);
        let (h2, inv2) = rms_norm(&mid, &l.post_norm, s.eps);
        let gate = linear(&h2, &l.gate, t, d, s.intermediate);
        let up = linear(&h2, &l.up, t, d, s.intermediate);
        let act: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| g * sigmoid(*g) * u).collect();
        let mut out = linear(&act, &l.down, t, s.intermediate, d);
        out.iter_mut().zip(&mid).for_each(|(o, m)| *o += m);
        (out, Saved { x, h, inv1, u, q, k, v, probs, mid, inv2, gate, up })
    }

    /// Given the gradient of the layer's output, adds A's and B's gradients to
    /// `grads` and returns the gradient of its input.
    fn layer_backward(
        &self,
        l: &Layer,
        ad: &[Adapter; 3],
        scale: f32,
        sv: &Saved,
        dout: Vec<f32>,
        grads: &mut [Adapter; 3],
    ) -> Vec<f32> {
        let s = &self.shape;
        let (d, hd, inter) = (s.hidden, s.head_dim, s.intermediate);
        let (t, rank) = (sv.x.len() / d, ad[0].a.len() / d);
        // MLP: out = mid + down(silu(gate) · up).
        let mut dact = vec![0.0; t * inter];
        linear_back(&dout, &l.down, &mut dact, inter, d);
        let (mut dgate, mut dup) = (vec![0.0; t * inter], vec![0.0; t * inter]);
        for i in 0..t * inter {
            let (g, sg) = (sv.gate[i], sigmoid(sv.gate[i]));
            dup[i] = dact[i] * g * sg;
            dgate[i] = dact[i] * sv.up[i] * sg * (1.0 + g * (1.0 - sg));
        }
        drop(dact);
        let mut dh2 = vec![0.0; t * d];
        linear_back(&dgate, &l.gate, &mut dh2, d, inter);
        linear_back(&dup, &l.up, &mut dh2, d, inter);
        drop((dgate, dup));
        let mut dmid = dout;
        rms_norm_back(&dh2, &sv.mid, &l.post_norm, &sv.inv2, &mut dmid);
        drop(dh2);
        // Attention: mid = x + o(attn).
        let mut dattn = vec![0.0; t * s.heads * hd];
        linear_back(&dmid, &l.o, &mut dattn, s.heads * hd, d);
        let (mut dq, mut dk, mut dv) =
            (vec![0.0; t * s.heads * hd], vec![0.0; t * s.kv_heads * hd], vec![0.0; t * s.kv_heads * hd]);
        let group = s.heads / s.kv_heads;
        let norm = 1.0 / (hd as f32).sqrt();
        let mut dp = vec![0.0; t];
        for head in 0..s.heads {
            let g = head / group;
            for i in 0..t {
                let p = &sv.probs[(head * t + i) * t..][..t];
                let dout_i = &dattn[(i * s.heads + head) * hd..][..hd];
                for j in 0..=i {
                    let vj = &sv.v[(j * s.kv_heads + g) * hd..][..hd];
                    dp[j] = dout_i.iter().zip(vj).map(|(a, b)| a * b).sum();
                    dv[(j * s.kv_heads + g) * hd..][..hd].iter_mut().zip(dout_i).for_each(|(dv, o)| *dv += p[j] * o);
                }
                let dot: f32 = (0..=i).map(|j| p[j] * dp[j]).sum();
                for j in 0..=i {
                    let ds = p[j] * (dp[j] - dot) * norm;
                    let (qi, kj) = ((i * s.heads + head) * hd, (j * s.kv_heads + g) * hd);
                    for e in 0..hd {
                        dq[qi + e] += ds * sv.k[kj + e];
                        dk[kj + e] += ds * sv.q[qi + e];
                    }
                }
            }
        }
        drop(dattn);
        rope(&mut dq, s.heads, hd, s.rope_theta, -1.0);
        rope(&mut dk, s.kv_heads, hd, s.rope_theta, -1.0);
        // q, k, v = h·Wᵀ + scale · (h·Aᵀ)·Bᵀ.
        let mut dh = vec![0.0; t * d];
        let outs = s.qkv_out();
        for (i, (dy, w)) in [(dq, &l.q), (dk, &l.k), (dv, &l.v)].into_iter().enumerate() {
            linear_back(&dy, w, &mut dh, d, outs[i]);
            let scaled: Vec<f32> = dy.iter().map(|g| scale * g).collect();
            outer_sum(&scaled, &sv.u[i], &mut grads[i].b, outs[i], rank);
            let mut du = vec![0.0; t * rank];
            linear_back(&scaled, &ad[i].b, &mut du, rank, outs[i]);
            outer_sum(&du, &sv.h, &mut grads[i].a, rank, d);
            linear_back(&du, &ad[i].a, &mut dh, d, rank);
        }
        let mut dx = dmid;
        rms_norm_back(&dh, &sv.x, &l.input_norm, &sv.inv1, &mut dx);
        dx
    }

    /// Logits (tokens × vocabulary) of `ids` with the adapters applied.
    pub fn logits(&self, lora: &Lora, ids: &[u32]) -> Vec<f32> {
        let t = ids.len();
        let mut x = self.embed_ids(ids);
        for (l, ad) in self.layers.iter().zip(&lora.adapters) {
            x = self.layer_forward(l, ad, lora.scale, x, t).0;
        }
        let (xn, _) = rms_norm(&x, &self.norm, self.shape.eps);
        linear(&xn, self.lm_head(), t, self.shape.hidden, self.shape.vocab)
    }

    fn embed_ids(&self, ids: &[u32]) -> Vec<f32> {
        let d = self.shape.hidden;
        ids.iter().flat_map(|&i| self.embed[i as usize * d..][..d].iter().copied()).collect()
    }

    /// The mean next-token cross-entropy over `ids`, and its gradient with
    /// respect to every adapter's A and B.
    pub fn loss_and_grads(&self, lora: &Lora, ids: &[u32]) -> (f32, Vec<[Adapter; 3]>) {
        let (t, d, vocab) = (ids.len(), self.shape.hidden, self.shape.vocab);
        let mut x = self.embed_ids(ids);
        let mut saved = Vec::with_capacity(self.layers.len());
        for (l, ad) in self.layers.iter().zip(&lora.adapters) {
            let (out, sv) = self.layer_forward(l, ad, lora.scale, x, t);
            saved.push(sv);
            x = out;
        }
        let (xn, inv) = rms_norm(&x, &self.norm, self.shape.eps);
        let mut dlogits = linear(&xn, self.lm_head(), t, d, vocab);
        // Softmax minus the one-hot target, over the t − 1 positions with a next token.
        let n = (t - 1) as f32;
        let mut loss = 0.0;
        for (pos, row) in dlogits.chunks_exact_mut(vocab).enumerate() {
            let Some(&target) = ids.get(pos + 1) else {
                row.fill(0.0);
                continue;
            };
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = (*v - max).exp());
            let sum: f32 = row.iter().sum();
            loss -= (row[target as usize] / sum).ln() / n;
            row.iter_mut().for_each(|v| *v /= sum * n);
            row[target as usize] -= 1.0 / n;
        }
        let mut dxn = vec![0.0; t * d];
        linear_back(&dlogits, self.lm_head(), &mut dxn, d, vocab);
        drop(dlogits);
        let mut dx = vec![0.0; t * d];
        rms_norm_back(&dxn, &x, &self.norm, &inv, &mut dx);
        drop((dxn, x));
        let mut grads = lora.zeros_like();
        for (((l, ad), sv), g) in self.layers.iter().zip(&lora.adapters).zip(&saved).zip(&mut grads).rev() {
            dx = self.layer_backward(l, ad, lora.scale, sv, dx, g);
        }
        (loss, grads)
    }
}

/// AdamW as PyTorch's (decoupled weight decay), with its first and second moments.
pub struct AdamW {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    step: i32,
    moments: Vec<[(Adapter, Adapter); 3]>,
}

impl AdamW {
    /// The study's learning rate 5e-4, with PyTorch's other defaults.
    pub fn study(lora: &Lora) -> Self {
        let zeros = lora.zeros_like();
        AdamW {
            lr: 5e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            step: 0,
            moments: zeros.into_iter().map(|l| l.map(|z| (z.clone(), z))).collect(),
        }
    }

    pub fn update(&mut self, lora: &mut Lora, grads: &[[Adapter; 3]]) {
        self.step += 1;
        let (b1, b2) = self.betas;
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        let params = lora.adapters.iter_mut().flatten().flat_map(|ad| [&mut ad.a, &mut ad.b]);
        let grads = grads.iter().flatten().flat_map(|ad| [&ad.a, &ad.b]);
        let moments = self.moments.iter_mut().flatten().flat_map(|(m, v)| [(&mut m.a, &mut v.a), (&mut m.b, &mut v.b)]);
        for ((p, g), (m, v)) in params.zip(grads).zip(moments) {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                p[i] -= self.lr * self.weight_decay * p[i];
                p[i] -= self.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + self.eps);
            }
        }
    }
}

/// What `edgehil-agent --train-step` measures and prints (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub rank: usize,
    pub tokens: usize,
    pub steps: usize,
    pub trainable: usize,
    /// Heap in use once the base is loaded (its fp32 weights).
    pub base_bytes: u64,
    /// Heap peak over the training steps: base, adapters, gradients, AdamW's
    /// moments and the activations kept for the backward pass.
    pub peak_heap: u64,
    /// The median step's wall time.
    pub step_seconds: f64,
    /// Loss before each step: it falls as the adapters learn the sample.
    pub losses: Vec<f32>,
}

fn model_error(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Model { path: path.to_path_buf(), reason: reason.into() }
}

impl Base {
    /// Reads a Llama-family Hugging Face folder (`config.json`, fp32 `model.safetensors`).
    pub fn load(dir: &Path) -> Result<Base, TrainError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| model_error(&config_path, e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| model_error(&config_path, e.to_string()))?;
        if json["model_type"] != "llama" {
            return Err(model_error(
                &config_path,
                format!("model_type {}: the training step takes Llama-family models", json["model_type"]),
            ));
        }
        let size = |key: &str| {
            json[key]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| model_error(&config_path, format!("field `{key}` is missing or not a whole number")))
        };
        let (hidden, heads) = (size("hidden_size")?, size("num_attention_heads")?);
        let kv_heads = json["num_key_value_heads"].as_u64().map_or(heads, |v| v as usize);
        let head_dim = json["head_dim"].as_u64().map_or(hidden / heads.max(1), |v| v as usize);
        let rope_theta = json["rope_parameters"]["rope_theta"].as_f64().or(json["rope_theta"].as_f64()).unwrap_or(1e4);
        let shape = Shape {
            hidden,
            layers: size("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            intermediate: size("intermediate_size")?,
            vocab: size("vocab_size")?,
            max_positions: size("max_position_embeddings")?,
            rope_theta: rope_theta as f32,
            eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
        };
        if kv_heads == 0 || heads % kv_heads != 0 || head_dim % 2 == 1 {
            return Err(model_error(
                &config_path,
                format!("{heads} heads over {kv_heads} KV heads of {head_dim} dimensions: expected whole groups of even heads"),
            ));
        }
        let weights_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|e| model_error(&weights_path, e.to_string()))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| model_error(&weights_path, e.to_string()))?;
        let tensor = |name: &str, len: usize| -> Result<Vec<f32>, TrainError> {
            let view = st.tensor(name).map_err(|e| model_error(&weights_path, format!("tensor `{name}`: {e}")))?;
            if view.dtype() != safetensors::Dtype::F32 || view.data().len() != 4 * len {
                return Err(model_error(
                    &weights_path,
                    format!("tensor `{name}` is {:?} {:?}: expected {len} F32 values", view.dtype(), view.shape()),
                ));
            }
            Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        let (d, [q_out, kv_out, _], inter) = (hidden, shape.qkv_out(), shape.intermediate);
        let layers = (0..shape.layers)
            .map(|i| {
                let w = |part: &str, len| tensor(&format!("model.layers.{i}.{part}.weight"), len);
                Ok(Layer {
                    input_norm: w("input_layernorm", d)?,
                    q: w("self_attn.q_proj", q_out * d)?,
                    k: w("self_attn.k_proj", kv_out * d)?,
                    v: w("self_attn.v_proj", kv_out * d)?,
                    o: w("self_attn.o_proj", d * q_out)?,
                    post_norm: w("post_attention_layernorm", d)?,
                    gate: w("mlp.gate_proj", inter * d)?,
                    up: w("mlp.up_proj", inter * d)?,
                    down: w("mlp.down_proj", d * inter)?,
                })
            })
            .collect::<Result<_, TrainError>>()?;
        let tied = json["tie_word_embeddings"].as_bool().unwrap_or(false);
        Ok(Base {
            embed: tensor("model.embed_tokens.weight", shape.vocab * d)?,
            layers,
            norm: tensor("model.norm.weight", d)?,
            lm_head: if tied { None } else { Some(tensor("lm_head.weight", shape.vocab * d)?) },
            shape,
        })
    }
}

/// Loads the model in `dir` and runs `steps` training steps of LoRA rank
/// `rank` (alpha 2 · rank) on one seeded sample of `tokens` tokens, with
/// the heap measured by `heap`: (in use, peak) and a peak reset.
pub fn measure(
    dir: &Path,
    rank: usize,
    tokens: usize,
    steps: usize,
    heap: &dyn Fn() -> (u64, u64),
    reset_peak: &dyn Fn(),
) -> Result<StepReport, TrainError> {
    let base = Base::load(dir)?;
    let s = base.shape;
    if !(2..=s.max_positions).contains(&tokens) || rank == 0 || steps == 0 {
        return Err(TrainError::Setting(format!(
            "{tokens} tokens, rank {rank}, {steps} steps: expected 2 to {} tokens (the model's positions), a rank and a step",
            s.max_positions
        )));
    }
    let base_bytes = heap().0;
    let mut rng = Rng::new(0);
    let ids: Vec<u32> = (0..tokens).map(|_| (rng.next_u64() % s.vocab as u64) as u32).collect();
    reset_peak();
    let mut lora = Lora::new(&s, rank, 2.0 * rank as f32, &mut rng);
    let mut adam = AdamW::study(&lora);
    let (mut times, mut losses) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for _ in 0..steps {
        let clock = Instant::now();
        let (loss, grads) = base.loss_and_grads(&lora, &ids);
        adam.update(&mut lora, &grads);
        drop(grads);
        times.push(clock.elapsed().as_secs_f64());
        losses.push(loss);
    }
    times.sort_by(f64::total_cmp);
    Ok(StepReport {
        rank,
        tokens,
        steps,
        trainable: lora.trainable(),
        base_bytes,
        peak_heap: heap().1,
        step_seconds: times[times.len() / 2],
        losses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../onnx-models/reference").join(name)
    }

    /// Adapters with B random too, so that every gradient is non-zero.
    fn random_lora(shape: &Shape, rank: usize) -> Lora {
        let mut rng = Rng::new(3);
        let mut lora = Lora::new(shape, rank, 2.0 * rank as f32, &mut rng);
        lora.adapters.iter_mut().flatten().for_each(|ad| ad.b.iter_mut().for_each(|b| *b = 0.2 * symmetric(&mut rng)));
        lora
    }

    #[test]
    fn the_forward_pass_gives_transformers_logits() {
        let base = Base::load(&reference("llama-gqa")).unwrap();
        let bytes = std::fs::read(reference("llama-gqa/reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ids: Vec<u32> = st
            .tensor("input_ids")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        let want: Vec<f32> = st
            .tensor("logits")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        // B is zero at the start: the adapters change nothing.
        let lora = Lora::new(&base.shape, 4, 8.0, &mut Rng::new(1));
        let got = base.logits(&lora, &ids);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-4, "largest logit difference {worst}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let base = Base::load(&reference("llama-gqa")).unwrap();
        let lora = random_lora(&base.shape, 4);
        let ids: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 512).collect();
        let (loss, grads) = base.loss_and_grads(&lora, &ids);
        assert!((loss - lora_loss(&base, &lora, &ids)).abs() < 1e-5, "the same loss as the logits give");
        let h = 1e-2;
        let mut checked = 0;
        // The largest gradients of A and B in q, k, v of both layers, and some others.
        for (layer, layer_grads) in grads.iter().enumerate() {
            for (proj, grad) in layer_grads.iter().enumerate() {
                for b_side in [false, true] {
                    let g = if b_side { &grad.b } else { &grad.a };
                    let top = (0..g.len()).max_by(|&i, &j| g[i].abs().total_cmp(&g[j].abs())).unwrap();
                    for i in [top, g.len() / 3, g.len() - 1] {
                        let at = |delta: f32| {
                            let mut l = lora.clone();
                            let ad = &mut l.adapters[layer][proj];
                            (if b_side { &mut ad.b } else { &mut ad.a })[i] += delta;
                            lora_loss(&base, &l, &ids) as f64
                        };
                        let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
                        let analytic = g[i] as f64;
                        assert!(
                            (numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1e-3),
                            "layer {layer} proj {proj} {} [{i}]: analytic {analytic:e}, numeric {numeric:e}",
                            if b_side { "B" } else { "A" }
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 3 * 2 * 3);
    }

    /// The loss from the forward pass alone.
    fn lora_loss(base: &Base, lora: &Lora, ids: &[u32]) -> f32 {
        let v = base.shape.vocab;
        let logits = base.logits(lora, ids);
        let n = (ids.len() - 1) as f32;
        logits
            .chunks_exact(v)
            .zip(&ids[1..])
            .map(|(row, &target)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
                (sum.ln() + max - row[target as usize]) / n
            })
            .sum()
    }

    #[test]
    fn adamw_steps_lower_the_loss_of_the_sample() {
        let base = Base::load(&reference("llama-gqa")).unwrap();
        let mut lora = Lora::new(&base.shape, 8, 16.0, &mut Rng::new(0));
        let mut adam = AdamW::study(&lora);
        let ids: Vec<u32> = (0..16).map(|i| (i * 91 + 7) % 512).collect();
        let mut losses = Vec::new();
        for _ in 0..20 {
            let (loss, grads) = base.loss_and_grads(&lora, &ids);
            adam.update(&mut lora, &grads);
            losses.push(loss);
        }
        // Only A and B move; 20 steps at lr 5e-4 fit the one sample a little.
        assert!(losses[19] < losses[0] - 0.05, "{losses:?}");
        assert_eq!(lora.trainable(), 2 * 8 * ((64 + 64) + 2 * (64 + 32)));
    }
}
