//! Inputs for a run: read from a JSON file, or made from a seed so that the
//! board and the host reference see the same numbers.

use std::path::Path;

use serde::Deserialize;

use edgehil_onnx::rng::SplitMix64;
use edgehil_runtime::wire::{DType, Tensor, TensorInfo, Values};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// the inputs file could not be read
    #[error("cannot read inputs file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    /// the inputs file does not have the expected form
    #[error("inputs file {path}: {message}")]
    Format { path: String, message: String },
    /// a model input whose size is not fixed, with no file to say it
    #[error("input `{input}` has dimensions that are not fixed ({shape}); give them with --inputs FILE")]
    Dynamic { input: String, shape: String },
    /// a prompt longer than the model's positions
    #[error(
        "a {sequence}-token prompt is longer than the model's context of {context} positions; lower --prompt-tokens"
    )]
    TooLong { sequence: u64, context: u64 },
    /// a shape whose element count does not fit in 64 bits
    #[error("input `{input}`: shape {shape} holds more than 2^64 values")]
    TooLarge { input: String, shape: String },
}

/// Elements of a tensor of `shape`; `None` when the count does not fit in a `u64` (or a `usize`).
fn elements(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d)).filter(|n| usize::try_from(*n).is_ok())
}

/// How to make inputs from a seed.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub seed: u64,
    /// Tokens in a prompt, for language models' `sequence` dimension.
    pub sequence: u64,
    /// Token ids are drawn below this.
    pub vocab: u64,
    /// The model's positions, where its manifest gives them.
    pub context: Option<u64>,
}

impl Seeded {
    pub fn new(seed: u64) -> Self {
        Self { seed, sequence: 128, vocab: 100, context: None }
    }

    /// The vocabulary and context from the manifest of an exported model folder, if the model is in one.
    pub fn for_model(seed: u64, model: &Path, sequence: u64) -> Self {
        let manifest = model
            .parent()
            .map(|d| d.join(edgehil_onnx::export::MANIFEST))
            .and_then(|m| std::fs::read_to_string(m).ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let config = |name: &str| manifest.as_ref().and_then(|j| j["config"][name].as_u64());
        Self { seed, sequence, vocab: config("vocab").unwrap_or(100), context: config("max_positions") }
    }
}

/// Seeded inputs: f32 uniform in [-1, 1), i64 uniform in [0, vocab). The
/// inputs of an exported language model (`input_ids`, `attention_mask`,
/// `position_ids`, `token_type_ids`, `past_key_values.*`) get a prompt of
/// `sequence` tokens on an empty cache, batch 1: a prefill.
pub fn seeded(infos: &[TensorInfo], how: &Seeded) -> Result<Vec<Tensor>, InputError> {
    let mut rng = SplitMix64::new(how.seed);
    let t = how.sequence;
    if let Some(context) = how.context.filter(|c| t > *c && infos.iter().any(|i| i.name == "input_ids")) {
        return Err(InputError::TooLong { sequence: t, context });
    }
    infos
        .iter()
        .map(|info| {
            let dynamic = || InputError::Dynamic { input: info.name.clone(), shape: format!("{:?}", info.shape) };
            let past = info.name.starts_with("past_key_values.");
            let known =
                past || ["input_ids", "attention_mask", "position_ids", "token_type_ids"].contains(&info.name.as_str());
            let shape: Vec<u64> = info
                .shape
                .iter()
                .enumerate()
                .map(|(axis, d)| match (d, known) {
                    (Some(d), _) => Ok(*d),
                    (None, true) if axis == 0 => Ok(1),
                    (None, true) if past => Ok(0),
                    (None, true) => Ok(t),
                    (None, false) => Err(dynamic()),
                })
                .collect::<Result<_, _>>()?;
            let n = elements(&shape)
                .ok_or_else(|| InputError::TooLarge { input: info.name.clone(), shape: format!("{shape:?}") })?
                as usize;
            let values = match (info.dtype, info.name.as_str()) {
                (DType::I64, "attention_mask") => Values::I64(vec![1; n]),
                (DType::I64, "position_ids") => Values::I64((0..n as i64).collect()),
                (DType::I64, "token_type_ids") => Values::I64(vec![0; n]),
                (DType::F32, _) => Values::F32(rng.fill(n, 1.0)),
                (DType::I64, _) => Values::I64((0..n).map(|_| (rng.next_u64() % how.vocab) as i64).collect()),
            };
            Ok(Tensor { name: info.name.clone(), shape, values })
        })
        .collect()
}

/// Tokens in a language model's prompt: the elements of its `input_ids`
/// (none for a model without that input).
pub fn prompt_tokens(inputs: &[Tensor]) -> Option<u64> {
    // The shapes were checked when the inputs were made; saturating keeps an unchecked one from wrapping.
    inputs.iter().find(|t| t.name == "input_ids").map(|t| t.shape.iter().fold(1u64, |n, d| n.saturating_mul(*d)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTensor {
    shape: Vec<u64>,
    values: Vec<serde_json::Number>,
}

/// Reads `{"NAME": {"shape": [..], "values": [..]}, ...}` for every model input.
pub fn from_file(path: &Path, infos: &[TensorInfo]) -> Result<Vec<Tensor>, InputError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|cause| InputError::Read { path: shown.clone(), cause })?;
    let format = |message: String| InputError::Format { path: shown.clone(), message };
    let mut file: std::collections::BTreeMap<String, FileTensor> = serde_json::from_str(&text)
        .map_err(|e| format(format!("{e} (expected {{\"NAME\": {{\"shape\": [..], \"values\": [..]}}}})")))?;
    infos
        .iter()
        .map(|info| {
            let t =
                file.remove(&info.name).ok_or_else(|| format(format!("no entry for model input `{}`", info.name)))?;
            let Some(n) = elements(&t.shape) else {
                return Err(format(format!(
                    "`{}`: shape {:?} holds more than 2^64 values, the file has {}",
                    info.name,
                    t.shape,
                    t.values.len()
                )));
            };
            if n != t.values.len() as u64 {
                return Err(format(format!(
                    "`{}`: shape {:?} holds {n} values, the file has {}",
                    info.name,
                    t.shape,
                    t.values.len()
                )));
            }
            let values = match info.dtype {
                DType::F32 => Values::F32(t.values.iter().map(|v| v.as_f64().unwrap_or(f64::NAN) as f32).collect()),
                DType::I64 => Values::I64(
                    t.values
                        .iter()
                        .map(|v| v.as_i64().ok_or_else(|| format(format!("`{}`: {v} is not an integer", info.name))))
                        .collect::<Result<_, _>>()?,
                ),
            };
            Ok(Tensor { name: info.name.clone(), shape: t.shape, values })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| match file.keys().next() {
            Some(extra) => Err(format(format!("`{extra}` is not an input of the model"))),
            None => Ok(v),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, shape: &[Option<u64>]) -> TensorInfo {
        TensorInfo { name: name.into(), dtype: DType::F32, shape: shape.to_vec() }
    }

    #[test]
    fn shapes_whose_element_count_overflows_are_errors_not_zero_values() {
        let huge = [info("x", &[Some(1 << 62), Some(4)])];
        let e = seeded(&huge, &Seeded::new(1)).unwrap_err().to_string();
        assert_eq!(e, "input `x`: shape [4611686018427387904, 4] holds more than 2^64 values");

        let dir = std::env::temp_dir().join(format!("edgehil-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("inputs.json");
        std::fs::write(&file, r#"{"x": {"shape": [4611686018427387904, 4], "values": []}}"#).unwrap();
        let e = from_file(&file, &[info("x", &[None, None])]).unwrap_err().to_string();
        assert!(e.contains("`x`: shape [4611686018427387904, 4] holds more than 2^64 values, the file has 0"), "{e}");
        std::fs::write(&file, r#"{"x": {"shape": [2, 2], "values": [1, 2, 3, 4]}}"#).unwrap();
        assert_eq!(from_file(&file, &[info("x", &[None, None])]).unwrap()[0].shape, [2, 2]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
