//! Decoder-only language models (the decoder families of [`crate::arch`]) with a KV cache.
//!
//! Every family is read into one layer shape (norms, q/k/v/o, MLP) and
//! built by one graph: fused QKV weights are split at export, so the graph
//! differs only where the models really differ (norm kind, positions,
//! residual wiring, activation). The cache is `Concat(past, new, axis=2)`,
//! the form tract recognises. Masking comes from `attention_mask` and
//! `position_ids` alone (key positions are the running count of the mask),
//! so prefill, decoding and left-padded batches are one graph.

use super::emit::{Emitter, Lin, Mat};
use super::prune::{self, Prune};
use super::{spec, Built, ExportError, Source};
use crate::arch::Decoder;
use crate::graph::{Attr, Dim, Elem};
use crate::hf::{Act, Config};
use crate::rng::SplitMix64;
use crate::split::{adapter_seed, lst_seed, End, Part, Piece, Start, HIDDEN, HIDDEN_OUT, LADDER, LADDER_OUT};

pub(crate) struct Norm {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
}

impl Norm {
    /// Gemma's RMSNorm scales by `1 + weight`: the same norm with 1 added to the weights.
    pub(crate) fn plus_one(mut self) -> Self {
        self.w.iter_mut().for_each(|w| *w += 1.0);
        self
    }
}

/// One decoder layer, as every family is read into it ([`Decoder::read_layer`]).
pub(crate) struct Layer {
    pub ln1: Norm,
    /// `None`: the MLP reads ln1's output too (Phi's parallel block, one norm for both).
    pub ln2: Option<Norm>,
    pub q: Lin,
    pub k: Lin,
    pub v: Lin,
    pub o: Lin,
    pub up: Lin,
    /// The gate of a gated MLP (Llama's SwiGLU).
    pub gate: Option<Lin>,
    pub down: Lin,
}

/// Splits a fused projection into parts by rows.
pub(crate) fn split(lin: Lin, parts: &[Vec<usize>]) -> Vec<Lin> {
    parts
        .iter()
        .map(|rows| Lin {
            w: lin.w.select_rows(rows),
            b: lin.b.as_ref().map(|b| rows.iter().map(|r| b[*r]).collect()),
            packed: lin.packed.as_ref().map(|p| p.select_rows(rows)),
        })
        .collect()
}

pub(crate) fn norm(src: &mut Source, name: &str, bias: bool) -> Result<Norm, ExportError> {
    Ok(Norm {
        w: src.vector(&format!("{name}.weight"))?,
        b: if bias { Some(src.vector(&format!("{name}.bias"))?) } else { None },
    })
}

/// Attention's head counts: query heads, key/value heads (fewer under
/// grouped-query attention) and the size of each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub query: u64,
    pub kv: u64,
    pub dim: u64,
}

impl Emitter {
    pub(crate) fn shape_op(&mut self, op: &str, x: &str, values: &[i64]) -> String {
        let v = self.ints(values);
        self.op(op, &[x, &v])
    }

    pub(crate) fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.g.node("Transpose", &[x], &[Attr::Ints("perm", perm.to_vec())])
    }

    pub(crate) fn slice(&mut self, x: &str, start: i64, end: i64, axis: i64) -> String {
        let (s, e, a) = (self.ints(&[start]), self.ints(&[end]), self.ints(&[axis]));
        self.op("Slice", &[x, &s, &e, &a])
    }

    pub(crate) fn norm(&mut self, x: &str, name: &str, n: &Norm, eps: f64) -> Result<String, ExportError> {
        let d = n.w.len() as i64;
        self.written.parameters += (n.w.len() + n.b.as_ref().map_or(0, Vec::len)) as u64;
        let w = self.f32s(&format!("{name}.weight"), &[d], &n.w)?;
        match &n.b {
            Some(b) => {
                let b = self.f32s(&format!("{name}.bias"), &[d], b)?;
                let attrs = [Attr::Int("axis", -1), Attr::Float("epsilon", eps as f32)];
                Ok(self.g.node("LayerNormalization", &[x, &w, &b], &attrs))
            }
            None => {
                // RMSNorm: x / sqrt(mean(x²) + eps) · w
                let sq = self.op("Mul", &[x, x]);
                let mean = self.g.node("ReduceMean", &[&sq], &[Attr::Ints("axes", vec![-1]), Attr::Int("keepdims", 1)]);
                let eps = self.scalar(eps as f32);
                let var = self.op("Add", &[&mean, &eps]);
                let rms = self.op("Sqrt", &[&var]);
                let y = self.op("Div", &[x, &rms]);
                Ok(self.op("Mul", &[&y, &w]))
            }
        }
    }

    pub(crate) fn activation(&mut self, x: &str, act: Act) -> String {
        match act {
            Act::Relu => self.op("Relu", &[x]),
            Act::Silu => {
                let s = self.op("Sigmoid", &[x]);
                self.op("Mul", &[x, &s])
            }
            // 0.5·x·(1 + erf(x/√2)); Gelu itself is only in opset 20.
            Act::Gelu => {
                let c = self.scalar(std::f32::consts::FRAC_1_SQRT_2);
                let t = self.op("Mul", &[x, &c]);
                let t = self.op("Erf", &[&t]);
                self.half_x_one_plus(x, &t)
            }
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            Act::GeluNew => {
                let x3 = self.op("Mul", &[x, x]);
                let x3 = self.op("Mul", &[&x3, x]);
                let k = self.scalar(0.044715);
                let t = self.op("Mul", &[&x3, &k]);
                let t = self.op("Add", &[x, &t]);
                let c = self.scalar((2.0 / std::f32::consts::PI).sqrt());
                let t = self.op("Mul", &[&t, &c]);
                let t = self.op("Tanh", &[&t]);
                self.half_x_one_plus(x, &t)
            }
        }
    }

    fn half_x_one_plus(&mut self, x: &str, t: &str) -> String {
        let one = self.scalar(1.0);
        let half = self.scalar(0.5);
        let t = self.op("Add", &[t, &one]);
        let t = self.op("Mul", &[x, &t]);
        self.op("Mul", &[&t, &half])
    }

    /// `[batch, seq, heads·hd]` → `[batch, heads, seq, hd]`.
    pub(crate) fn heads(&mut self, x: &str, heads: u64, hd: u64) -> String {
        let x = self.shape_op("Reshape", x, &[0, 0, heads as i64, hd as i64]);
        self.transpose(&x, &[0, 2, 1, 3])
    }

    /// Scaled dot-product attention of `q [b, heads, t, hd]` over `k`, `v`
    /// `[b, kv_heads, s, hd]`, with an additive `bias [b, 1, 1, t, s]`.
    /// Query heads are grouped over their shared key/value head by a 5-D
    /// reshape and broadcasting, so the cache is never repeated in memory.
    /// Returns `[b, t, heads·hd]`.
    pub(crate) fn attention(&mut self, q: &str, k: &str, v: &str, bias: &str, heads: Heads) -> String {
        let Heads { query: heads, kv, dim: hd } = heads;
        let scale = self.scalar(1.0 / (hd as f32).sqrt());
        let q = self.op("Mul", &[q, &scale]);
        let q = self.shape_op("Reshape", &q, &[0, kv as i64, (heads / kv) as i64, -1, hd as i64]);
        let k = self.shape_op("Unsqueeze", k, &[2]);
        let kt = self.transpose(&k, &[0, 1, 2, 4, 3]);
        let scores = self.op("MatMul", &[&q, &kt]);
        let scores = self.op("Add", &[&scores, bias]);
        let probs = self.g.node("Softmax", &[&scores], &[Attr::Int("axis", -1)]);
        // The context comes out token-major from one Einsum: tract 0.23 mis-computes a
        // 4-bit MatMulNBits fed by Transpose → Reshape when the sequence is symbolic.
        let ctx = self.g.node("Einsum", &[&probs, v], &[Attr::Str("equation", "bkgts,bksd->btkgd")]);
        self.shape_op("Reshape", &ctx, &[0, 0, (heads * hd) as i64])
    }

    /// The additive attention bias: -1e9 where `blocked`, else 0.
    pub(crate) fn mask_bias(&mut self, blocked: &str) -> String {
        let neg = self.scalar(-1e9);
        let zero = self.scalar(0.0);
        self.op("Where", &[blocked, &neg, &zero])
    }
}

/// Rotary tables `[max_positions, rot]` as Hugging Face computes them in
/// fp32: cos, and sin with the first half negated, so that
/// `x·cos + swap_halves(x)·sin` is `x·cos + rotate_half(x)·sin`.
fn rope_tables(c: &Config) -> (Vec<f32>, Vec<f32>) {
    let rot = c.rotary_dims() as usize;
    let half = rot / 2;
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / (c.rope_theta as f32).powf((2 * i) as f32 / rot as f32)).collect();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..c.max_positions {
        for j in 0..rot {
            let angle = p as f32 * inv[j % half];
            cos.push(angle.cos());
            sin.push(if j < half { -angle.sin() } else { angle.sin() });
        }
    }
    (cos, sin)
}

struct Rope {
    cos: String,
    sin: String,
    rot: i64,
    hd: i64,
}

impl Rope {
    /// Rotates the first `rot` dimensions of `x [b, heads, t, hd]`.
    fn apply(&self, em: &mut Emitter, x: &str) -> String {
        let r = if self.rot < self.hd { em.slice(x, 0, self.rot, 3) } else { x.to_string() };
        let x1 = em.slice(&r, 0, self.rot / 2, 3);
        let x2 = em.slice(&r, self.rot / 2, self.rot, 3);
        let swapped = em.g.node("Concat", &[&x2, &x1], &[Attr::Int("axis", 3)]);
        let a = em.op("Mul", &[&r, &self.cos]);
        let b = em.op("Mul", &[&swapped, &self.sin]);
        let out = em.op("Add", &[&a, &b]);
        if self.rot < self.hd {
            let pass = em.slice(x, self.rot, self.hd, 3);
            em.g.node("Concat", &[&out, &pass], &[Attr::Int("axis", 3)])
        } else {
            out
        }
    }
}

/// A seeded linear layer `[out, inp]` (split modes' untrained weights: the
/// modes are about where a part runs, not what it learned).
fn seeded(seed: u64, out: u64, inp: u64) -> Lin {
    let mut rng = SplitMix64::new(seed);
    let (o, i) = (out as usize, inp as usize);
    Lin { w: Mat::new(o, i, rng.fill(o * i, 1.0 / (i as f32).sqrt())), b: None, packed: None }
}

/// `x + B·A·x`: layer `l`'s adapter of rank `rank`, its weights seeded.
fn adapter(em: &mut Emitter, x: &str, l: u64, hidden: u64, rank: u64) -> Result<String, ExportError> {
    let a = seeded(adapter_seed(l), rank, hidden);
    let b = seeded(adapter_seed(l) ^ 0xB, hidden, rank);
    let down = em.linear(x, &format!("adapters.{l}.a"), &a)?;
    let up = em.linear(&down, &format!("adapters.{l}.b"), &b)?;
    Ok(em.op("Add", &[x, &up]))
}

/// Ladder side tuning's side network over the taps (each `[b, t, width]`):
/// `s = relu(U₀·tap₀)`, then `s += relu(U_l·(s + tap_l))` per layer, and its
/// own head to the vocabulary; weights seeded.
fn side_network(em: &mut Emitter, taps: &[String], width: u64, vocab: u64) -> Result<String, ExportError> {
    let mut s: Option<String> = None;
    for (l, tap) in taps.iter().enumerate() {
        let block = seeded(lst_seed(l as u64) ^ 0x5, width, width);
        let input = match &s {
            Some(s) => em.op("Add", &[s, tap]),
            None => tap.clone(),
        };
        let h = em.linear(&input, &format!("side.{l}"), &block)?;
        let h = em.op("Relu", &[&h]);
        s = Some(match &s {
            Some(s) => em.op("Add", &[s, &h]),
            None => h,
        });
    }
    let head = seeded(lst_seed(taps.len() as u64), vocab, width);
    em.linear(&s.unwrap_or_default(), "side.head", &head)
}

pub(crate) fn build(
    family: &dyn Decoder,
    src: &mut Source,
    em: &mut Emitter,
    pruning: Option<&Prune>,
    part: Part,
) -> Result<Built, ExportError> {
    let c = src.config().clone();
    let hd = c.head_dim();
    let (b, t, p) = (Dim::Named("batch".into()), Dim::Named("sequence".into()), Dim::Named("past_sequence".into()));
    let total = Dim::Named("past_sequence + sequence".into());
    let width = part.reduction().map_or(0, |r| c.hidden / r);
    let io = |name: &'static str, features: u64| {
        let dims = [b.clone(), t.clone(), Dim::Fixed(features as i64)];
        (name, dims, spec(name, "float32", &["batch", "sequence", &features.to_string()]))
    };
    let first = match part.start() {
        Start::Ids => (
            em.g.input("input_ids", Elem::I64, &[b.clone(), t.clone()]),
            spec("input_ids", "int64", &["batch", "sequence"]),
        ),
        Start::Hidden | Start::Ladder => {
            let (name, dims, spec) =
                if part.start() == Start::Hidden { io(HIDDEN, c.hidden) } else { io(LADDER, c.layers * width) };
            (em.g.input(name, Elem::F32, &dims), spec)
        }
    };
    let mask = em.g.input("attention_mask", Elem::I64, &[b.clone(), total.clone()]);
    let pos = em.g.input("position_ids", Elem::I64, &[b.clone(), t.clone()]);
    let end = part.end(c.layers);
    let pieces = part.pieces(c.layers);
    let (out_name, out_dims, out_spec) = match end {
        End::Head | End::Side => io("logits", c.vocab),
        End::Hidden => io(HIDDEN_OUT, c.hidden),
        End::Ladder => io(LADDER_OUT, c.layers * width),
    };
    em.g.output(out_name, Elem::F32, &out_dims);
    let mut outputs = vec![out_spec];
    let mut inputs = vec![
        first.1,
        spec("attention_mask", "int64", &["batch", "past_sequence + sequence"]),
        spec("position_ids", "int64", &["batch", "sequence"]),
    ];

    let outer = family.outer(&c);
    let head_name = if c.tied_embeddings { None } else { outer.head };
    // OPT-350m's embeddings are narrower than the hidden size, projected in and out.
    let embed_dim = c.embed_dim.unwrap_or(c.hidden);
    let mut x = if part.embeds() {
        let table = src.mat(outer.embed, c.vocab, embed_dim)?;
        let mut x = em.embedding(&first.0, "embed_tokens", &table, true)?;
        drop(table);
        if outer.scale_embeddings {
            // Gemma: embeddings × √hidden.
            let scale = em.scalar((c.hidden as f32).sqrt());
            x = em.op("Mul", &[&x, &scale]);
        }
        if let Some((project_in, _)) = outer.projections.filter(|_| c.embed_dim.is_some()) {
            let lin = src.linear(project_in, c.hidden, embed_dim, false, false)?;
            x = em.linear(&x, "project_in", &lin)?;
        }
        x
    } else {
        first.0
    };
    if let Some((name, skip)) = outer.positions.filter(|_| part.embeds()) {
        let rows = c.max_positions + skip;
        let mut table = src.mat(name, rows, c.hidden)?;
        // Position 0 is row `skip` (OPT's learned positions start at row 2).
        table.data.drain(..(skip * c.hidden) as usize);
        table.rows = c.max_positions as usize;
        let positions = em.embedding(&pos, "embed_positions", &table, false)?;
        x = em.op("Add", &[&x, &positions]);
    }

    // Key positions are the running count of the mask: a key is visible to a
    // query when it is not padding and not after it.
    let axis = em.int(1);
    let kpos = em.op("CumSum", &[&mask, &axis]);
    let one = em.int(1);
    let kpos = em.op("Sub", &[&kpos, &one]);
    let kpos = em.shape_op("Unsqueeze", &kpos, &[1, 2, 3]);
    let qpos = em.shape_op("Unsqueeze", &pos, &[1, 2, 4]);
    let future = em.op("Greater", &[&kpos, &qpos]);
    let mask5 = em.shape_op("Unsqueeze", &mask, &[1, 2, 3]);
    let zero = em.int(0);
    let pad = em.op("Equal", &[&mask5, &zero]);
    let blocked = em.op("Or", &[&future, &pad]);
    let blocked = match c.sliding_window {
        // Mistral: a query sees the keys less than `window` positions back.
        Some(window) => {
            let back = em.op("Sub", &[&qpos, &kpos]);
            let last = em.int(window as i64 - 1);
            let far = em.op("Greater", &[&back, &last]);
            em.op("Or", &[&blocked, &far])
        }
        None => blocked,
    };
    let bias = em.mask_bias(&blocked);

    let has_layers = pieces.iter().any(|p| matches!(p, Piece::Layer(_)));
    let rope = if c.rotary_dims() > 0 && has_layers {
        let (cos, sin) = rope_tables(&c);
        let dims = [c.max_positions as i64, c.rotary_dims() as i64];
        let cos = em.f32s("rope_cos", &dims, &cos)?;
        let sin = em.f32s("rope_sin", &dims, &sin)?;
        let mut gather = |table: &str| {
            let g = em.g.node("Gather", &[table, &pos], &[Attr::Int("axis", 0)]);
            em.shape_op("Unsqueeze", &g, &[1])
        };
        let (cos, sin) = (gather(&cos), gather(&sin));
        Some(Rope { cos, sin, rot: c.rotary_dims() as i64, hd: hd as i64 })
    } else {
        None
    };

    let mut kv_heads = Vec::new();
    let mut removed = 0u64;
    let mut taps = Vec::new();
    for piece in pieces {
        let l = match piece {
            Piece::Layer(l) => l,
            Piece::Adapter(l) => {
                x = adapter(em, &x, l, c.hidden, part.rank().unwrap_or(1))?;
                continue;
            }
            Piece::Tap(l) => {
                let down = seeded(lst_seed(l), width, c.hidden);
                taps.push(em.linear(&x, &format!("ladder.{l}.down"), &down)?);
                continue;
            }
        };
        let mut layer = family.read_layer(src, l)?;
        let (mut heads, mut kv) = (c.heads, c.kv_heads);
        match pruning {
            Some(Prune::Magnitude(f)) => {
                for lin in [&mut layer.q, &mut layer.k, &mut layer.v, &mut layer.o, &mut layer.up, &mut layer.down]
                    .into_iter()
                    .chain(layer.gate.as_mut())
                {
                    prune::magnitude(&mut lin.w, *f);
                }
            }
            Some(Prune::Heads(n)) => {
                let (kept, r) =
                    prune::heads(&mut layer.q, &mut layer.k, &mut layer.v, &mut layer.o, heads as usize, *n as usize);
                (heads, kv) = (kept as u64, kept as u64);
                removed += r;
            }
            Some(Prune::Mlp(f)) => {
                let mut ins: Vec<&mut Lin> = vec![&mut layer.up];
                ins.extend(layer.gate.as_mut());
                removed += prune::mlp(&mut ins, &mut layer.down, *f);
            }
            None => {}
        }
        kv_heads.push(kv);
        let name = |part: &str| format!("layers.{l}.{part}");
        let past_dims = [b.clone(), Dim::Fixed(kv as i64), p.clone(), Dim::Fixed(hd as i64)];
        let present_dims = [b.clone(), Dim::Fixed(kv as i64), total.clone(), Dim::Fixed(hd as i64)];
        let kv_shape = ["batch".to_string(), kv.to_string(), "past_sequence".into(), hd.to_string()];
        let kv_shape: Vec<&str> = kv_shape.iter().map(String::as_str).collect();

        // Post-norm layers (OPT-350m) normalise after each residual add instead of before each block.
        let h1 = if c.post_norm { x.clone() } else { em.norm(&x, &name("ln1"), &layer.ln1, c.norm_eps)? };
        let q = em.linear(&h1, &name("q"), &layer.q)?;
        let k = em.linear(&h1, &name("k"), &layer.k)?;
        let v = em.linear(&h1, &name("v"), &layer.v)?;
        let mut q = em.heads(&q, heads, hd);
        let mut k = em.heads(&k, kv, hd);
        let v = em.heads(&v, kv, hd);
        if let Some(rope) = &rope {
            q = rope.apply(em, &q);
            k = rope.apply(em, &k);
        }
        let mut present = Vec::new();
        for (kind, new) in [("key", &k), ("value", &v)] {
            let past = em.g.input(&format!("past_key_values.{l}.{kind}"), Elem::F32, &past_dims);
            inputs.push(spec(&past, "float32", &kv_shape));
            let out = format!("present.{l}.{kind}");
            em.g.node_to("Concat", &[&past, new], &out, &[Attr::Int("axis", 2)]);
            em.g.output(&out, Elem::F32, &present_dims);
            let mut shape = kv_shape.clone();
            shape[2] = "past_sequence + sequence";
            outputs.push(spec(&out, "float32", &shape));
            present.push(out);
        }
        let ctx = em.attention(&q, &present[0], &present[1], &bias, Heads { query: heads, kv, dim: hd });
        let attn = em.linear(&ctx, &name("o"), &layer.o)?;

        let mlp = |em: &mut Emitter, input: &str, layer: &Layer| -> Result<String, ExportError> {
            let up = em.linear(input, &name("up"), &layer.up)?;
            let hidden = match &layer.gate {
                Some(gate) => {
                    let g = em.linear(input, &name("gate"), gate)?;
                    let g = em.activation(&g, c.act);
                    em.op("Mul", &[&g, &up])
                }
                None => em.activation(&up, c.act),
            };
            em.linear(&hidden, &name("down"), &layer.down)
        };
        let ln2 = |em: &mut Emitter, x: &str| match &layer.ln2 {
            Some(n) => em.norm(x, &name("ln2"), n, c.norm_eps),
            None => Ok(h1.clone()),
        };
        if c.post_norm {
            let sum = em.op("Add", &[&x, &attn]);
            let h = em.norm(&sum, &name("ln1"), &layer.ln1, c.norm_eps)?;
            let m = mlp(em, &h, &layer)?;
            let sum = em.op("Add", &[&h, &m]);
            x = ln2(em, &sum)?;
        } else if c.parallel_residual {
            let h2 = ln2(em, &x)?;
            let m = mlp(em, &h2, &layer)?;
            let sum = em.op("Add", &[&attn, &m]);
            x = em.op("Add", &[&x, &sum]);
        } else {
            x = em.op("Add", &[&x, &attn]);
            let h2 = ln2(em, &x)?;
            let m = mlp(em, &h2, &layer)?;
            x = em.op("Add", &[&x, &m]);
        }
    }

    match end {
        End::Head => {
            if let Some(name) = outer.final_norm {
                let fin = family.read_norm(src, name)?;
                x = em.norm(&x, "final_norm", &fin, c.norm_eps)?;
            }
            if let Some((_, project_out)) = outer.projections.filter(|_| c.embed_dim.is_some()) {
                let lin = src.linear(project_out, embed_dim, c.hidden, false, false)?;
                x = em.linear(&x, "project_out", &lin)?;
            }
            let head = match head_name {
                Some(module) => src.linear(module, c.vocab, embed_dim, outer.head_bias, false)?,
                None => Lin { w: src.mat(outer.embed, c.vocab, embed_dim)?, b: None, packed: None },
            };
            let logits = em.linear(&x, "lm_head", &head)?;
            if head_name.is_none() && part.embeds() {
                // A tied head is the embedding table again: count its parameters once.
                em.written.parameters -= c.vocab * embed_dim;
            }
            em.g.node_to("Identity", &[&logits], "logits", &[]);
        }
        End::Hidden => em.g.node_to("Identity", &[&x], HIDDEN_OUT, &[]),
        End::Ladder => {
            let taps: Vec<&str> = taps.iter().map(String::as_str).collect();
            em.g.node_to("Concat", &taps, LADDER_OUT, &[Attr::Int("axis", -1)]);
        }
        End::Side => {
            if part.start() == Start::Ladder {
                let w = width as i64;
                taps = (0..c.layers as i64).map(|l| em.slice(&x, l * w, (l + 1) * w, 2)).collect();
            }
            let logits = side_network(em, &taps, width, c.vocab)?;
            em.g.node_to("Identity", &[&logits], "logits", &[]);
        }
    }
    let summary = pruning.map(|p| p.summary(removed));
    Ok(((inputs, outputs), kv_heads, summary))
}
