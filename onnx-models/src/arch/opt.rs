//! OPT: learned positions offset by 2, LayerNorm before each block (or, in
//! OPT-350m, after each residual add, with embeddings narrower than the
//! hidden size projected in and out), separate q/k/v projections with biases, ReLU.

use std::ops::Range;

use super::{Architecture, Decoder, Defaults, Graph, Outer, Tensors};
use crate::export::decoder::{norm, Layer};
use crate::export::{ExportError, Source};
use crate::hf::{Act, Config, Keys};

pub(crate) struct Opt;

impl Architecture for Opt {
    fn name(&self) -> &'static str {
        "opt"
    }

    fn keys(&self) -> Keys {
        Keys { intermediate: "ffn_dim".into(), ..Keys::standard() }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            act: Act::Relu,
            norm_eps: 1e-5,
            rotary_pct: 1.0,
            parallel_residual: false,
            tied_embeddings: true,
            type_vocab: 0,
        }
    }

    fn to_hf_json(&self, c: &Config) -> serde_json::Value {
        serde_json::json!({"model_type": "opt", "architectures": ["OPTForCausalLM"], "hidden_size": c.hidden,
            "num_hidden_layers": c.layers, "num_attention_heads": c.heads, "ffn_dim": c.intermediate,
            "vocab_size": c.vocab, "max_position_embeddings": c.max_positions,
            "word_embed_proj_dim": c.embed_dim.unwrap_or(c.hidden), "do_layer_norm_before": !c.post_norm, "activation_function": c.act.name(), "tie_word_embeddings": true})
    }

    fn layer_prefix(&self) -> &'static str {
        "model.decoder.layers."
    }

    fn tensors(&self, c: &Config, layers: Range<u64>, outer: bool, t: &mut Tensors) {
        let (h, i) = (c.hidden, c.intermediate);
        let e = c.embed_dim.unwrap_or(h);
        if outer {
            t.add("model.decoder.embed_tokens.weight".into(), &[c.vocab, e]);
            // OPT's learned positions are offset by 2.
            t.add("model.decoder.embed_positions.weight".into(), &[c.max_positions + 2, h]);
        }
        for l in layers {
            let p = format!("model.decoder.layers.{l}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                t.add(format!("{p}.self_attn.{proj}.weight"), &[h, h]);
                t.add(format!("{p}.self_attn.{proj}.bias"), &[h]);
            }
            t.norm(&format!("{p}.self_attn_layer_norm"), true);
            t.add(format!("{p}.fc1.weight"), &[i, h]);
            t.add(format!("{p}.fc1.bias"), &[i]);
            t.add(format!("{p}.fc2.weight"), &[h, i]);
            t.add(format!("{p}.fc2.bias"), &[h]);
            t.norm(&format!("{p}.final_layer_norm"), true);
        }
        if outer {
            if !c.post_norm {
                t.norm("model.decoder.final_layer_norm", true);
            }
            if c.embed_dim.is_some() {
                t.add("model.decoder.project_out.weight".into(), &[e, h]);
                t.add("model.decoder.project_in.weight".into(), &[h, e]);
            }
        }
    }

    fn graph(&self) -> Graph<'_> {
        Graph::Decoder(self)
    }
}

impl Decoder for Opt {
    fn read_layer(&self, src: &mut Source, l: u64) -> Result<Layer, ExportError> {
        let c = src.config();
        let (h, i) = (c.hidden, c.intermediate);
        let p = format!("model.decoder.layers.{l}");
        let proj = |src: &mut Source, name: &str| src.linear(&format!("{p}.self_attn.{name}"), h, h, true, false);
        Ok(Layer {
            ln1: norm(src, &format!("{p}.self_attn_layer_norm"), true)?,
            q: proj(src, "q_proj")?,
            k: proj(src, "k_proj")?,
            v: proj(src, "v_proj")?,
            o: proj(src, "out_proj")?,
            ln2: Some(norm(src, &format!("{p}.final_layer_norm"), true)?),
            up: src.linear(&format!("{p}.fc1"), i, h, true, false)?,
            gate: None,
            down: src.linear(&format!("{p}.fc2"), h, i, true, false)?,
        })
    }

    fn outer(&self, c: &Config) -> Outer {
        Outer {
            embed: "model.decoder.embed_tokens.weight",
            positions: Some(("model.decoder.embed_positions.weight", 2)),
            // Post-norm OPT has no final norm.
            final_norm: (!c.post_norm).then_some("model.decoder.final_layer_norm"),
            head: None,
            projections: Some(("model.decoder.project_in", "model.decoder.project_out")),
            ..Outer::standard()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synth_writes_the_tensors_export_reads() {
        super::super::tests::synth_matches_export("opt");
    }
}
