//! BERT encoders (MiniLM) as sentence-transformers uses them: the encoder,
//! then mean pooling over the attention mask and L2 normalization, so the
//! graph's output is the sentence embedding itself.

use std::ops::Range;

use super::{Architecture, Defaults, Graph, Tensors};
use crate::export::decoder::{Heads, Norm};
use crate::export::emit::{Emitter, Lin};
use crate::export::prune::{self, Prune};
use crate::export::{spec, Built, ExportError, Source};
use crate::graph::{Attr, Dim, Elem};
use crate::hf::{Act, Config, Keys};

pub(crate) struct Bert;

impl Architecture for Bert {
    fn name(&self) -> &'static str {
        "bert"
    }

    fn keys(&self) -> Keys {
        Keys::standard()
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            act: Act::Gelu,
            norm_eps: 1e-12,
            rotary_pct: 1.0,
            parallel_residual: false,
            tied_embeddings: false,
            type_vocab: 2,
        }
    }

    fn to_hf_json(&self, c: &Config) -> serde_json::Value {
        serde_json::json!({"model_type": "bert", "architectures": ["BertModel"], "hidden_size": c.hidden,
            "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
            "intermediate_size": c.intermediate, "vocab_size": c.vocab,
            "max_position_embeddings": c.max_positions, "type_vocab_size": c.type_vocab,
            "layer_norm_eps": c.norm_eps, "hidden_act": c.act.name()})
    }

    fn layer_prefix(&self) -> &'static str {
        "encoder.layer."
    }

    fn head_prefix(&self) -> Option<&'static str> {
        Some("bert.")
    }

    fn tensors(&self, c: &Config, layers: Range<u64>, outer: bool, t: &mut Tensors) {
        let (h, i) = (c.hidden, c.intermediate);
        if outer {
            t.add("embeddings.word_embeddings.weight".into(), &[c.vocab, h]);
            t.add("embeddings.position_embeddings.weight".into(), &[c.max_positions, h]);
            t.add("embeddings.token_type_embeddings.weight".into(), &[c.type_vocab, h]);
            t.norm("embeddings.LayerNorm", true);
        }
        for l in layers {
            let p = format!("encoder.layer.{l}");
            for proj in ["query", "key", "value"] {
                t.add(format!("{p}.attention.self.{proj}.weight"), &[h, h]);
                t.add(format!("{p}.attention.self.{proj}.bias"), &[h]);
            }
            t.add(format!("{p}.attention.output.dense.weight"), &[h, h]);
            t.add(format!("{p}.attention.output.dense.bias"), &[h]);
            t.norm(&format!("{p}.attention.output.LayerNorm"), true);
            t.add(format!("{p}.intermediate.dense.weight"), &[i, h]);
            t.add(format!("{p}.intermediate.dense.bias"), &[i]);
            t.add(format!("{p}.output.dense.weight"), &[h, i]);
            t.add(format!("{p}.output.dense.bias"), &[h]);
            t.norm(&format!("{p}.output.LayerNorm"), true);
        }
    }

    fn graph(&self) -> Graph<'_> {
        Graph::Encoder(build)
    }
}

fn build(src: &mut Source, em: &mut Emitter, pruning: Option<&Prune>) -> Result<Built, ExportError> {
    let c = src.config().clone();
    let (h, hd) = (c.hidden, c.head_dim());
    let dims = [Dim::Named("batch".into()), Dim::Named("sequence".into())];
    let ids = em.g.input("input_ids", Elem::I64, &dims);
    let mask = em.g.input("attention_mask", Elem::I64, &dims);
    let types = em.g.input("token_type_ids", Elem::I64, &dims);
    em.g.output("sentence_embedding", Elem::F32, &[dims[0].clone(), Dim::Fixed(h as i64)]);
    let inputs = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|n| spec(n, "int64", &["batch", "sequence"]))
        .collect();
    let outputs = vec![spec("sentence_embedding", "float32", &["batch", &h.to_string()])];

    let table = src.mat("embeddings.word_embeddings.weight", c.vocab, h)?;
    let words = em.embedding(&ids, "word_embeddings", &table, true)?;
    // Positions 0..sequence, as a running count over the ids' shape.
    let zero = em.int(0);
    let one = em.int(1);
    let ones = em.op("Mul", &[&ids, &zero]);
    let ones = em.op("Add", &[&ones, &one]);
    let positions = em.op("CumSum", &[&ones, &one]);
    let positions = em.op("Sub", &[&positions, &one]);
    let table = src.mat("embeddings.position_embeddings.weight", c.max_positions, h)?;
    let positions = em.embedding(&positions, "position_embeddings", &table, false)?;
    let table = src.mat("embeddings.token_type_embeddings.weight", c.type_vocab, h)?;
    let type_rows = em.embedding(&types, "token_type_embeddings", &table, false)?;
    let x = em.op("Add", &[&words, &positions]);
    let x = em.op("Add", &[&x, &type_rows]);
    let ln = layer_norm(src, "embeddings.LayerNorm")?;
    let mut x = em.norm(&x, "embeddings_norm", &ln, c.norm_eps)?;

    let mask5 = em.shape_op("Unsqueeze", &mask, &[1, 2, 3]);
    let pad = em.op("Equal", &[&mask5, &zero]);
    let bias = em.mask_bias(&pad);

    let mut removed = 0;
    let mut heads_per_layer = Vec::new();
    for l in 0..c.layers {
        let p = format!("encoder.layer.{l}");
        let mut q = src.linear(&format!("{p}.attention.self.query"), h, h, true, false)?;
        let mut k = src.linear(&format!("{p}.attention.self.key"), h, h, true, false)?;
        let mut v = src.linear(&format!("{p}.attention.self.value"), h, h, true, false)?;
        let mut o = src.linear(&format!("{p}.attention.output.dense"), h, h, true, false)?;
        let ln1 = layer_norm(src, &format!("{p}.attention.output.LayerNorm"))?;
        let mut up = src.linear(&format!("{p}.intermediate.dense"), c.intermediate, h, true, false)?;
        let mut down = src.linear(&format!("{p}.output.dense"), h, c.intermediate, true, false)?;
        let ln2 = layer_norm(src, &format!("{p}.output.LayerNorm"))?;
        let mut heads = c.heads;
        match pruning {
            Some(Prune::Magnitude(f)) => {
                for lin in [&mut q, &mut k, &mut v, &mut o, &mut up, &mut down] {
                    prune::magnitude(&mut lin.w, *f);
                }
            }
            Some(Prune::Heads(n)) => {
                let (kept, r) = prune::heads(&mut q, &mut k, &mut v, &mut o, heads as usize, *n as usize);
                heads = kept as u64;
                removed += r;
            }
            Some(Prune::Mlp(f)) => removed += prune::mlp(&mut [&mut up], &mut down, *f),
            None => {}
        }
        heads_per_layer.push(heads);
        let name = |part: &str| format!("layers.{l}.{part}");
        let proj = |em: &mut Emitter, part: &str, lin: &Lin| -> Result<String, ExportError> {
            let y = em.linear(&x, &name(part), lin)?;
            Ok(em.heads(&y, heads, hd))
        };
        let (qh, kh, vh) = (proj(em, "q", &q)?, proj(em, "k", &k)?, proj(em, "v", &v)?);
        let ctx = em.attention(&qh, &kh, &vh, &bias, Heads { query: heads, kv: heads, dim: hd });
        let a = em.linear(&ctx, &name("o"), &o)?;
        let a = em.op("Add", &[&x, &a]);
        x = em.norm(&a, &name("ln1"), &ln1, c.norm_eps)?;
        let m = em.linear(&x, &name("up"), &up)?;
        let m = em.activation(&m, c.act);
        let m = em.linear(&m, &name("down"), &down)?;
        let m = em.op("Add", &[&x, &m]);
        x = em.norm(&m, &name("ln2"), &ln2, c.norm_eps)?;
    }

    // Mean over the tokens the mask keeps, then unit length (sentence-transformers'
    // Pooling(mean) + Normalize, with their clamps).
    let maskf = em.shape_op("Unsqueeze", &mask, &[2]);
    let maskf = em.g.node("Cast", &[&maskf], &[Attr::Int("to", 1)]);
    let masked = em.op("Mul", &[&x, &maskf]);
    let axis = em.ints(&[1]);
    let flat = [Attr::Int("keepdims", 0)];
    let summed = em.g.node("ReduceSum", &[&masked, &axis], &flat);
    let tokens = em.g.node("ReduceSum", &[&maskf, &axis], &flat);
    let floor = em.scalar(1e-9);
    let tokens = em.op("Max", &[&tokens, &floor]);
    let mean = em.op("Div", &[&summed, &tokens]);
    let sq = em.op("Mul", &[&mean, &mean]);
    let sq = em.shape_op("ReduceSum", &sq, &[-1]);
    let len = em.op("Sqrt", &[&sq]);
    let floor = em.scalar(1e-12);
    let len = em.op("Max", &[&len, &floor]);
    em.g.node_to("Div", &[&mean, &len], "sentence_embedding", &[]);
    Ok(((inputs, outputs), heads_per_layer, pruning.map(|p| p.summary(removed))))
}

fn layer_norm(src: &mut Source, name: &str) -> Result<Norm, ExportError> {
    crate::export::decoder::norm(src, name, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn synth_writes_the_tensors_export_reads() {
        super::super::tests::synth_matches_export("bert");
    }
}
