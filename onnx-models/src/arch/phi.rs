//! Phi-1.5 and Phi-2 (`phi`): attention and MLP in parallel from one
//! LayerNorm, partial rotary positions, biases on every projection and on
//! the LM head, a final LayerNorm.

use std::ops::Range;

use super::{Architecture, Decoder, Defaults, Graph, Outer, Tensors};
use crate::export::decoder::{norm, Layer};
use crate::export::{ExportError, Source};
use crate::hf::{must, Act, Config, Keys, Unsupported};

pub(crate) struct Phi;

impl Architecture for Phi {
    fn name(&self) -> &'static str {
        "phi"
    }

    fn keys(&self) -> Keys {
        Keys::standard()
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            act: Act::GeluNew,
            norm_eps: 1e-5,
            rotary_pct: 0.5,
            parallel_residual: true,
            tied_embeddings: false,
            type_vocab: 0,
        }
    }

    fn check_config(&self, json: &serde_json::Value) -> Result<(), Unsupported> {
        must(json, "qk_layernorm", |v| v.as_bool() != Some(true), "Phi without per-head q/k norms only")?;
        must(json, "use_parallel_residual", |v| v.as_bool() != Some(false), "Phi's parallel block only")
    }

    fn grouped_kv(&self) -> bool {
        true
    }

    fn rotary(&self) -> bool {
        true
    }

    fn to_hf_json(&self, c: &Config) -> serde_json::Value {
        serde_json::json!({"model_type": "phi", "architectures": ["PhiForCausalLM"],
            "hidden_size": c.hidden, "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads, "intermediate_size": c.intermediate, "vocab_size": c.vocab,
            "max_position_embeddings": c.max_positions, "tie_word_embeddings": c.tied_embeddings,
            "layer_norm_eps": c.norm_eps, "rope_theta": c.rope_theta, "partial_rotary_factor": c.rotary_pct,
            "hidden_act": c.act.name()})
    }

    fn layer_prefix(&self) -> &'static str {
        "model.layers."
    }

    fn tensors(&self, c: &Config, layers: Range<u64>, outer: bool, t: &mut Tensors) {
        let (h, i) = (c.hidden, c.intermediate);
        let (q, kv) = (c.heads * c.head_dim(), c.kv_heads * c.head_dim());
        let lin = |t: &mut Tensors, name: String, out: u64, inp: u64| {
            t.add(format!("{name}.weight"), &[out, inp]);
            t.add(format!("{name}.bias"), &[out]);
        };
        if outer {
            t.add("model.embed_tokens.weight".into(), &[c.vocab, h]);
        }
        for l in layers {
            let p = format!("model.layers.{l}");
            t.norm(&format!("{p}.input_layernorm"), true);
            lin(t, format!("{p}.self_attn.q_proj"), q, h);
            lin(t, format!("{p}.self_attn.k_proj"), kv, h);
            lin(t, format!("{p}.self_attn.v_proj"), kv, h);
            lin(t, format!("{p}.self_attn.dense"), h, q);
            lin(t, format!("{p}.mlp.fc1"), i, h);
            lin(t, format!("{p}.mlp.fc2"), h, i);
        }
        if outer {
            t.norm("model.final_layernorm", true);
            if !c.tied_embeddings {
                lin(t, "lm_head".into(), c.vocab, h);
            }
        }
    }

    fn graph(&self) -> Graph<'_> {
        Graph::Decoder(self)
    }
}

impl Decoder for Phi {
    fn read_layer(&self, src: &mut Source, l: u64) -> Result<Layer, ExportError> {
        let c = src.config();
        let (h, i) = (c.hidden, c.intermediate);
        let (qd, kvd) = (c.heads * c.head_dim(), c.kv_heads * c.head_dim());
        let p = format!("model.layers.{l}");
        Ok(Layer {
            ln1: norm(src, &format!("{p}.input_layernorm"), true)?,
            ln2: None,
            q: src.linear(&format!("{p}.self_attn.q_proj"), qd, h, true, false)?,
            k: src.linear(&format!("{p}.self_attn.k_proj"), kvd, h, true, false)?,
            v: src.linear(&format!("{p}.self_attn.v_proj"), kvd, h, true, false)?,
            o: src.linear(&format!("{p}.self_attn.dense"), h, qd, true, false)?,
            up: src.linear(&format!("{p}.mlp.fc1"), i, h, true, false)?,
            gate: None,
            down: src.linear(&format!("{p}.mlp.fc2"), h, i, true, false)?,
        })
    }

    fn outer(&self, _: &Config) -> Outer {
        Outer { final_norm: Some("model.final_layernorm"), head_bias: true, ..Outer::standard() }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synth_writes_the_tensors_export_reads() {
        super::super::tests::synth_matches_export("phi");
    }
}
