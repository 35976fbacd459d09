//! Llama (and the families that share its layout, as the catalog's Mistral):
//! RMSNorm, rotary positions, grouped-query attention, a gated SiLU MLP, no biases.

use std::ops::Range;

use super::{Architecture, Decoder, Defaults, Graph, Outer, Tensors};
use crate::export::decoder::{norm, Layer};
use crate::export::{ExportError, Source};
use crate::hf::{must, Act, Config, Keys, Unsupported};

pub(crate) struct Llama;

impl Architecture for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn keys(&self) -> Keys {
        Keys { norm_eps: "rms_norm_eps".into(), ..Keys::standard() }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            act: Act::Silu,
            norm_eps: 1e-5,
            rotary_pct: 1.0,
            parallel_residual: false,
            tied_embeddings: false,
            type_vocab: 0,
        }
    }

    fn check_config(&self, json: &serde_json::Value) -> Result<(), Unsupported> {
        let no_bias = |v: &serde_json::Value| v.as_bool() == Some(false) || v.is_null();
        must(json, "attention_bias", no_bias, "Llama attention without biases only")?;
        must(json, "mlp_bias", no_bias, "Llama MLP without biases only")
    }

    fn grouped_kv(&self) -> bool {
        true
    }

    fn rotary(&self) -> bool {
        true
    }

    fn to_hf_json(&self, c: &Config) -> serde_json::Value {
        serde_json::json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "hidden_size": c.hidden, "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads, "intermediate_size": c.intermediate, "vocab_size": c.vocab,
            "max_position_embeddings": c.max_positions, "tie_word_embeddings": c.tied_embeddings,
            "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta, "hidden_act": c.act.name()})
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
            t.norm(&format!("{p}.input_layernorm"), false);
            t.norm(&format!("{p}.post_attention_layernorm"), false);
            t.add(format!("{p}.self_attn.q_proj.weight"), &[q, h]);
            t.add(format!("{p}.self_attn.k_proj.weight"), &[kv, h]);
            t.add(format!("{p}.self_attn.v_proj.weight"), &[kv, h]);
            t.add(format!("{p}.self_attn.o_proj.weight"), &[h, q]);
            t.add(format!("{p}.mlp.gate_proj.weight"), &[i, h]);
            t.add(format!("{p}.mlp.up_proj.weight"), &[i, h]);
            t.add(format!("{p}.mlp.down_proj.weight"), &[h, i]);
        }
        if outer {
            t.norm("model.norm", false);
            if !c.tied_embeddings {
                t.add("lm_head.weight".into(), &[c.vocab, h]);
            }
        }
    }

    fn graph(&self) -> Graph<'_> {
        Graph::Decoder(self)
    }
}

impl Decoder for Llama {
    fn read_layer(&self, src: &mut Source, l: u64) -> Result<Layer, ExportError> {
        let c = src.config();
        let (h, i) = (c.hidden, c.intermediate);
        let (qd, kvd) = (c.heads * c.head_dim(), c.kv_heads * c.head_dim());
        let p = format!("model.layers.{l}");
        Ok(Layer {
            ln1: norm(src, &format!("{p}.input_layernorm"), false)?,
            ln2: norm(src, &format!("{p}.post_attention_layernorm"), false)?,
            q: src.linear(&format!("{p}.self_attn.q_proj"), qd, h, false, false)?,
            k: src.linear(&format!("{p}.self_attn.k_proj"), kvd, h, false, false)?,
            v: src.linear(&format!("{p}.self_attn.v_proj"), kvd, h, false, false)?,
            o: src.linear(&format!("{p}.self_attn.o_proj"), h, qd, false, false)?,
            gate: Some(src.linear(&format!("{p}.mlp.gate_proj"), i, h, false, false)?),
            up: src.linear(&format!("{p}.mlp.up_proj"), i, h, false, false)?,
            down: src.linear(&format!("{p}.mlp.down_proj"), h, i, false, false)?,
        })
    }

    fn outer(&self) -> Outer {
        Outer {
            embed: "model.embed_tokens.weight",
            positions: None,
            final_norm: "model.norm",
            norm_bias: false,
            head: Some("lm_head.weight"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synth_writes_the_tensors_export_reads() {
        super::super::tests::synth_matches_export("llama");
    }
}
