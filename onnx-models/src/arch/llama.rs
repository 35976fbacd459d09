//! Llama and the families that share its layout (`model.layers.{l}.self_attn.{q,k,v,o}_proj`,
//! a gated MLP, `model.norm`, `lm_head`): rotary positions, grouped-query
//! attention. Each is a [`LlamaLike`] saying where it departs from Llama:
//! Mistral's sliding window (read from `config.json` for any family), Gemma's
//! GeGLU, √hidden-scaled embeddings and `1 + weight` RMSNorm, Phi-3's fused
//! `qkv_proj` and `gate_up_proj`, StableLM's LayerNorm, partial rotary and
//! optional q/k/v biases.

use std::ops::Range;

use super::{Architecture, Decoder, Defaults, Graph, Outer, Tensors};
use crate::export::decoder::{norm, split, Layer, Norm};
use crate::export::emit::Lin;
use crate::export::{ExportError, Source};
use crate::hf::{must, Act, Config, Keys, Unsupported};

/// How a Llama-layout family's norms are computed.
#[derive(Clone, Copy, PartialEq)]
enum NormKind {
    Rms,
    /// Gemma: RMSNorm scaled by `1 + weight`.
    RmsPlusOne,
    /// StableLM: LayerNorm with a bias.
    Layer,
}

pub(crate) struct LlamaLike {
    name: &'static str,
    class: &'static str,
    norm: NormKind,
    act: Act,
    rotary_pct: f64,
    tied: bool,
    /// Phi-3: `qkv_proj` and `gate_up_proj` instead of separate projections.
    fused: bool,
    /// Gemma: embeddings × √hidden.
    scale_embeddings: bool,
    check: fn(&serde_json::Value) -> Result<(), Unsupported>,
}

const fn llama_like(name: &'static str, class: &'static str) -> LlamaLike {
    LlamaLike {
        name,
        class,
        norm: NormKind::Rms,
        act: Act::Silu,
        rotary_pct: 1.0,
        tied: false,
        fused: false,
        scale_embeddings: false,
        check: |_| Ok(()),
    }
}

fn no_bias(v: &serde_json::Value) -> bool {
    v.as_bool() == Some(false) || v.is_null()
}

/// Llama's and Gemma's `attention_bias` / `mlp_bias`, which the layout reads without.
fn no_biases(json: &serde_json::Value) -> Result<(), Unsupported> {
    must(json, "attention_bias", no_bias, "attention without biases only")?;
    must(json, "mlp_bias", no_bias, "MLP without biases only")
}

pub(crate) const LLAMA: LlamaLike = LlamaLike { check: no_biases, ..llama_like("llama", "LlamaForCausalLM") };

pub(crate) const MISTRAL: LlamaLike = llama_like("mistral", "MistralForCausalLM");

pub(crate) const GEMMA: LlamaLike = LlamaLike {
    norm: NormKind::RmsPlusOne,
    act: Act::GeluNew,
    tied: true,
    scale_embeddings: true,
    check: no_biases,
    ..llama_like("gemma", "GemmaForCausalLM")
};

pub(crate) const PHI3: LlamaLike = LlamaLike { fused: true, ..llama_like("phi3", "Phi3ForCausalLM") };

pub(crate) const STABLELM: LlamaLike = LlamaLike {
    norm: NormKind::Layer,
    rotary_pct: 0.25,
    check: |json| must(json, "qk_layernorm", no_bias, "StableLM without per-head q/k norms only"),
    ..llama_like("stablelm", "StableLmForCausalLM")
};

impl LlamaLike {
    fn norm_bias(&self) -> bool {
        self.norm == NormKind::Layer
    }
}

impl Architecture for LlamaLike {
    fn name(&self) -> &'static str {
        self.name
    }

    fn keys(&self) -> Keys {
        let norm_eps = if self.norm == NormKind::Layer { "layer_norm_eps" } else { "rms_norm_eps" };
        Keys { norm_eps: norm_eps.into(), ..Keys::standard() }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            act: self.act,
            norm_eps: if self.norm == NormKind::Rms { 1e-5 } else { 1e-6 },
            rotary_pct: self.rotary_pct,
            parallel_residual: false,
            tied_embeddings: self.tied,
            type_vocab: 0,
        }
    }

    /// Gemma's `hidden_act: gelu` is a legacy name for the tanh approximation (transformers says so and uses it).
    fn act(&self, named: Act) -> Act {
        if self.act == Act::GeluNew && named == Act::Gelu {
            Act::GeluNew
        } else {
            named
        }
    }

    fn check_config(&self, json: &serde_json::Value) -> Result<(), Unsupported> {
        (self.check)(json)
    }

    fn grouped_kv(&self) -> bool {
        true
    }

    fn rotary(&self) -> bool {
        true
    }

    fn to_hf_json(&self, c: &Config) -> serde_json::Value {
        let mut json = serde_json::json!({"model_type": self.name, "architectures": [self.class],
            "hidden_size": c.hidden, "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads, "intermediate_size": c.intermediate, "vocab_size": c.vocab,
            "max_position_embeddings": c.max_positions, "tie_word_embeddings": c.tied_embeddings,
            "rope_theta": c.rope_theta, "partial_rotary_factor": c.rotary_pct, "hidden_act": c.act.name(),
            "head_dim": c.head_dim()});
        json[self.keys().norm_eps] = c.norm_eps.into();
        if let Some(window) = c.sliding_window {
            json["sliding_window"] = window.into();
        }
        if self.name == STABLELM.name {
            json["use_qkv_bias"] = c.qkv_bias.into();
            json["use_parallel_residual"] = c.parallel_residual.into();
        }
        json
    }

    fn layer_prefix(&self) -> &'static str {
        "model.layers."
    }

    fn tensors(&self, c: &Config, layers: Range<u64>, outer: bool, t: &mut Tensors) {
        let (h, i) = (c.hidden, c.intermediate);
        let (q, kv) = (c.heads * c.head_dim(), c.kv_heads * c.head_dim());
        if outer {
            t.add("model.embed_tokens.weight".into(), &[c.vocab, h]);
        }
        for l in layers {
            let p = format!("model.layers.{l}");
            t.norm(&format!("{p}.input_layernorm"), self.norm_bias());
            if !c.parallel_residual {
                t.norm(&format!("{p}.post_attention_layernorm"), self.norm_bias());
            }
            if self.fused {
                t.add(format!("{p}.self_attn.qkv_proj.weight"), &[q + 2 * kv, h]);
            } else {
                for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                    t.add(format!("{p}.self_attn.{proj}.weight"), &[rows, h]);
                    if c.qkv_bias {
                        t.add(format!("{p}.self_attn.{proj}.bias"), &[rows]);
                    }
                }
            }
            t.add(format!("{p}.self_attn.o_proj.weight"), &[h, q]);
            if self.fused {
                t.add(format!("{p}.mlp.gate_up_proj.weight"), &[2 * i, h]);
            } else {
                t.add(format!("{p}.mlp.gate_proj.weight"), &[i, h]);
                t.add(format!("{p}.mlp.up_proj.weight"), &[i, h]);
            }
            t.add(format!("{p}.mlp.down_proj.weight"), &[h, i]);
        }
        if outer {
            t.norm("model.norm", self.norm_bias());
            if !c.tied_embeddings {
                t.add("lm_head.weight".into(), &[c.vocab, h]);
            }
        }
    }

    fn graph(&self) -> Graph<'_> {
        Graph::Decoder(self)
    }
}

/// Rows `from..to` of a fused projection.
fn rows(from: u64, to: u64) -> Vec<usize> {
    (from as usize..to as usize).collect()
}

impl Decoder for LlamaLike {
    fn read_layer(&self, src: &mut Source, l: u64) -> Result<Layer, ExportError> {
        let c = src.config();
        let (h, i, parallel, qkv_bias) = (c.hidden, c.intermediate, c.parallel_residual, c.qkv_bias);
        let (qd, kvd) = (c.heads * c.head_dim(), c.kv_heads * c.head_dim());
        let p = format!("model.layers.{l}");
        let [q, k, v]: [Lin; 3] = if self.fused {
            let qkv = src.linear(&format!("{p}.self_attn.qkv_proj"), qd + 2 * kvd, h, false, false)?;
            let parts = [rows(0, qd), rows(qd, qd + kvd), rows(qd + kvd, qd + 2 * kvd)];
            split(qkv, &parts).try_into().expect("three parts")
        } else {
            let mut proj = |name: &str, out| src.linear(&format!("{p}.self_attn.{name}"), out, h, qkv_bias, false);
            [proj("q_proj", qd)?, proj("k_proj", kvd)?, proj("v_proj", kvd)?]
        };
        let (gate, up) = if self.fused {
            // Phi-3 chunks `gate_up_proj`'s output: the gate first, then up.
            let gate_up = src.linear(&format!("{p}.mlp.gate_up_proj"), 2 * i, h, false, false)?;
            let [gate, up]: [Lin; 2] = split(gate_up, &[rows(0, i), rows(i, 2 * i)]).try_into().expect("two parts");
            (gate, up)
        } else {
            (
                src.linear(&format!("{p}.mlp.gate_proj"), i, h, false, false)?,
                src.linear(&format!("{p}.mlp.up_proj"), i, h, false, false)?,
            )
        };
        Ok(Layer {
            ln1: self.read_norm(src, &format!("{p}.input_layernorm"))?,
            // StableLM with `use_parallel_residual` has one norm for attention and MLP.
            ln2: if parallel { None } else { Some(self.read_norm(src, &format!("{p}.post_attention_layernorm"))?) },
            q,
            k,
            v,
            o: src.linear(&format!("{p}.self_attn.o_proj"), h, qd, false, false)?,
            gate: Some(gate),
            up,
            down: src.linear(&format!("{p}.mlp.down_proj"), h, i, false, false)?,
        })
    }

    fn outer(&self, _: &Config) -> Outer {
        Outer { scale_embeddings: self.scale_embeddings, ..Outer::standard() }
    }

    fn read_norm(&self, src: &mut Source, name: &str) -> Result<Norm, ExportError> {
        let n = norm(src, name, self.norm_bias())?;
        Ok(if self.norm == NormKind::RmsPlusOne { n.plus_one() } else { n })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synth_writes_the_tensors_export_reads() {
        for name in ["llama", "mistral", "gemma", "phi3", "stablelm"] {
            super::super::tests::synth_matches_export(name);
        }
    }
}
