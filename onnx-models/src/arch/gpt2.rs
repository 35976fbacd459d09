//! GPT-2: learned positions, pre-norm LayerNorm, a fused QKV in `Conv1D`
//! layers (weights stored `[in, out]`), gelu_new.

use std::ops::Range;

use super::{Architecture, Decoder, Defaults, Graph, Outer, Tensors};
use crate::export::decoder::{norm, split, Layer};
use crate::export::emit::Lin;
use crate::export::{ExportError, Source};
use crate::hf::{Act, Config, Keys};

pub(crate) struct Gpt2;

impl Architecture for Gpt2 {
    fn name(&self) -> &'static str {
        "gpt2"
    }

    fn keys(&self) -> Keys {
        Keys {
            hidden: "n_embd".into(),
            layers: "n_layer".into(),
            heads: "n_head".into(),
            intermediate: "n_inner".into(),
            max_positions: "n_positions".into(),
            norm_eps: "layer_norm_epsilon".into(),
            ..Keys::standard()
        }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            act: Act::GeluNew,
            norm_eps: 1e-5,
            rotary_pct: 1.0,
            parallel_residual: false,
            tied_embeddings: true,
            type_vocab: 0,
        }
    }

    /// `n_inner` is null in GPT-2's own configs: four times the hidden size.
    fn default_intermediate(&self, hidden: u64) -> Option<u64> {
        Some(hidden.saturating_mul(4))
    }

    fn to_hf_json(&self, c: &Config) -> serde_json::Value {
        serde_json::json!({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": c.hidden,
            "n_layer": c.layers, "n_head": c.heads, "n_inner": c.intermediate, "vocab_size": c.vocab,
            "n_positions": c.max_positions, "layer_norm_epsilon": c.norm_eps, "activation_function": c.act.name()})
    }

    fn layer_prefix(&self) -> &'static str {
        "h."
    }

    fn head_prefix(&self) -> Option<&'static str> {
        Some("transformer.")
    }

    fn tensors(&self, c: &Config, layers: Range<u64>, outer: bool, t: &mut Tensors) {
        let (h, i) = (c.hidden, c.intermediate);
        if outer {
            t.add("wte.weight".into(), &[c.vocab, h]);
            t.add("wpe.weight".into(), &[c.max_positions, h]);
        }
        for l in layers {
            let p = format!("h.{l}");
            t.norm(&format!("{p}.ln_1"), true);
            // Conv1D: weights stored [in, out].
            t.add(format!("{p}.attn.c_attn.weight"), &[h, 3 * h]);
            t.add(format!("{p}.attn.c_attn.bias"), &[3 * h]);
            t.add(format!("{p}.attn.c_proj.weight"), &[h, h]);
            t.add(format!("{p}.attn.c_proj.bias"), &[h]);
            t.norm(&format!("{p}.ln_2"), true);
            t.add(format!("{p}.mlp.c_fc.weight"), &[h, i]);
            t.add(format!("{p}.mlp.c_fc.bias"), &[i]);
            t.add(format!("{p}.mlp.c_proj.weight"), &[i, h]);
            t.add(format!("{p}.mlp.c_proj.bias"), &[h]);
        }
        if outer {
            t.norm("ln_f", true);
        }
    }

    fn graph(&self) -> Graph<'_> {
        Graph::Decoder(self)
    }
}

impl Decoder for Gpt2 {
    fn read_layer(&self, src: &mut Source, l: u64) -> Result<Layer, ExportError> {
        let c = src.config();
        let (h, i) = (c.hidden, c.intermediate);
        let p = format!("h.{l}");
        let range = |from: u64| (from as usize..(from + h) as usize).collect::<Vec<_>>();
        let qkv = src.linear(&format!("{p}.attn.c_attn"), 3 * h, h, true, true)?;
        let [q, k, v]: [Lin; 3] = split(qkv, &[range(0), range(h), range(2 * h)]).try_into().expect("three parts");
        Ok(Layer {
            ln1: norm(src, &format!("{p}.ln_1"), true)?,
            q,
            k,
            v,
            o: src.linear(&format!("{p}.attn.c_proj"), h, h, true, true)?,
            ln2: Some(norm(src, &format!("{p}.ln_2"), true)?),
            up: src.linear(&format!("{p}.mlp.c_fc"), i, h, true, true)?,
            gate: None,
            down: src.linear(&format!("{p}.mlp.c_proj"), h, i, true, true)?,
        })
    }

    fn outer(&self, _: &Config) -> Outer {
        Outer {
            embed: "wte.weight",
            positions: Some(("wpe.weight", 0)),
            final_norm: Some("ln_f"),
            head: None,
            ..Outer::standard()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn synth_writes_the_tensors_export_reads() {
        super::super::tests::synth_matches_export("gpt2");
    }
}
