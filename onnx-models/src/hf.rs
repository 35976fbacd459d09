//! Hugging Face model folders: `config.json` + `model.safetensors`, or its
//! shards and their index (`model.safetensors.index.json`).
//!
//! The weights are memory-mapped, never read whole, so a 1 B-parameter
//! folder costs no RAM until a tensor is touched. [`HfModel::check`] holds
//! the folder against the tensor names and shapes its architecture needs, so
//! a truncated file, a missing tensor or a wrong shape is an error naming the
//! file and the tensor before any export starts. [`write_random`] makes a
//! folder of any supported configuration with random weights, streamed to
//! disk, to measure speed and memory at true size.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::UncheckedAdvice;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::Serialize;

use crate::arch::{ModelFamily, Tensors};
use crate::rng::SplitMix64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    /// a file of the folder could not be read or written
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// config.json is not valid or lacks a field
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// an architecture edgehil does not export
    #[error("{path}: field `model_type`: `{model_type}` is not supported (supported: {})", crate::arch::names())]
    UnknownArchitecture { path: PathBuf, model_type: String },
    /// the safetensors file is damaged
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// a tensor the architecture needs is absent
    #[error("{path}: tensor `{tensor}` is missing ({arch} with {layers} layers needs it)")]
    MissingTensor { path: PathBuf, tensor: String, arch: &'static str, layers: u64 },
    /// a tensor has the wrong shape
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape { path: PathBuf, tensor: String, found: Vec<u64>, expected: Vec<u64> },
    /// config.json's layer count disagrees with the layers the weights hold
    #[error(
        "{config}: field `{field}` = {layers} does not match {weights}, which holds the tensors of {} ({detail})",
        count(*.present, "layer")
    )]
    LayerCount { config: PathBuf, field: String, layers: u64, weights: PathBuf, present: u64, detail: String },
}

/// "1 layer", "2 layers".
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Elements of a tensor of `shape`; `None` when the product does not fit in a `u64`.
pub fn elements(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d))
}

/// The largest size a dimension of config.json may give: every export
/// writes sizes as ONNX's i64 and indexes them as usize, and the product of
/// two stays far from overflowing.
pub const MAX_DIM: u64 = (1 << 31) - 1;

/// Rotary tables (`max_positions × rotary dims`, for cos and for sin) have
/// no tensor in the weights to be checked against; this bounds them (2 GiB
/// each), far above the 1 M-position Llama fine-tunes.
pub const MAX_ROTARY_VALUES: u64 = 1 << 29;

/// The MLP's activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// Exact: 0.5·x·(1 + erf(x/√2)).
    Gelu,
    /// The tanh approximation GPT-2 uses.
    GeluNew,
    Relu,
    /// x·sigmoid(x), gated (SwiGLU) in Llama.
    Silu,
}

impl Act {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Act::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Act::GeluNew),
            "relu" => Some(Act::Relu),
            "silu" | "swish" => Some(Act::Silu),
            _ => None,
        }
    }

    /// The name Hugging Face writes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Act::Gelu => "gelu",
            Act::GeluNew => "gelu_new",
            Act::Relu => "relu",
            Act::Silu => "silu",
        }
    }
}

/// The configuration fields export needs, under one set of names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub arch: ModelFamily,
    pub hidden: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub intermediate: u64,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied_embeddings: bool,
    /// Share of each head's dimensions that get rotary embeddings (NeoX).
    pub rotary_pct: f64,
    pub rope_theta: f64,
    pub norm_eps: f64,
    pub act: Act,
    /// NeoX: attention and MLP read the same input and add to the residual together.
    pub parallel_residual: bool,
    /// BERT's token type vocabulary (0 for decoders).
    pub type_vocab: u64,
    /// Mistral: a query attends to the keys less than this many positions back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<u64>,
    /// OPT-350m (`do_layer_norm_before: false`): each norm follows its residual add.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub post_norm: bool,
    /// OPT-350m's `word_embed_proj_dim`, when it differs from the hidden size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_dim: Option<u64>,
    /// StableLM's `use_qkv_bias`: the q/k/v projections have biases.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qkv_bias: bool,
}

/// The `config.json` keys of a configuration's values, for errors that name them.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub hidden: String,
    pub layers: String,
    pub heads: String,
    pub kv_heads: String,
    pub intermediate: String,
    pub vocab: String,
    pub max_positions: String,
    pub type_vocab: String,
    pub rotary: String,
    pub rope_theta: String,
    pub norm_eps: String,
}

impl Keys {
    /// The keys most families use; a family's [`crate::arch::Architecture::keys`] replaces those it names otherwise.
    pub(crate) fn standard() -> Self {
        Keys {
            hidden: "hidden_size".into(),
            layers: "num_hidden_layers".into(),
            heads: "num_attention_heads".into(),
            kv_heads: "num_key_value_heads".into(),
            intermediate: "intermediate_size".into(),
            vocab: "vocab_size".into(),
            max_positions: "max_position_embeddings".into(),
            type_vocab: "type_vocab_size".into(),
            rotary: "partial_rotary_factor".into(),
            rope_theta: "rope_theta".into(),
            norm_eps: "layer_norm_eps".into(),
        }
    }
}

/// A value of `config.json` export does not follow.
#[derive(Debug)]
pub(crate) struct Unsupported {
    field: &'static str,
    value: serde_json::Value,
    why: &'static str,
}

/// Refuses `json`'s field `name` when present and not `ok`.
pub(crate) fn must(
    json: &serde_json::Value,
    name: &'static str,
    ok: impl Fn(&serde_json::Value) -> bool,
    why: &'static str,
) -> Result<(), Unsupported> {
    match json.get(name) {
        Some(v) if !ok(v) => Err(Unsupported { field: name, value: v.clone(), why }),
        _ => Ok(()),
    }
}

impl Config {
    /// A configuration with Hugging Face's defaults for everything but the sizes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        arch: ModelFamily,
        hidden: u64,
        layers: u64,
        heads: u64,
        kv_heads: u64,
        intermediate: u64,
        vocab: u64,
        max_positions: u64,
        tied_embeddings: bool,
    ) -> Self {
        let d = arch.arch().defaults();
        Config {
            arch,
            hidden,
            layers,
            heads,
            kv_heads,
            intermediate,
            vocab,
            max_positions,
            tied_embeddings,
            rotary_pct: d.rotary_pct,
            rope_theta: 10000.0,
            norm_eps: d.norm_eps,
            act: d.act,
            parallel_residual: d.parallel_residual,
            type_vocab: d.type_vocab,
            sliding_window: None,
            post_norm: false,
            embed_dim: None,
            qkv_bias: false,
        }
    }

    /// Dimensions of each head that get rotary embeddings (0: none, learned positions).
    pub fn rotary_dims(&self) -> u64 {
        if self.arch.arch().rotary() {
            (self.head_dim() as f64 * self.rotary_pct) as u64
        } else {
            0
        }
    }

    /// Dimensions of each head (0 for a configuration without heads, which [`Config::validate`] refuses).
    pub fn head_dim(&self) -> u64 {
        self.hidden.checked_div(self.heads).unwrap_or(0)
    }

    /// Checks every size is one an export can be built for: positive, at
    /// most [`MAX_DIM`], heads dividing the hidden size and key/value heads
    /// dividing the heads, rotary dimensions even. The error names the field
    /// of `config.json` and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_keys(&self.arch.arch().keys())
    }

    pub(crate) fn validate_keys(&self, k: &Keys) -> Result<(), String> {
        let mut dims = vec![
            (&k.hidden, self.hidden),
            (&k.layers, self.layers),
            (&k.heads, self.heads),
            (&k.kv_heads, self.kv_heads),
            (&k.intermediate, self.intermediate),
            (&k.vocab, self.vocab),
            (&k.max_positions, self.max_positions),
        ];
        // Families with token types (BERT) have a default vocabulary of them.
        if self.arch.arch().defaults().type_vocab > 0 {
            dims.push((&k.type_vocab, self.type_vocab));
        }
        for (key, v) in dims {
            if v == 0 {
                return Err(format!("field `{key}` = 0: expected a positive whole number"));
            }
            if v > MAX_DIM {
                return Err(format!("field `{key}` = {v}: expected at most {MAX_DIM}"));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(format!(
                "field `{}` = {}: expected a divisor of `{}` = {} (heads × head size must equal the hidden size)",
                k.heads, self.heads, k.hidden, self.hidden
            ));
        }
        if self.arch.arch().grouped_kv() {
            if !self.heads.is_multiple_of(self.kv_heads) {
                return Err(format!(
                    "field `{}` = {}: expected a divisor of `{}` = {} (each key/value head serves an equal group of query heads)",
                    k.kv_heads, self.kv_heads, k.heads, self.heads
                ));
            }
        } else if self.kv_heads != self.heads {
            return Err(format!(
                "field `{}` = {}: expected `{}` = {} ({} attention has as many key/value heads as query heads)",
                k.kv_heads,
                self.kv_heads,
                k.heads,
                self.heads,
                self.arch.name()
            ));
        }
        if self.arch.arch().rotary() {
            if !(self.rotary_pct > 0.0 && self.rotary_pct <= 1.0) {
                return Err(format!(
                    "field `{}` = {}: expected a share above 0 and at most 1",
                    k.rotary, self.rotary_pct
                ));
            }
            let (rot, hd) = (self.rotary_dims(), self.head_dim());
            if rot < 2 || !rot.is_multiple_of(2) {
                return Err(format!(
                    "field `{}` = {} gives {rot} rotary dimensions of each head's {hd} (`{}` / `{}`): expected an even number, at least 2",
                    k.rotary, self.rotary_pct, k.hidden, k.heads
                ));
            }
            if self.max_positions * rot > MAX_ROTARY_VALUES {
                return Err(format!(
                    "field `{}` = {}: expected at most {} (the rotary tables, {rot} values per position, are written into the export)",
                    k.max_positions,
                    self.max_positions,
                    MAX_ROTARY_VALUES / rot
                ));
            }
            if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
                return Err(format!("field `{}` = {}: expected a positive number", k.rope_theta, self.rope_theta));
            }
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(format!("field `{}` = {}: expected a number of at least 0", k.norm_eps, self.norm_eps));
        }
        Ok(())
    }

    /// Reads `config.json`, naming the field that is missing or wrong.
    pub fn read(path: &Path) -> Result<Self, HfError> {
        Self::read_keys(path).map(|(config, _)| config)
    }

    /// Reads `config.json`, with the keys the sizes came from.
    fn read_keys(path: &Path) -> Result<(Self, Keys), HfError> {
        let text = std::fs::read_to_string(path).map_err(|cause| HfError::Io { path: path.into(), cause })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| HfError::Config { path: path.into(), message: e.to_string() })?;
        let field = |names: &[&str]| -> Result<u64, HfError> {
            names.iter().find_map(|n| json.get(*n).and_then(serde_json::Value::as_u64)).ok_or_else(|| HfError::Config {
                path: path.into(),
                message: format!("field `{}` is missing or not a whole number", names[0]),
            })
        };
        let model_type = json.get("model_type").and_then(|v| v.as_str()).unwrap_or_default();
        let family = ModelFamily::lookup(model_type)
            .ok_or_else(|| HfError::UnknownArchitecture { path: path.into(), model_type: model_type.into() })?;
        let arch = family.arch();
        let unsupported = |field: &str, value: &serde_json::Value, why: &str| HfError::Config {
            path: path.into(),
            message: format!("field `{field}`: {value} is not supported ({why})"),
        };
        // The key a value was read from, or the key Hugging Face writes when none is there.
        let key = |names: &[&str], default: &str| -> String {
            names.iter().find(|n| json.get(**n).is_some_and(|v| !v.is_null())).copied().unwrap_or(default).to_string()
        };
        let mut keys = arch.keys();
        keys.hidden = key(&["hidden_size", "n_embd"], &keys.hidden);
        keys.layers = key(&["num_hidden_layers", "n_layer"], &keys.layers);
        keys.heads = key(&["num_attention_heads", "n_head"], &keys.heads);
        keys.max_positions = key(&["max_position_embeddings", "n_positions"], &keys.max_positions);
        keys.norm_eps = key(&["layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps"], &keys.norm_eps);
        let hidden = field(&["hidden_size", "n_embd"])?;
        let heads = field(&["num_attention_heads", "n_head"])?;
        let intermediate = match arch.default_intermediate(hidden) {
            Some(default) => json.get(&keys.intermediate).and_then(serde_json::Value::as_u64).unwrap_or(default),
            None => field(&[keys.intermediate.as_str()])?,
        };
        let tied = json
            .get("tie_word_embeddings")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(arch.defaults().tied_embeddings);
        let mut config = Config::new(
            family,
            hidden,
            field(&["num_hidden_layers", "n_layer"])?,
            heads,
            json.get("num_key_value_heads").and_then(serde_json::Value::as_u64).unwrap_or(heads),
            intermediate,
            field(&["vocab_size"])?,
            field(&["max_position_embeddings", "n_positions"])?,
            tied,
        );
        let float = |names: &[&str]| names.iter().find_map(|n| json.get(*n).and_then(serde_json::Value::as_f64));
        // Newer transformers keep RoPE settings in `rope_parameters`.
        let rope = json.get("rope_parameters").or_else(|| json.get("rope_scaling")).filter(|v| !v.is_null());
        if let Some(rope) = rope {
            let kind = rope.get("rope_type").or_else(|| rope.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
            if kind != "default" {
                let name = if json.get("rope_parameters").is_some() { "rope_parameters" } else { "rope_scaling" };
                return Err(unsupported(name, rope, "only plain RoPE is exported"));
            }
        }
        let rope_name =
            if json.get("rope_parameters").is_some_and(|v| !v.is_null()) { "rope_parameters" } else { "rope_scaling" };
        let rope_theta = rope.and_then(|r| r.get("rope_theta")).and_then(serde_json::Value::as_f64);
        keys.rope_theta = match rope_theta {
            Some(_) => format!("{rope_name}.rope_theta"),
            None => key(&["rope_theta", "rotary_emb_base"], &keys.rope_theta),
        };
        config.rope_theta = rope_theta.or_else(|| float(&["rope_theta", "rotary_emb_base"])).unwrap_or(10000.0);
        let partial = rope.and_then(|r| r.get("partial_rotary_factor")).and_then(serde_json::Value::as_f64);
        keys.rotary = match partial {
            Some(_) => format!("{rope_name}.partial_rotary_factor"),
            None => key(&["rotary_pct", "partial_rotary_factor"], &keys.rotary),
        };
        config.rotary_pct =
            partial.or_else(|| float(&["rotary_pct", "partial_rotary_factor"])).unwrap_or(config.rotary_pct);
        config.norm_eps = float(&["layer_norm_epsilon", "layer_norm_eps", "rms_norm_eps"]).unwrap_or(config.norm_eps);
        config.type_vocab =
            json.get("type_vocab_size").and_then(serde_json::Value::as_u64).unwrap_or(config.type_vocab);
        if let Some(p) = json.get("use_parallel_residual").and_then(serde_json::Value::as_bool) {
            config.parallel_residual = p;
        }
        for name in ["hidden_act", "activation_function"] {
            if let Some(v) = json.get(name) {
                config.act = v
                    .as_str()
                    .and_then(Act::parse)
                    .map(|a| arch.act(a))
                    .ok_or_else(|| unsupported(name, v, "expected gelu, gelu_new, relu or silu"))?;
            }
        }
        let whole = |name: &str| json.get(name).and_then(serde_json::Value::as_u64);
        config.sliding_window = whole("sliding_window");
        if config.sliding_window == Some(0) {
            return Err(unsupported("sliding_window", &json["sliding_window"], "expected a positive window or null"));
        }
        config.post_norm = json.get("do_layer_norm_before").and_then(serde_json::Value::as_bool) == Some(false);
        config.embed_dim = whole("word_embed_proj_dim").filter(|d| *d != hidden);
        if let Some(d) = config.embed_dim.filter(|d| *d == 0 || *d > MAX_DIM) {
            return Err(unsupported(
                "word_embed_proj_dim",
                &json["word_embed_proj_dim"],
                &format!("expected 1 to {MAX_DIM}, got {d}"),
            ));
        }
        config.qkv_bias = json.get("use_qkv_bias").and_then(serde_json::Value::as_bool).unwrap_or(false);
        // Values that change the computation in ways the builders do not follow: the
        // family's own, then fields that only one family writes, refused wherever they appear.
        let refused = |u: Unsupported| unsupported(u.field, &u.value, u.why);
        arch.check_config(&json).map_err(refused)?;
        let is_false = |v: &serde_json::Value| v.as_bool() == Some(false) || v.is_null();
        [
            must(&json, "position_embedding_type", |v| v.as_str() == Some("absolute"), "absolute positions only"),
            must(&json, "scale_attn_by_inverse_layer_idx", is_false, "GPT-2 standard attention scaling only"),
        ]
        .into_iter()
        .collect::<Result<(), _>>()
        .map_err(refused)?;
        config.validate_keys(&keys).map_err(|message| HfError::Config { path: path.into(), message })?;
        // Export takes a head's size to be hidden / heads; a config that says otherwise is another model.
        if let Some(head_dim) = json.get("head_dim").and_then(serde_json::Value::as_u64) {
            if head_dim != config.head_dim() {
                return Err(HfError::Config {
                    path: path.into(),
                    message: format!(
                        "field `head_dim` = {head_dim}: expected `{}` / `{}` = {} (heads × head_dim must equal the hidden size)",
                        keys.hidden,
                        keys.heads,
                        config.head_dim()
                    ),
                });
            }
        }
        Ok((config, keys))
    }

    /// `config.json` as Hugging Face writes it for this family.
    pub fn to_hf_json(&self) -> serde_json::Value {
        self.arch.arch().to_hf_json(self)
    }

    /// Every tensor the family needs, with its shape, in Hugging Face's names.
    pub fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        self.tensors_of(0..self.layers, true)
    }

    /// The tensors of layer `l` alone.
    pub fn layer_tensors(&self, l: u64) -> Vec<(String, Vec<u64>)> {
        self.tensors_of(l..l + 1, false)
    }

    /// The prefix of the layers' tensor names (`model.layers.` for `model.layers.{l}.…`).
    pub fn layer_prefix(&self) -> &'static str {
        self.arch.arch().layer_prefix()
    }

    fn tensors_of(&self, layers: std::ops::Range<u64>, outer: bool) -> Vec<(String, Vec<u64>)> {
        let mut t = Tensors::new(self.hidden);
        self.arch.arch().tensors(self, layers, outer, &mut t);
        t.list
    }
}

/// The prefixes checkpoints saved from a model with a task head put on
/// the base model's names (`transformer.` for GPT-2, `bert.` for BERT).
fn head_prefixes() -> impl Iterator<Item = &'static str> {
    crate::arch::families().filter_map(|f| f.arch().head_prefix())
}

/// An opened folder: the configuration and the mapped weights.
pub struct HfModel {
    pub dir: PathBuf,
    pub config: Config,
    keys: Keys,
    /// The file that lists the tensors: `model.safetensors`, or the index of a sharded checkpoint.
    weights_path: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → its shard, from the index (`None`: one file).
    weight_map: Option<std::collections::HashMap<String, usize>>,
}

/// One mapped safetensors file of the weights.
struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl Shard {
    fn open(path: PathBuf) -> Result<Self, HfError> {
        let file = std::fs::File::open(&path).map_err(|cause| HfError::Io { path: path.clone(), cause })?;
        // SAFETY: the map is read-only; a file changed underneath would only give wrong weights.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|cause| HfError::Io { path: path.clone(), cause })?;
        Ok(Shard { path, map })
    }

    /// The parsed safetensors header over the mapped bytes.
    fn tensors(&self) -> Result<safetensors::SafeTensors<'_>, HfError> {
        safetensors::SafeTensors::deserialize(&self.map)
            .map_err(|e| HfError::Safetensors { path: self.path.clone(), message: e.to_string() })
    }
}

/// The index of a sharded checkpoint (`model.safetensors.index.json`).
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// Reads a sharded checkpoint's index: the shard files (in name order) and
/// each tensor's shard. Shard names must be plain file names of the folder.
fn read_index(index: &Path) -> Result<(Vec<PathBuf>, std::collections::HashMap<String, usize>), HfError> {
    let bad = |message: String| HfError::Config { path: index.into(), message };
    let text = std::fs::read_to_string(index).map_err(|cause| HfError::Io { path: index.into(), cause })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("field `weight_map` is missing or not an object of tensor name → file".into()))?;
    let mut files: Vec<&str> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().filter(|f| !f.is_empty() && Path::new(f).file_name() == Some(f.as_ref())).ok_or_else(
            || bad(format!("field `weight_map.{name}` = {file}: expected the file name of a shard in this folder")),
        )?;
        files.push(file);
    }
    files.sort_unstable();
    files.dedup();
    if files.is_empty() {
        return Err(bad("field `weight_map` is empty: expected the tensors and their shards".into()));
    }
    let of = |f: &str| files.binary_search(&f).expect("listed");
    let where_ = map.iter().map(|(name, file)| (name.clone(), of(file.as_str().expect("checked")))).collect();
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok((files.iter().map(|f| dir.join(f)).collect(), where_))
}

impl HfModel {
    /// Opens the folder: config.json read and checked, the weights mapped
    /// (`model.safetensors`, or the shards [`SHARD_INDEX`] lists) and their
    /// headers parsed, and the layer count held against the layers whose
    /// tensors the weights hold. Nothing is allocated in proportion to the
    /// configuration's sizes before they agree with the weights.
    pub fn open(dir: &Path) -> Result<Self, HfError> {
        let (config, keys) = Config::read_keys(&dir.join("config.json"))?;
        let single = dir.join("model.safetensors");
        let index = dir.join(SHARD_INDEX);
        let (weights_path, shards, weight_map) = if !single.exists() && index.exists() {
            let (files, map) = read_index(&index)?;
            let shards = files.into_iter().map(Shard::open).collect::<Result<Vec<_>, _>>()?;
            (index, shards, Some(map))
        } else {
            (single.clone(), vec![Shard::open(single)?], None)
        };
        let model = Self { dir: dir.into(), config, keys, weights_path, shards, weight_map };
        let mut names = Vec::new();
        for shard in &model.shards {
            names.extend(shard.tensors()?.names().into_iter().map(String::from));
        }
        model.check_layers(&names)?;
        Ok(model)
    }

    /// The layer count of config.json against the layers whose tensors are
    /// in the weights (`names`, every shard's), before any list of `layers`
    /// entries is made: a count the weights do not hold is an error naming
    /// the first missing tensor (or the first tensor of a layer past the count).
    fn check_layers(&self, names: &[String]) -> Result<(), HfError> {
        let layers = self.config.layers;
        let prefix = self.config.layer_prefix();
        let mut present = std::collections::BTreeSet::new();
        let mut past: Option<(u64, String)> = None;
        for name in names {
            let base = head_prefixes().find_map(|p| name.strip_prefix(p)).unwrap_or(name);
            let Some(l) = base.strip_prefix(prefix).and_then(|r| r.split_once('.')).and_then(|(l, _)| l.parse().ok())
            else {
                continue;
            };
            present.insert(l);
            if l >= layers && past.as_ref().is_none_or(|(p, n)| (l, name) < (*p, n)) {
                past = Some((l, name.to_string()));
            }
        }
        let error = |detail: String| HfError::LayerCount {
            config: self.dir.join("config.json"),
            field: self.keys.layers.clone(),
            layers,
            weights: self.weights_path.clone(),
            present: present.len() as u64,
            detail,
        };
        // The first layer without tensors is at most the number of layers present.
        if let Some(missing) = (0..layers).find(|l| !present.contains(l)) {
            let tensor = self.config.layer_tensors(missing).swap_remove(0).0;
            return Err(error(format!("tensor `{tensor}` is missing")));
        }
        if let Some((_, tensor)) = past {
            return Err(error(format!("tensor `{tensor}` is past the last layer")));
        }
        Ok(())
    }

    /// Checks every tensor the architecture needs is there with its shape.
    pub fn check(&self) -> Result<(), HfError> {
        for (name, expected) in self.config.tensors() {
            let (shard, view) = self.find(&name)?;
            let found: Vec<u64> = view.shape().iter().map(|d| *d as u64).collect();
            if found != expected {
                return Err(HfError::Shape { path: shard.path.clone(), tensor: name, found, expected });
            }
        }
        Ok(())
    }

    /// A tensor by its Hugging Face name, as it is or under a [`head_prefixes`]
    /// prefix, with the shard that holds it.
    fn find(&self, name: &str) -> Result<(&Shard, TensorView<'_>), HfError> {
        let mut names = std::iter::once(name.to_string()).chain(head_prefixes().map(|p| format!("{p}{name}")));
        let missing = || HfError::MissingTensor {
            path: self.weights_path.clone(),
            tensor: name.into(),
            arch: self.config.arch.name(),
            layers: self.config.layers,
        };
        let Some(map) = &self.weight_map else {
            let st = self.shards[0].tensors()?;
            let view = names.find_map(|n| st.tensor(&n).ok()).ok_or_else(missing)?;
            return Ok((&self.shards[0], view));
        };
        let (full, i) = names.find_map(|n| map.get(&n).map(|i| (n, *i))).ok_or_else(missing)?;
        let shard = &self.shards[i];
        let view = shard.tensors()?.tensor(&full).map_err(|_| HfError::Safetensors {
            path: shard.path.clone(),
            message: format!("{SHARD_INDEX} places tensor `{full}` in this shard, which does not hold it"),
        })?;
        Ok((shard, view))
    }

    /// A stored tensor as it is, from whichever shard holds it; `None` if none does.
    pub fn view(&self, name: &str) -> Option<TensorView<'_>> {
        self.find(name).ok().map(|(_, view)| view)
    }

    /// A tensor as fp32 values (stored as F32, F16 or BF16). Its pages of the
    /// map are released afterwards, so reading a whole model through the map
    /// never holds more than one tensor of it resident.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, HfError> {
        let (shard, view) = self.find(name)?;
        let bytes = view.data();
        let values = to_f32(&view).ok_or_else(|| HfError::Safetensors {
            path: shard.path.clone(),
            message: format!("tensor `{name}` is {:?}; expected F32, F16 or BF16", view.dtype()),
        })?;
        let offset = bytes.as_ptr() as usize - shard.map.as_ptr() as usize;
        // SAFETY: the map is private and read-only; dropped pages are read back from the file if touched again.
        // Failing to drop them only costs memory, so the result is ignored.
        let _ = unsafe { shard.map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, bytes.len()) };
        Ok(values)
    }

    /// The file that lists the tensors: `model.safetensors`, or [`SHARD_INDEX`].
    pub fn weights_path(&self) -> &Path {
        &self.weights_path
    }

    /// Every file of the weights: the index (when sharded) and each shard.
    pub fn weight_files(&self) -> Vec<&Path> {
        let index = self.weight_map.as_ref().map(|_| self.weights_path.as_path());
        index.into_iter().chain(self.shards.iter().map(|s| s.path.as_path())).collect()
    }
}

/// A tensor's values as fp32, when it is stored as F32, F16 or BF16 (else `None`).
pub(crate) fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let bytes = view.data();
    Some(match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Writes a folder for `config` with weights uniform in ±0.02 (norm weights 1),
/// streaming the safetensors file so memory stays flat at any size.
pub fn write_random(config: &Config, dir: &Path, seed: u64) -> Result<u64, HfError> {
    fn io(path: &Path) -> impl Fn(std::io::Error) -> HfError + '_ {
        move |cause| HfError::Io { path: path.into(), cause }
    }
    let config_path = dir.join("config.json");
    config.validate().map_err(|message| HfError::Config { path: config_path.clone(), message })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let text = serde_json::to_string_pretty(&config.to_hf_json()).expect("json");
    std::fs::write(&config_path, text).map_err(io(&config_path))?;

    let tensors = config.tensors();
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    let too_big = |name: &str| HfError::Config {
        path: config_path.clone(),
        message: format!("{name} would take more than 2^64 bytes"),
    };
    for (name, shape) in &tensors {
        let bytes =
            elements(shape).and_then(|n| n.checked_mul(4)).ok_or_else(|| too_big(&format!("tensor `{name}`")))?;
        let end = offset.checked_add(bytes).ok_or_else(|| too_big("all tensors together"))?;
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut header = serde_json::to_vec(&header).expect("json");
    // The format pads the header with spaces to a multiple of 8.
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let path = dir.join("model.safetensors");
    let tmp = dir.join("model.safetensors.tmp");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io(&tmp))?);
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io(&tmp))?;
    out.write_all(&header).map_err(io(&tmp))?;
    let mut rng = SplitMix64::new(seed);
    for (name, shape) in &tensors {
        let n = elements(shape).ok_or_else(|| too_big(&format!("tensor `{name}`")))?;
        let is_norm = shape.len() == 1 && name.ends_with(".weight");
        for _ in 0..n {
            let v = if is_norm { 1.0 } else { rng.symmetric() * 0.02 };
            out.write_all(&v.to_le_bytes()).map_err(io(&tmp))?;
        }
    }
    out.into_inner()
        .map_err(|e| HfError::Io { path: tmp.clone(), cause: e.into_error() })?
        .sync_all()
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(offset)
}
