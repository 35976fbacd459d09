//! GPTQ checkpoints (AutoGPTQ / GPTQModel): Hugging Face folders whose linear
//! layers are `qweight` / `qzeros` / `scales` / `g_idx` instead of `weight`.
//!
//! The codes are kept as they are: each layer becomes the exporter's 4-bit
//! `MatMulNBits` (blocks of 32, the group's fp16 scale repeated over its
//! blocks, exact), with zero points only when they are not all 8. With all
//! zeros 8 it is the same node `--quant int4` writes, which tract loads as
//! Q4_0; other zero points tract's own import carries as a per-block
//! correction. Act-order checkpoints (`desc_act`) store each group's input
//! channels scattered (`g_idx`); export orders the rows by group and gathers
//! the layer's input in that order, so every group is contiguous again.
//! What the layout cannot hold (not 4 bits, groups not a multiple of 32,
//! groups of unequal sizes) is refused when the folder is opened.

use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::export::emit::Packed4;
use crate::export::{ExportError, SourceSummary, Weights};
use crate::hf::{Config, HfModel};

/// Values of 32 along K share one scale in the exporter's int4 (and tract's Q4_0).
const BLOCK: usize = 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GptqError {
    /// the quantization settings are missing, malformed or not importable
    #[error("{path}: {message}")]
    Settings { path: PathBuf, message: String },
    /// a quantized layer's tensors are missing or not what the settings say
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
}

/// The checkpoint's `quantization_config` (config.json) or `quantize_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqSettings {
    /// Input channels per group; `None`: one group for the whole row (`group_size: -1`).
    pub group: Option<usize>,
    pub act_order: bool,
    pub sym: bool,
    /// AutoGPTQ's v1 layout (`checkpoint_format: gptq`, the default) stores
    /// each zero point minus one; `gptq_v2` stores it as it is.
    pub zeros_minus_one: bool,
    /// The file the settings came from.
    pub file: PathBuf,
}

impl GptqSettings {
    /// The settings of the folder `dir`, `None` when it is not quantized.
    pub fn read(dir: &Path) -> Result<Option<Self>, GptqError> {
        let read_json = |path: &Path| -> Result<serde_json::Value, GptqError> {
            let settings = |message: String| GptqError::Settings { path: path.into(), message };
            let text = std::fs::read_to_string(path).map_err(|e| settings(e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| settings(e.to_string()))
        };
        let config = dir.join("config.json");
        let json = read_json(&config)?;
        let (file, q, field) = match json.get("quantization_config").filter(|v| !v.is_null()) {
            Some(q) => (config, q.clone(), "quantization_config."),
            None => {
                let file = dir.join("quantize_config.json");
                if !file.is_file() {
                    return Ok(None);
                }
                let q = read_json(&file)?;
                (file, q, "")
            }
        };
        let refuse = |key: &str, message: String| GptqError::Settings {
            path: file.clone(),
            message: format!("field `{field}{key}`: {message}"),
        };
        if let Some(method) = q.get("quant_method") {
            if method.as_str() != Some("gptq") {
                return Err(refuse("quant_method", format!("{method} is not imported (GPTQ checkpoints only)")));
            }
        }
        let bits = q.get("bits").and_then(serde_json::Value::as_u64);
        if bits != Some(4) {
            let found = q.get("bits").map_or("missing".into(), ToString::to_string);
            return Err(refuse("bits", format!("{found}: only 4-bit GPTQ is imported (MatMulNBits, tract's Q4_0)")));
        }
        let group = match q.get("group_size").and_then(serde_json::Value::as_i64) {
            Some(-1) => None,
            Some(g) if g > 0 && (g as usize).is_multiple_of(BLOCK) => Some(g as usize),
            _ => {
                let found = q.get("group_size").map_or("missing".into(), ToString::to_string);
                return Err(refuse(
                    "group_size",
                    format!("{found}: expected -1 or a multiple of {BLOCK} (4-bit blocks hold {BLOCK} values with one scale)"),
                ));
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, GptqError> {
            match q.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => v.as_bool().ok_or_else(|| refuse(key, format!("{v}: expected true or false"))),
            }
        };
        let zeros_minus_one = match q.get("checkpoint_format").and_then(serde_json::Value::as_str) {
            None | Some("gptq") => true,
            Some("gptq_v2") => false,
            Some(other) => {
                return Err(refuse("checkpoint_format", format!("`{other}`: expected gptq or gptq_v2")));
            }
        };
        Ok(Some(Self { group, act_order: flag("desc_act", false)?, sym: flag("sym", true)?, zeros_minus_one, file }))
    }
}

/// Export's reader for `model`: the GPTQ reader when the folder is a GPTQ
/// checkpoint, the folder as it is otherwise; either checked against the
/// tensors its architecture needs.
pub(crate) fn open(model: HfModel) -> Result<Box<dyn Weights>, ExportError> {
    match GptqSettings::read(&model.dir)? {
        None => {
            model.check()?;
            Ok(Box::new(model))
        }
        Some(settings) => {
            let model = GptqModel { hf: model, settings };
            model.check()?;
            Ok(Box::new(model))
        }
    }
}

/// A GPTQ folder: the quantized layers read from their codes, every other
/// tensor as the folder holds it.
pub struct GptqModel {
    pub hf: HfModel,
    pub settings: GptqSettings,
}

/// A quantized layer's tensors, as stored.
struct Stored<'a> {
    /// `qweight`'s shape: `[K/8, N]`.
    shape: Vec<usize>,
    qweight: &'a [u8],
    qzeros: &'a [u8],
    scales: &'a [u8],
    g_idx: Option<&'a [u8]>,
}

impl GptqModel {
    fn tensor_error(&self, tensor: &str, message: String) -> GptqError {
        GptqError::Tensor { path: self.hf.weights_path().into(), tensor: tensor.into(), message }
    }

    /// Whether `module` is stored quantized (it has a `qweight`).
    fn quantized(&self, module: &str) -> Result<bool, ExportError> {
        Ok(self.hf.view(&format!("{module}.qweight")).is_some())
    }

    /// `(groups, group)` of a layer with `k` inputs.
    fn groups(&self, module: &str, k: usize) -> Result<(usize, usize), GptqError> {
        let group = self.settings.group.unwrap_or(k);
        if !k.is_multiple_of(group) || !k.is_multiple_of(BLOCK) {
            return Err(self.tensor_error(
                &format!("{module}.qweight"),
                format!("{k} input channels are not a whole number of groups of {group} (and of blocks of {BLOCK})"),
            ));
        }
        Ok((k / group, group))
    }

    /// Checks the quantized layers' tensors against the settings and every other tensor's shape.
    fn check(&self) -> Result<(), ExportError> {
        for (name, shape) in self.hf.config.tensors() {
            let module = name.strip_suffix(".weight").unwrap_or(&name);
            if !(shape.len() == 2 && self.quantized(module)?) {
                let found = self
                    .hf
                    .view(&name)
                    .ok_or_else(|| self.tensor_error(&name, "is missing (and there is no `qweight` for it)".into()))?;
                let found: Vec<u64> = found.shape().iter().map(|d| *d as u64).collect();
                if found != shape {
                    return Err(self.tensor_error(&name, format!("has shape {found:?}, expected {shape:?}")).into());
                }
                continue;
            }
            let (n, k) = (shape[0] as usize, shape[1] as usize);
            let (groups, _) = self.groups(module, k)?;
            let expect = [
                ("qweight", Dtype::I32, vec![k / 8, n]),
                ("qzeros", Dtype::I32, vec![groups, n / 8]),
                ("scales", Dtype::F16, vec![groups, n]),
                ("g_idx", Dtype::I32, vec![k]),
            ];
            for (part, dtype, dims) in expect {
                let tensor = format!("{module}.{part}");
                let view = match self.hf.view(&tensor) {
                    Some(view) => view,
                    None if part == "g_idx" => continue,
                    None => return Err(self.tensor_error(&tensor, "is missing".into()).into()),
                };
                if view.dtype() != dtype || view.shape() != dims || !n.is_multiple_of(8) {
                    return Err(self
                        .tensor_error(
                            &tensor,
                            format!(
                                "is {:?} {:?}, expected {dtype:?} {dims:?} (4-bit GPTQ of a [{n}, {k}] weight, groups of {})",
                                view.dtype(),
                                view.shape(),
                                k / groups
                            ),
                        )
                        .into());
                }
            }
        }
        Ok(())
    }

    fn stored(&self, module: &str) -> Result<Stored<'_>, ExportError> {
        let get = |part: &str| {
            self.hf
                .view(&format!("{module}.{part}"))
                .map(|v| v.data())
                .ok_or_else(|| ExportError::from(self.tensor_error(&format!("{module}.{part}"), "is missing".into())))
        };
        let shape = self.hf.view(&format!("{module}.qweight")).map(|v| v.shape().to_vec()).unwrap_or_default();
        Ok(Stored {
            shape,
            qweight: get("qweight")?,
            qzeros: get("qzeros")?,
            scales: get("scales")?,
            g_idx: self.hf.view(&format!("{module}.g_idx")).map(|v| v.data()),
        })
    }
}

fn i32s(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The order of the K rows that makes each group contiguous (`None`: they
/// already are): channels sorted by group, each group exactly `group` long.
fn group_order(g_idx: &[u32], group: usize, groups: usize) -> Result<Option<Vec<i64>>, String> {
    let mut count = vec![0usize; groups];
    for g in g_idx {
        *count.get_mut(*g as usize).ok_or_else(|| format!("names group {g}, past the last of {groups}"))? += 1;
    }
    if let Some((g, n)) = count.iter().enumerate().find(|(_, n)| **n != group) {
        return Err(format!(
            "puts {n} input channels in group {g}, expected the group size {group} in every group (a layout 4-bit blocks cannot hold)"
        ));
    }
    if g_idx.iter().enumerate().all(|(i, g)| *g as usize == i / group) {
        return Ok(None);
    }
    let mut order: Vec<i64> = (0..g_idx.len() as i64).collect();
    order.sort_by_key(|i| g_idx[*i as usize]);
    Ok(Some(order))
}

impl Weights for GptqModel {
    fn config(&self) -> &Config {
        &self.hf.config
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, ExportError> {
        match name.strip_suffix(".weight").map(|m| self.packed(m)).transpose()?.flatten() {
            Some(packed) => Ok(packed.dequantize().data),
            None => Ok(self.hf.read_f32(name)?),
        }
    }

    fn write_files(&self, dir: &Path) -> Result<SourceSummary, ExportError> {
        self.hf.write_files(dir)
    }

    fn packed(&self, module: &str) -> Result<Option<Packed4>, ExportError> {
        if !self.quantized(module)? {
            return Ok(None);
        }
        let s = self.stored(module)?;
        let (k, n) = (s.shape[0] * 8, s.shape[1]);
        let (groups, group) = self.groups(module, k)?;
        let g_idx: Vec<u32> = match s.g_idx {
            Some(bytes) => i32s(bytes).collect(),
            None => (0..k).map(|i| (i / group) as u32).collect(),
        };
        let order = group_order(&g_idx, group, groups).map_err(|m| self.tensor_error(&format!("{module}.g_idx"), m))?;
        let qweight: Vec<u32> = i32s(s.qweight).collect();
        let qzeros: Vec<u32> = i32s(s.qzeros).collect();
        let scales: Vec<f32> =
            s.scales.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        let nibble = |word: u32, i: usize| ((word >> (4 * (i % 8))) & 15) as u8;
        let shift = u8::from(self.settings.zeros_minus_one);
        let mut zero_of = vec![0u8; groups * n];
        for (g, z) in zero_of.iter_mut().enumerate() {
            let (g, col) = (g / n, g % n);
            *z = nibble(qzeros[g * (n / 8) + col / 8], col) + shift;
            if *z > 15 {
                return Err(self
                    .tensor_error(
                        &format!("{module}.qzeros"),
                        format!(
                            "group {g}, output {col}: stored 15 means zero point 16 in the v1 format, outside 4 bits"
                        ),
                    )
                    .into());
            }
        }
        let blocks = k / BLOCK;
        let zero_row = blocks.div_ceil(2);
        let (mut codes, mut block_scales) = (vec![0u8; n * k / 2], Vec::with_capacity(n * blocks));
        let mut zeros = vec![0u8; n * zero_row];
        for r in 0..n {
            for i in 0..k {
                let c = order.as_ref().map_or(i, |o| o[i] as usize);
                codes[(r * k + i) / 2] |= nibble(qweight[(c / 8) * n + r], c) << (4 * (i % 2));
            }
            for b in 0..blocks {
                let g = b * BLOCK / group;
                block_scales.push(scales[g * n + r]);
                zeros[r * zero_row + b / 2] |= zero_of[g * n + r] << (4 * (b % 2));
            }
        }
        let zeros = zero_of.iter().any(|z| *z != 8).then_some(zeros);
        Ok(Some(Packed4 { n, k, block: BLOCK, codes, scales: block_scales, zeros, perm: order }))
    }

    fn checkpoint_quantization(&self) -> Option<String> {
        let s = &self.settings;
        Some(
            format!(
                "GPTQ 4-bit, {}, {}{} ({}): codes and fp16 scales kept exactly, as MatMulNBits blocks of {BLOCK}{}",
                s.group.map_or("one group a row".into(), |g| format!("group {g}")),
                if s.sym { "symmetric" } else { "asymmetric" },
                if s.act_order { ", act-order" } else { "" },
                s.file.display(),
                if s.act_order { "; act-order groups made contiguous by a Gather of each layer's input" } else { "" },
            ) + if s.sym {
                ""
            } else {
                "; zero points: tract's import adds them as a per-block correction (both copies held while loading)"
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_order_rows_are_sorted_by_group_and_unequal_groups_refused() {
        // Groups of 2 over 6 channels, scattered as act-order stores them.
        assert_eq!(group_order(&[1, 0, 2, 0, 1, 2], 2, 3), Ok(Some(vec![1, 3, 0, 4, 2, 5])));
        assert_eq!(group_order(&[0, 0, 1, 1, 2, 2], 2, 3), Ok(None));
        assert_eq!(
            group_order(&[0, 0, 0, 1, 2, 2], 2, 3),
            Err("puts 3 input channels in group 0, expected the group size 2 in every group (a layout 4-bit blocks cannot hold)".into())
        );
        assert_eq!(group_order(&[0, 0, 1, 1, 2, 3], 2, 3), Err("names group 3, past the last of 3".into()));
    }

    fn settings_of(quantization_config: serde_json::Value) -> Result<Option<GptqSettings>, String> {
        let dir = std::env::temp_dir().join(format!("edgehil-gptq-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = serde_json::json!({ "model_type": "llama", "quantization_config": quantization_config });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let result = GptqSettings::read(&dir).map_err(|e| e.to_string().replace(&dir.display().to_string(), "DIR"));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn settings_the_layout_cannot_hold_are_refused_naming_the_field() {
        let ok =
            settings_of(serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 128})).unwrap().unwrap();
        assert_eq!((ok.group, ok.act_order, ok.sym, ok.zeros_minus_one), (Some(128), false, true, true));
        let refused = [
            (serde_json::json!({"quant_method": "gptq", "bits": 8, "group_size": 128}),
             "DIR/config.json: field `quantization_config.bits`: 8: only 4-bit GPTQ is imported (MatMulNBits, tract's Q4_0)"),
            (serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 48}),
             "DIR/config.json: field `quantization_config.group_size`: 48: expected -1 or a multiple of 32 (4-bit blocks hold 32 values with one scale)"),
            (serde_json::json!({"quant_method": "awq", "bits": 4, "group_size": 128}),
             "DIR/config.json: field `quantization_config.quant_method`: \"awq\" is not imported (GPTQ checkpoints only)"),
            (serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "marlin"}),
             "DIR/config.json: field `quantization_config.checkpoint_format`: `marlin`: expected gptq or gptq_v2"),
        ];
        for (json, message) in refused {
            assert_eq!(settings_of(json).unwrap_err(), message);
        }
    }
}
