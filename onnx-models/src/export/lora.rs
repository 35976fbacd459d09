//! PEFT LoRA adapters, merged into the base weights as W += (alpha/r)·B·A
//! before any quantization.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::emit::Mat;
use super::ExportError;

/// An adapter folder: `adapter_config.json` + `adapter_model.safetensors`.
pub struct Adapter {
    pub dir: PathBuf,
    pub rank: usize,
    pub alpha: f64,
    pub scale: f32,
    /// Module path (as in the base model's tensor names, without `.weight`) → (A [r, in], B [out, r]).
    modules: BTreeMap<String, (Mat, Mat)>,
    merged: Vec<String>,
}

/// What the manifest says of a merged adapter.
#[derive(Debug, Clone, Serialize)]
pub struct LoraSummary {
    pub adapter: String,
    pub rank: usize,
    pub alpha: f64,
    pub scale: f32,
    pub modules_merged: usize,
}

impl Adapter {
    pub fn open(dir: &Path) -> Result<Self, ExportError> {
        let config_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| ExportError::io(&config_path, e))?;
        let bad = |message: String| ExportError::Adapter { path: config_path.clone(), message };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let rank =
            json.get("r").and_then(serde_json::Value::as_u64).ok_or_else(|| bad("field `r` is missing".into()))?;
        let alpha = json
            .get("lora_alpha")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| bad("field `lora_alpha` is missing".into()))?;
        for (field, ok) in [("use_dora", false), ("use_rslora", false)] {
            if json.get(field).and_then(serde_json::Value::as_bool).unwrap_or(false) != ok {
                return Err(bad(format!("field `{field}`: true is not supported (plain LoRA only)")));
            }
        }
        if let Some(b) = json.get("bias").and_then(|v| v.as_str()).filter(|b| *b != "none") {
            return Err(bad(format!("field `bias`: `{b}` is not supported (adapters without bias only)")));
        }

        let weights_path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|e| ExportError::io(&weights_path, e))?;
        let bad_weights = |message: String| ExportError::Adapter { path: weights_path.clone(), message };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad_weights(e.to_string()))?;
        let mut halves: BTreeMap<String, (Option<Mat>, Option<Mat>)> = BTreeMap::new();
        for (name, view) in st.tensors() {
            let (module, is_a) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
                (m, true)
            } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
                (m, false)
            } else {
                return Err(bad_weights(format!("tensor `{name}` is neither a lora_A nor a lora_B weight")));
            };
            let shape = view.shape();
            // Adapters trained in half precision are saved as F16 or BF16; the merge is in fp32.
            let data = crate::hf::to_f32(&view).filter(|_| shape.len() == 2).ok_or_else(|| {
                bad_weights(format!(
                    "tensor `{name}`: expected a 2-D F32, F16 or BF16 matrix, found {:?} {shape:?}",
                    view.dtype()
                ))
            })?;
            let m = Mat::new(shape[0], shape[1], data);
            // PEFT prefixes the base model's module path with `base_model.model.`.
            let module = module.strip_prefix("base_model.model.").unwrap_or(module).to_string();
            let entry = halves.entry(module).or_default();
            if is_a {
                entry.0 = Some(m);
            } else {
                entry.1 = Some(m);
            }
        }
        let mut modules = BTreeMap::new();
        for (module, pair) in halves {
            match pair {
                (Some(a), Some(b)) if a.rows == rank as usize && b.cols == rank as usize => {
                    modules.insert(module, (a, b));
                }
                (Some(_), Some(_)) => {
                    return Err(bad_weights(format!("module `{module}`: lora_A / lora_B do not have rank r = {rank}")))
                }
                _ => return Err(bad_weights(format!("module `{module}` lacks its lora_A or its lora_B weight"))),
            }
        }
        Ok(Self {
            dir: dir.into(),
            rank: rank as usize,
            alpha,
            scale: (alpha / rank as f64) as f32,
            modules,
            merged: Vec::new(),
        })
    }

    /// Modules of the adapter that the base model does not have, given the
    /// base model's tensor names.
    pub fn check_modules(&self, base: &[(String, Vec<u64>)]) -> Result<(), ExportError> {
        for module in self.modules.keys() {
            let stripped = module.strip_prefix("transformer.").unwrap_or(module);
            if !base.iter().any(|(name, _)| name == &format!("{stripped}.weight")) {
                return Err(ExportError::Adapter {
                    path: self.dir.join("adapter_model.safetensors"),
                    message: format!("module `{module}` does not exist in the base model"),
                });
            }
        }
        Ok(())
    }

    /// Merges the adapter's update into `w` ([out, in]) if it targets `tensor`.
    pub fn merge(&mut self, tensor: &str, w: &mut Mat) -> Result<(), ExportError> {
        let module = tensor.strip_suffix(".weight").unwrap_or(tensor);
        let key =
            [module.to_string(), format!("transformer.{module}")].into_iter().find(|k| self.modules.contains_key(k));
        let Some(key) = key else { return Ok(()) };
        let (a, b) = &self.modules[&key];
        if a.cols != w.cols || b.rows != w.rows {
            return Err(ExportError::Adapter {
                path: self.dir.join("adapter_model.safetensors"),
                message: format!(
                    "module `{key}`: B·A is [{}, {}] but the weight `{tensor}` is [{}, {}]",
                    b.rows, a.cols, w.rows, w.cols
                ),
            });
        }
        for o in 0..w.rows {
            for r in 0..self.rank {
                let s = self.scale * b.data[o * self.rank + r];
                let row = &a.data[r * a.cols..(r + 1) * a.cols];
                for (wv, av) in w.data[o * w.cols..(o + 1) * w.cols].iter_mut().zip(row) {
                    *wv += s * av;
                }
            }
        }
        self.merged.push(key);
        Ok(())
    }

    pub fn summary(&self) -> Result<LoraSummary, ExportError> {
        if let Some(missed) = self.modules.keys().find(|m| !self.merged.contains(m)) {
            return Err(ExportError::Adapter {
                path: self.dir.join("adapter_model.safetensors"),
                message: format!("module `{missed}` targets a weight the export does not use"),
            });
        }
        Ok(LoraSummary {
            adapter: self.dir.display().to_string(),
            rank: self.rank,
            alpha: self.alpha,
            scale: self.scale,
            modules_merged: self.merged.len(),
        })
    }
}
