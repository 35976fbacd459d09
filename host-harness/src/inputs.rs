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
}

/// Seeded inputs: f32 uniform in [-1, 1), i64 uniform in [0, 100).
pub fn seeded(infos: &[TensorInfo], seed: u64) -> Result<Vec<Tensor>, InputError> {
    let mut rng = SplitMix64::new(seed);
    infos
        .iter()
        .map(|info| {
            let shape: Vec<u64> =
                info.shape.iter().map(|d| d.ok_or(())).collect::<Result<_, _>>().map_err(|()| InputError::Dynamic {
                    input: info.name.clone(),
                    shape: format!("{:?}", info.shape),
                })?;
            let n = shape.iter().product::<u64>() as usize;
            let values = match info.dtype {
                DType::F32 => Values::F32(rng.fill(n, 1.0)),
                DType::I64 => Values::I64((0..n).map(|_| (rng.next_u64() % 100) as i64).collect()),
            };
            Ok(Tensor { name: info.name.clone(), shape, values })
        })
        .collect()
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
            let n: u64 = t.shape.iter().product();
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
