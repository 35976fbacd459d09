//! The model families export supports, one file each, registered in
//! [`REGISTRY`] (tract registers its ops the same way).
//!
//! A family's file says everything that is its own: the `config.json` keys
//! and defaults Hugging Face uses for it, the values export does not follow,
//! its tensors (names and shapes, in file order) and how they are read into
//! the graph. What families share (reading `config.json`, validation, the
//! decoder graph, quantization) stays in [`crate::hf`] and [`crate::export`].
//! Adding a family is one file here and one line in [`REGISTRY`].

mod bert;
mod gpt2;
mod llama;
mod neox;
mod opt;
mod phi;

use std::fmt;
use std::ops::Range;

use serde::{Serialize, Serializer};

use crate::export::decoder::{Layer, Norm};
use crate::export::emit::Emitter;
use crate::export::{Built, ExportError, Prune, Source};
use crate::hf::{Act, Config, Keys, Unsupported};

/// Every family export supports, in the order messages list them.
const REGISTRY: &[&dyn Architecture] = &[
    &gpt2::Gpt2,
    &neox::GptNeox,
    &llama::LLAMA,
    &opt::Opt,
    &bert::Bert,
    &llama::MISTRAL,
    &llama::GEMMA,
    &phi::Phi,
    &llama::PHI3,
    &llama::STABLELM,
];

/// One model family (`model_type` in `config.json`).
pub(crate) trait Architecture: Sync {
    /// `model_type` in `config.json`; also its name in manifests and messages.
    fn name(&self) -> &'static str;
    /// The `config.json` keys Hugging Face writes for this family.
    fn keys(&self) -> Keys;
    /// Hugging Face's values for what `config.json` leaves out.
    fn defaults(&self) -> Defaults;
    /// The MLP width when `config.json` gives none (`None`: it must).
    fn default_intermediate(&self, _hidden: u64) -> Option<u64> {
        None
    }
    /// The activation `config.json`'s name means for this family.
    fn act(&self, named: Act) -> Act {
        named
    }
    /// Refuses values of `config.json` that change the computation in ways the graph does not follow.
    fn check_config(&self, _json: &serde_json::Value) -> Result<(), Unsupported> {
        Ok(())
    }
    /// Fewer key/value heads than query heads are allowed (grouped-query attention).
    fn grouped_kv(&self) -> bool {
        false
    }
    /// Positions are rotary embeddings (else learned, or none).
    fn rotary(&self) -> bool {
        false
    }
    /// `config.json` as Hugging Face writes it.
    fn to_hf_json(&self, c: &Config) -> serde_json::Value;
    /// The prefix of the layers' tensor names (`model.layers.` for `model.layers.{l}.…`).
    fn layer_prefix(&self) -> &'static str;
    /// The prefix on every name of a checkpoint saved from a model with a task head.
    fn head_prefix(&self) -> Option<&'static str> {
        None
    }
    /// The tensors of `layers`, and with `outer` those outside the layers, in file order.
    fn tensors(&self, c: &Config, layers: Range<u64>, outer: bool, t: &mut Tensors);
    /// How the graph is built.
    fn graph(&self) -> Graph<'_>;
}

/// Hugging Face's defaults of one family.
pub(crate) struct Defaults {
    pub act: Act,
    pub norm_eps: f64,
    pub rotary_pct: f64,
    pub parallel_residual: bool,
    pub tied_embeddings: bool,
    /// Token type vocabulary; families without token types have 0 (and none is read).
    pub type_vocab: u64,
}

pub(crate) enum Graph<'a> {
    /// The one decoder graph (`export/decoder.rs`) over this family's layers.
    Decoder(&'a dyn Decoder),
    /// A graph of the family's own.
    Encoder(fn(&mut Source, &mut Emitter, Option<&Prune>) -> Result<Built, ExportError>),
}

/// A decoder family's weights, read into the shape the decoder graph takes.
pub(crate) trait Decoder {
    /// Layer `l`, fused projections split.
    fn read_layer(&self, src: &mut Source, l: u64) -> Result<Layer, ExportError>;
    /// The tensors outside the layers.
    fn outer(&self, c: &Config) -> Outer;
    /// A norm of this family: LayerNorm (`{name}.weight` and `.bias`) unless the family says otherwise.
    fn read_norm(&self, src: &mut Source, name: &str) -> Result<Norm, ExportError> {
        crate::export::decoder::norm(src, name, true)
    }
}

/// Names of a decoder's tensors outside the layers.
pub(crate) struct Outer {
    pub embed: &'static str,
    /// A learned position table, with the rows before position 0 (OPT has 2).
    pub positions: Option<(&'static str, u64)>,
    /// The final norm's module (none in post-norm OPT).
    pub final_norm: Option<&'static str>,
    /// The LM head's module when it is not tied to the embeddings.
    pub head: Option<&'static str>,
    /// The LM head has a bias (Phi).
    pub head_bias: bool,
    /// Embeddings are multiplied by √hidden (Gemma).
    pub scale_embeddings: bool,
    /// The modules projecting narrower embeddings in and out (OPT's `word_embed_proj_dim`), read when the config has them.
    pub projections: Option<(&'static str, &'static str)>,
}

impl Outer {
    /// The names most families use: `model.embed_tokens`, `model.norm`, `lm_head`.
    pub(crate) fn standard() -> Self {
        Outer {
            embed: "model.embed_tokens.weight",
            positions: None,
            final_norm: Some("model.norm"),
            head: Some("lm_head"),
            head_bias: false,
            scale_embeddings: false,
            projections: None,
        }
    }
}

/// A list of tensors being made: names and shapes.
pub(crate) struct Tensors {
    pub list: Vec<(String, Vec<u64>)>,
    hidden: u64,
}

impl Tensors {
    pub fn new(hidden: u64) -> Self {
        Self { list: Vec::new(), hidden }
    }

    pub fn add(&mut self, name: String, shape: &[u64]) {
        self.list.push((name, shape.to_vec()));
    }

    /// A norm over the hidden size: `{module}.weight`, and `.bias` with `bias`.
    pub fn norm(&mut self, module: &str, bias: bool) {
        let h = self.hidden;
        self.add(format!("{module}.weight"), &[h]);
        if bias {
            self.add(format!("{module}.bias"), &[h]);
        }
    }
}

/// A model family export supports.
#[derive(Clone, Copy)]
pub struct ModelFamily(&'static dyn Architecture);

impl ModelFamily {
    /// The family of `model_type`, if export supports it.
    pub fn lookup(model_type: &str) -> Option<Self> {
        families().find(|f| f.name() == model_type)
    }

    /// `model_type` in `config.json`.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Decoders are built with a KV cache; the others (BERT) as encoders.
    pub fn is_decoder(self) -> bool {
        matches!(self.0.graph(), Graph::Decoder(_))
    }

    pub(crate) fn arch(self) -> &'static dyn Architecture {
        self.0
    }
}

/// Every family export supports.
pub fn families() -> impl Iterator<Item = ModelFamily> {
    REGISTRY.iter().map(|a| ModelFamily(*a))
}

/// The supported `model_type`s, for messages: "gpt2, gpt_neox, …".
pub fn names() -> String {
    families().map(ModelFamily::name).collect::<Vec<_>>().join(", ")
}

impl PartialEq for ModelFamily {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ModelFamily {}

impl fmt::Debug for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ModelFamily {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::{write_random, HfModel};

    /// Writes a random folder for `family` (as `models synth` does) and checks
    /// export reads exactly the tensors written: the same names, each as the
    /// shape written, every one of them.
    pub(super) fn synth_matches_export(name: &str) {
        let family = ModelFamily::lookup(name).expect("registered");
        for tied in [true, false] {
            let kv_heads = if family.arch().grouped_kv() { 2 } else { 4 };
            let config = Config::new(family, 32, 2, 4, kv_heads, 64, 50, 16, tied);
            let dir = std::env::temp_dir().join(format!("edgehil-arch-{name}-{tied}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            write_random(&config, &dir, 1).unwrap();
            let read = HfModel::open(&dir)
                .map_err(ExportError::from)
                .and_then(|m| crate::export::tensors_read(&m, &dir.join("out")));
            std::fs::remove_dir_all(&dir).unwrap();
            let mut read = read.unwrap();
            // A tied LM head reads the embedding table a second time.
            read.sort();
            read.dedup();
            let mut written = config.tensors();
            written.sort();
            let only_read: Vec<_> = read.iter().filter(|t| !written.contains(t)).collect();
            let only_written: Vec<_> = written.iter().filter(|t| !read.contains(t)).collect();
            assert!(
                only_read.is_empty() && only_written.is_empty(),
                "{name}, tied {tied}: export reads {only_read:?}, which synth does not write; synth writes {only_written:?}, which export does not read"
            );
            assert_eq!(read, written, "{name}, tied {tied}: each tensor once");
        }
    }

    #[test]
    fn every_family_is_registered_once_under_its_model_type() {
        let unique: std::collections::BTreeSet<_> = families().map(ModelFamily::name).collect();
        assert_eq!(unique.len(), REGISTRY.len(), "{}", names());
        assert_eq!(ModelFamily::lookup("llama").map(ModelFamily::name), Some("llama"));
        assert_eq!(ModelFamily::lookup("mamba"), None);
    }
}
