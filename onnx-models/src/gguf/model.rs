//! A GGUF Llama file read as the exporter reads a Hugging Face folder: the
//! configuration from `llama.*` metadata, the tensors under Hugging Face's
//! names, the query and key rows put back in Hugging Face's order.

use std::path::Path;

use super::{GgufError, GgufFile, Value};
use crate::arch::ModelFamily;
use crate::hf::{Config, Keys};

/// A GGUF file of an architecture export supports, with its configuration.
pub struct GgufModel {
    pub file: GgufFile,
    pub config: Config,
}

/// How a Hugging Face tensor is stored in the file.
struct Stored {
    name: String,
    /// llama.cpp's converter interleaves the two rotary halves of each of
    /// this many heads (`permute` in convert_hf_to_gguf.py); reading undoes it.
    permuted_heads: Option<u64>,
}

impl GgufModel {
    /// Opens `path`, reads its configuration and checks every tensor the
    /// configuration needs is there with its shape.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = GgufFile::open(path)?;
        let config = read_config(&file)?;
        let model = Self { file, config };
        model.check()?;
        Ok(model)
    }

    /// Where the file keeps tensor `hf` (a Hugging Face Llama name).
    fn stored(&self, hf: &str) -> Option<Stored> {
        let plain = |name: String| Some(Stored { name, permuted_heads: None });
        match hf {
            "model.embed_tokens.weight" => return plain("token_embd.weight".into()),
            "model.norm.weight" => return plain("output_norm.weight".into()),
            "lm_head.weight" => return plain("output.weight".into()),
            _ => {}
        }
        let (layer, rest) = hf.strip_prefix("model.layers.")?.split_once('.')?;
        let (gguf, permuted_heads) = match rest {
            "input_layernorm.weight" => ("attn_norm", None),
            "post_attention_layernorm.weight" => ("ffn_norm", None),
            "self_attn.q_proj.weight" => ("attn_q", Some(self.config.heads)),
            "self_attn.k_proj.weight" => ("attn_k", Some(self.config.kv_heads)),
            "self_attn.v_proj.weight" => ("attn_v", None),
            "self_attn.o_proj.weight" => ("attn_output", None),
            "mlp.gate_proj.weight" => ("ffn_gate", None),
            "mlp.up_proj.weight" => ("ffn_up", None),
            "mlp.down_proj.weight" => ("ffn_down", None),
            _ => return None,
        };
        Some(Stored { name: format!("blk.{layer}.{gguf}.weight"), permuted_heads })
    }

    fn stored_or_error(&self, hf: &str) -> Result<Stored, GgufError> {
        self.stored(hf).ok_or_else(|| GgufError::Tensor {
            path: self.file.path().into(),
            tensor: hf.into(),
            message: "has no GGUF counterpart for llama".into(),
        })
    }

    /// Checks every tensor the configuration needs is in the file with its shape.
    pub fn check(&self) -> Result<(), GgufError> {
        for (hf, expected) in self.config.tensors() {
            let stored = self.stored_or_error(&hf)?;
            let error = |message: String| GgufError::Tensor {
                path: self.file.path().into(),
                tensor: stored.name.clone(),
                message: format!("{message} (Hugging Face `{hf}`)"),
            };
            let t = self
                .file
                .tensor(&stored.name)
                .ok_or_else(|| error(format!("missing (llama with {} layers needs it)", self.config.layers)))?;
            self.file.check_readable(t)?;
            if t.shape() != expected {
                return Err(error(format!("has shape {:?} (outermost first), expected {expected:?}", t.shape())));
            }
        }
        Ok(())
    }

    /// Tensor `hf` (a Hugging Face name) as fp32, dequantized, in Hugging Face's layout.
    pub fn read_f32(&self, hf: &str) -> Result<Vec<f32>, GgufError> {
        let stored = self.stored_or_error(hf)?;
        let values = self.file.read_f32(&stored.name)?;
        Ok(match stored.permuted_heads {
            Some(heads) => {
                unpermute(&values, heads as usize, self.config.head_dim() as usize, self.config.hidden as usize)
            }
            None => values,
        })
    }
}

/// Undoes convert_hf_to_gguf.py's `permute` of a `[heads·head_dim, cols]`
/// matrix: the file's row `2j + i` of each head is Hugging Face's row
/// `i·head_dim/2 + j` (the rotary halves, interleaved for ggml's rope).
fn unpermute(values: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let from = (h * head_dim + 2 * j + i) * cols;
                let to = (h * head_dim + i * half + j) * cols;
                out[to..to + cols].copy_from_slice(&values[from..from + cols]);
            }
        }
    }
    out
}

/// The exporter's configuration from `llama.*` metadata, each value's key named when it is wrong.
fn read_config(file: &GgufFile) -> Result<Config, GgufError> {
    let arch = file.require("general.architecture", "a string", Value::as_str)?;
    let family = ModelFamily::lookup(arch).filter(|f| f.name() == "llama").ok_or_else(|| {
        file.key_error("general.architecture", format!("`{arch}`: expected llama (the GGUF architecture export reads)"))
    })?;
    let key = |name: &str| format!("{arch}.{name}");
    let whole = |name: &str| file.require(&key(name), "a whole number", Value::as_u64);
    let hidden = whole("embedding_length")?;
    let heads = whole("attention.head_count")?;
    let kv_heads = match file.get(&key("attention.head_count_kv")) {
        None => heads,
        Some(_) => whole("attention.head_count_kv")?,
    };
    let tokens = file.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(|t| t.len() as u64);
    let vocab = match (file.get(&key("vocab_size")), tokens) {
        (Some(_), _) | (None, None) => whole("vocab_size")?,
        (None, Some(n)) => n,
    };
    let mut config = Config::new(
        family,
        hidden,
        whole("block_count")?,
        heads,
        kv_heads,
        whole("feed_forward_length")?,
        vocab,
        whole("context_length")?,
        file.tensor("output.weight").is_none(),
    );
    let number = |name: &str| file.require(&key(name), "a number", Value::as_f64);
    if file.get(&key("rope.freq_base")).is_some() {
        config.rope_theta = number("rope.freq_base")?;
    }
    config.norm_eps = number("attention.layer_norm_rms_epsilon")?;
    // Values that change the computation in ways the graph does not follow.
    if let Some(kind) = file.get(&key("rope.scaling.type")) {
        if kind.as_str() != Some("none") {
            return Err(file.key_error(&key("rope.scaling.type"), format!("{kind:?}: only plain RoPE is exported")));
        }
    }
    if let Some(n) = file.get(&key("expert_count")).and_then(Value::as_u64).filter(|n| *n > 0) {
        return Err(file.key_error(&key("expert_count"), format!("{n}: mixtures of experts are not exported")));
    }
    let keys = Keys {
        hidden: key("embedding_length"),
        layers: key("block_count"),
        heads: key("attention.head_count"),
        kv_heads: key("attention.head_count_kv"),
        intermediate: key("feed_forward_length"),
        vocab: key("vocab_size"),
        max_positions: key("context_length"),
        type_vocab: String::new(),
        rotary: key("rope.dimension_count"),
        rope_theta: key("rope.freq_base"),
        norm_eps: key("attention.layer_norm_rms_epsilon"),
    };
    config.validate_keys(&keys).map_err(|message| GgufError::Config { path: file.path().into(), message })?;
    if let Some(rot) = file.get(&key("rope.dimension_count")) {
        if rot.as_u64() != Some(config.head_dim()) {
            return Err(file.key_error(
                &keys.rotary,
                format!("{rot:?}: expected the head size {} (rotary over whole heads)", config.head_dim()),
            ));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::{unpermute, GgufModel};
    use crate::gguf::GgufError;
    use crate::gguf::GgufFile;

    fn tiny(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/gguf-tiny").join(name)
    }

    /// Q8_0, Q4_0, Q4_1 and F16 tensors of a model read as the `gguf` package dequantizes them
    /// (make_gguf_reference.py), q/k rows back in Hugging Face's order.
    #[test]
    fn quantized_tensors_read_as_the_gguf_package_dequantizes_them() {
        let model = GgufModel::open(&tiny("llama-gqa-quant.gguf")).unwrap();
        let raw = std::fs::read(tiny("dequantized.safetensors")).unwrap();
        let expected = safetensors::SafeTensors::deserialize(&raw).unwrap();
        let mut types = std::collections::BTreeSet::new();
        for (name, view) in expected.tensors() {
            let want: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let stored = model.stored(&name).unwrap().name;
            types.insert(model.file.tensor(&stored).unwrap().ggml_type.to_string());
            assert_eq!(model.read_f32(&name).unwrap(), want, "{name} ({stored})");
        }
        assert_eq!(types.into_iter().collect::<Vec<_>>(), ["F16", "Q4_0", "Q4_1", "Q8_0"]);
    }

    #[test]
    fn five_bit_and_k_quant_blocks_read_as_the_gguf_package_dequantizes_them() {
        let file = GgufFile::open(&tiny("blocks.gguf")).unwrap();
        let raw = std::fs::read(tiny("blocks.safetensors")).unwrap();
        let expected = safetensors::SafeTensors::deserialize(&raw).unwrap();
        let mut names = Vec::new();
        for (name, view) in expected.tensors() {
            let want: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let got = file.read_f32(&name).unwrap();
            assert_eq!(got.len(), want.len(), "{name}");
            // llama.cpp's C may fuse a multiply-add where numpy rounds twice: a few ulps apart at most.
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-3), "{name}[{i}]: {g} vs {w}");
            }
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["Q2_K", "Q3_K", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K"]);
    }

    /// llama.cpp's Q4_0 is the exporter's int4 (block 32, scale = the block's value of largest
    /// magnitude / -8, code + 8): re-quantizing Q4_0 values gives back the same codes and scales.
    #[test]
    fn q4_0_tensors_export_to_int4_exactly() {
        use crate::export::emit::{dequantize_q4, quantize_q4, Mat};
        let model = GgufModel::open(&tiny("llama-gqa-quant.gguf")).unwrap();
        let mut checked = 0;
        for (hf, shape) in model.config.tensors() {
            let stored = model.stored(&hf).unwrap().name;
            if model.file.tensor(&stored).unwrap().ggml_type != crate::gguf::GgmlType::Q4_0 {
                continue;
            }
            let (rows, cols) = (shape[0] as usize, shape[1] as usize);
            let values = model.read_f32(&hf).unwrap();
            let (packed, scales) = quantize_q4(&Mat::new(rows, cols, values.clone()), 32);
            assert_eq!(dequantize_q4(&packed, &scales, rows, cols, 32).data, values, "{hf} ({stored})");
            checked += 1;
        }
        assert!(checked >= 2, "the file has Q4_0 matrices");
    }

    /// Writes `bytes` to a file of its own for the duration of `f`.
    fn with_file<T>(name: &str, bytes: &[u8], f: impl FnOnce(&std::path::Path) -> T) -> T {
        let path = std::env::temp_dir().join(format!("edgehil-{name}-{}.gguf", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let result = f(&path);
        std::fs::remove_file(&path).unwrap();
        result
    }

    #[test]
    fn a_type_not_read_is_refused_at_open_naming_the_tensor_and_type() {
        let mut bytes = std::fs::read(tiny("llama-gqa.gguf")).unwrap();
        // The tensor info: name, 2 dimensions (u32 + 2 × u64), then the type (u32).
        let name = b"blk.1.ffn_up.weight";
        let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
        assert_eq!(bytes[at..at + 4], 2u32.to_le_bytes());
        bytes[at + 20..at + 24].copy_from_slice(&20u32.to_le_bytes()); // IQ4_NL
        let (err, path) = with_file("iq4", &bytes, |p| (GgufModel::open(p).err().unwrap(), p.to_path_buf()));
        assert!(matches!(err, GgufError::TensorType { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: tensor `blk.1.ffn_up.weight` is IQ4_NL; edgehil reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K to Q6_K (re-quantize the file to one of them, e.g. with llama-quantize)",
                path.display()
            )
        );
    }

    #[test]
    fn a_configuration_export_cannot_build_names_the_metadata_key() {
        let mut bytes = std::fs::read(tiny("llama-gqa.gguf")).unwrap();
        // The key (its u64 length, then its bytes), the value type (u32: 4), the value.
        let key = b"llama.attention.head_count";
        let mut needle = (key.len() as u64).to_le_bytes().to_vec();
        needle.extend_from_slice(key);
        let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
        assert_eq!(bytes[at..at + 8], [4, 0, 0, 0, 4, 0, 0, 0], "u32 4");
        bytes[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes());
        let (err, path) = with_file("heads", &bytes, |p| (GgufModel::open(p).err().unwrap(), p.to_path_buf()));
        assert_eq!(
            err.to_string(),
            format!(
                "{}: metadata: field `llama.attention.head_count` = 5: expected a divisor of `llama.embedding_length` = 64 (heads × head size must equal the hidden size)",
                path.display()
            )
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it_and_the_tensor() {
        let bytes = std::fs::read(tiny("llama-gqa.gguf")).unwrap();
        let (err, path) = with_file("truncated", &bytes[..bytes.len() - 100], |p| {
            (GgufModel::open(p).err().unwrap(), p.to_path_buf())
        });
        assert!(matches!(err, GgufError::Tensor { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with(&format!("{}: tensor `", path.display())), "{message}");
        assert!(message.contains("run past the end of the file"), "{message}");
    }

    /// convert_hf_to_gguf.py's `permute`, as written there (reshape, swap, reshape).
    fn permute(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
        let half = head_dim / 2;
        let mut out = vec![0.0; w.len()];
        for h in 0..heads {
            for i in 0..2 {
                for j in 0..half {
                    // (h, i, j) → (h, j, i)
                    let from = ((h * 2 + i) * half + j) * cols;
                    let to = ((h * half + j) * 2 + i) * cols;
                    out[to..to + cols].copy_from_slice(&w[from..from + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_undoes_the_converters_permute() {
        let (heads, hd, cols) = (3, 8, 5);
        let w: Vec<f32> = (0..heads * hd * cols).map(|v| v as f32).collect();
        let p = permute(&w, heads, hd, cols);
        assert_ne!(p, w);
        assert_eq!(unpermute(&p, heads, hd, cols), w);
    }
}
