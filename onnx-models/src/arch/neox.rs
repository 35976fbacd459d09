//! GPT-NeoX (Pythia): partial rotary positions, a fused QKV in per-head
//! layout, attention and MLP in parallel from the same input.

use std::ops::Range;

use super::{Architecture, Decoder, Defaults, Graph, Outer, Tensors};
use crate::export::decoder::{norm, split, Layer};
use crate::export::emit::Lin;
use crate::export::{ExportError, Source};
use crate::hf::{must, Act, Config, Keys, Unsupported};

pub(crate) struct GptNeox;

impl Architecture for GptNeox {
    fn name(&self) -> &'static str {
        "gpt_neox"
    }

    fn keys(&self) -> Keys {
        Keys { rotary: "rotary_pct".into(), rope_theta: "rotary_emb_base".into(), ..Keys::standard() }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            act: Act::Gelu,
            norm_eps: 1e-5,
            rotary_pct: 0.25,
            parallel_residual: true,
            tied_embeddings: false,
            type_vocab: 0,
        }
    }

    fn check_config(&self, json: &serde_json::Value) -> Result<(), Unsupported> {
        must(json, "attention_bias", |v| v.as_bool() != Some(false), "NeoX attention with biases only")
    }

    fn rotary(&self) -> bool {
        true
    }

    fn to_hf_json(&self, c: &Config) -> serde_json::Value {
        serde_json::json!({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
            "hidden_size": c.hidden, "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
            "intermediate_size": c.intermediate, "vocab_size": c.vocab, "max_position_embeddings": c.max_positions,
            "rotary_pct": c.rotary_pct, "rotary_emb_base": c.rope_theta,
            "use_parallel_residual": c.parallel_residual, "tie_word_embeddings": c.tied_embeddings,
            "layer_norm_eps": c.norm_eps, "hidden_act": c.act.name()})
    }

    fn layer_prefix(&self) -> &'static str {
        "gpt_neox.layers."
    }

    fn tensors(&self, c: &Config, layers: Range<u64>, outer: bool, t: &mut Tensors) {
        let (h, i) = (c.hidden, c.intermediate);
        if outer {
            t.add("gpt_neox.embed_in.weight".into(), &[c.vocab, h]);
        }
        for l in layers {
            let p = format!("gpt_neox.layers.{l}");
            t.norm(&format!("{p}.input_layernorm"), true);
            t.norm(&format!("{p}.post_attention_layernorm"), true);
            t.add(format!("{p}.attention.query_key_value.weight"), &[3 * h, h]);
            t.add(format!("{p}.attention.query_key_value.bias"), &[3 * h]);
            t.add(format!("{p}.attention.dense.weight"), &[h, h]);
            t.add(format!("{p}.attention.dense.bias"), &[h]);
            t.add(format!("{p}.mlp.dense_h_to_4h.weight"), &[i, h]);
            t.add(format!("{p}.mlp.dense_h_to_4h.bias"), &[i]);
            t.add(format!("{p}.mlp.dense_4h_to_h.weight"), &[h, i]);
            t.add(format!("{p}.mlp.dense_4h_to_h.bias"), &[h]);
        }
        if outer {
            t.norm("gpt_neox.final_layer_norm", true);
            if !c.tied_embeddings {
                t.add("embed_out.weight".into(), &[c.vocab, h]);
            }
        }
    }

    fn graph(&self) -> Graph<'_> {
        Graph::Decoder(self)
    }
}

impl Decoder for GptNeox {
    fn read_layer(&self, src: &mut Source, l: u64) -> Result<Layer, ExportError> {
        let c = src.config();
        let (h, i, heads, hd) = (c.hidden, c.intermediate, c.heads, c.head_dim());
        let p = format!("gpt_neox.layers.{l}");
        // Fused QKV in per-head layout: head n's rows are [q | k | v], hd each.
        let qkv = src.linear(&format!("{p}.attention.query_key_value"), 3 * h, h, true, false)?;
        let part = |which: u64| {
            (0..heads)
                .flat_map(|n| n * 3 * hd + which * hd..n * 3 * hd + (which + 1) * hd)
                .map(|r| r as usize)
                .collect()
        };
        let [q, k, v]: [Lin; 3] = split(qkv, &[part(0), part(1), part(2)]).try_into().expect("three parts");
        Ok(Layer {
            ln1: norm(src, &format!("{p}.input_layernorm"), true)?,
            ln2: Some(norm(src, &format!("{p}.post_attention_layernorm"), true)?),
            q,
            k,
            v,
            o: src.linear(&format!("{p}.attention.dense"), h, h, true, false)?,
            up: src.linear(&format!("{p}.mlp.dense_h_to_4h"), i, h, true, false)?,
            gate: None,
            down: src.linear(&format!("{p}.mlp.dense_4h_to_h"), h, i, true, false)?,
        })
    }

    fn outer(&self, _: &Config) -> Outer {
        Outer {
            embed: "gpt_neox.embed_in.weight",
            final_norm: Some("gpt_neox.final_layer_norm"),
            head: Some("embed_out"),
            ..Outer::standard()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synth_writes_the_tensors_export_reads() {
        super::super::tests::synth_matches_export("gpt_neox");
    }
}
