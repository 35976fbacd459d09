//! The study's models as configurations, and what each needs in RAM.
//!
//! Parameter counts are computed from the configuration (embeddings, attention
//! with grouped KV heads, plain or gated MLP, norms and biases), not copied,
//! so a team can add a model by its config alone; the test checks them against
//! the counts the model cards publish.
//!
//! Peak RAM at inference = weights + KV cache + activations + runtime, where
//! the KV cache is 2 · layers · kv_heads · head_dim · context · 4 bytes (fp32,
//! as our exports keep it), activations are the widest per-token buffers
//! (the logits row, the MLP's intermediate and the attention scores) for the
//! context, and the runtime is a fixed 30 MiB (agent, engine, allocator slack).

use serde::Serialize;

use crate::profile::Profile;

/// The model family of a catalog model, for counting its parameters: the
/// families the exporter supports ([`edgehil_onnx::arch`]) and others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogFamily {
    Gpt2,
    GptNeox,
    Llama,
    Opt,
    Phi,
    Gemma,
    StableLm,
    Mistral,
    Phi3,
}

impl CatalogFamily {
    /// The family's `model_type` in Hugging Face's `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Gpt2 => "gpt2",
            GptNeox => "gpt_neox",
            Llama => "llama",
            Opt => "opt",
            Phi => "phi",
            Gemma => "gemma",
            StableLm => "stablelm",
            Mistral => "mistral",
            Phi3 => "phi3",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelConfig {
    pub name: &'static str,
    pub arch: CatalogFamily,
    pub hidden: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub intermediate: u64,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied_embeddings: bool,
    /// Mistral-7B-v0.1, Phi-3: attention over this many positions back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<u64>,
    /// OPT-350m: embeddings this wide, projected to and from the hidden size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_dim: Option<u64>,
    /// OPT-350m: norms after the residual adds, no final norm.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub post_norm: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
    Int4,
}

impl Precision {
    pub const ALL: [Precision; 4] = [Precision::Fp32, Precision::Fp16, Precision::Int8, Precision::Int4];

    /// Bytes per weight, scales included: int8 per-channel; int4 in blocks
    /// of 32 with one fp16 scale (4.5 bits), for the linear layers only
    /// ([`ModelConfig::weight_bytes`] keeps int4 models' embeddings in fp16).
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            Precision::Fp32 => 4.0,
            Precision::Fp16 => 2.0,
            Precision::Int8 => 1.0,
            Precision::Int4 => 4.5 / 8.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }
}

// One positional row per model keeps the catalog a table that reads as one.
#[allow(clippy::too_many_arguments)]
const fn cfg(
    name: &'static str,
    arch: CatalogFamily,
    hidden: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    intermediate: u64,
    vocab: u64,
    max_positions: u64,
    tied_embeddings: bool,
) -> ModelConfig {
    ModelConfig {
        name,
        arch,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        intermediate,
        vocab,
        max_positions,
        tied_embeddings,
        sliding_window: None,
        embed_dim: None,
        post_norm: false,
    }
}

use CatalogFamily::*;

/// The models of the edge-LLM study, as their Hugging Face configs give them.
pub const CATALOG: &[ModelConfig] = &[
    cfg("gpt2", Gpt2, 768, 12, 12, 12, 3072, 50257, 1024, true),
    cfg("pythia-70m", GptNeox, 512, 6, 8, 8, 2048, 50304, 2048, false),
    cfg("pythia-160m", GptNeox, 768, 12, 12, 12, 3072, 50304, 2048, false),
    cfg("pythia-410m", GptNeox, 1024, 24, 16, 16, 4096, 50304, 2048, false),
    cfg("pythia-1b", GptNeox, 2048, 16, 8, 8, 8192, 50304, 2048, false),
    cfg("pythia-1.4b", GptNeox, 2048, 24, 16, 16, 8192, 50304, 2048, false),
    cfg("pythia-2.8b", GptNeox, 2560, 32, 32, 32, 10240, 50304, 2048, false),
    cfg("opt-125m", Opt, 768, 12, 12, 12, 3072, 50272, 2048, true),
    ModelConfig {
        embed_dim: Some(512),
        post_norm: true,
        ..cfg("opt-350m", Opt, 1024, 24, 16, 16, 4096, 50272, 2048, true)
    },
    cfg("opt-1.3b", Opt, 2048, 24, 32, 32, 8192, 50272, 2048, true),
    cfg("opt-2.7b", Opt, 2560, 32, 32, 32, 10240, 50272, 2048, true),
    cfg("tinyllama-1.1b", Llama, 2048, 22, 32, 4, 5632, 32000, 2048, false),
    cfg("sheared-llama-1.3b", Llama, 2048, 24, 16, 16, 5504, 32000, 4096, false),
    cfg("sheared-llama-2.7b", Llama, 2560, 32, 20, 20, 6912, 32000, 4096, false),
    cfg("open-llama-3b", Llama, 3200, 26, 32, 32, 8640, 32000, 2048, false),
    cfg("stablelm-2-1.6b", StableLm, 2048, 24, 32, 32, 5632, 100352, 4096, false),
    cfg("stablelm-3b-4e1t", StableLm, 2560, 32, 32, 32, 6912, 50304, 4096, false),
    cfg("phi-1.5", Phi, 2048, 24, 32, 32, 8192, 51200, 2048, false),
    cfg("phi-2", Phi, 2560, 32, 32, 32, 10240, 51200, 2048, false),
    ModelConfig {
        sliding_window: Some(2047),
        ..cfg("phi-3-mini-4k", Phi3, 3072, 32, 32, 32, 8192, 32064, 4096, false)
    },
    ModelConfig { head_dim: 256, ..cfg("gemma-2b", Gemma, 2048, 18, 8, 1, 16384, 256000, 8192, true) },
    cfg("llama-2-7b", Llama, 4096, 32, 32, 32, 11008, 32000, 4096, false),
    cfg("llama-2-13b", Llama, 5120, 40, 40, 40, 13824, 32000, 4096, false),
    ModelConfig {
        sliding_window: Some(4096),
        ..cfg("mistral-7b", Mistral, 4096, 32, 32, 8, 14336, 32000, 32768, false)
    },
    cfg("llama-3-8b", Llama, 4096, 32, 32, 8, 14336, 128256, 8192, false),
];

impl ModelConfig {
    /// The Hugging Face configuration, for the families edgehil exports.
    pub fn to_hf(&self) -> Option<edgehil_onnx::hf::Config> {
        let family = edgehil_onnx::arch::ModelFamily::lookup(self.arch.model_type())?;
        let mut config = edgehil_onnx::hf::Config::new(
            family,
            self.hidden,
            self.layers,
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
            self.max_positions,
            self.tied_embeddings,
        );
        config.sliding_window = self.sliding_window;
        config.embed_dim = self.embed_dim;
        config.post_norm = self.post_norm;
        Some(config)
    }

    /// Gated (SwiGLU / GeGLU) MLPs have three matrices, the others two.
    fn gated(&self) -> bool {
        matches!(self.arch, Llama | Gemma | StableLm | Mistral | Phi3)
    }

    pub fn parameters(&self) -> u64 {
        let (h, hd) = (self.hidden, self.head_dim);
        let q = h * self.heads * hd;
        let kv = 2 * h * self.kv_heads * hd;
        let o = self.heads * hd * h;
        let mlp = if self.gated() { 3 } else { 2 } * h * self.intermediate;
        // Biases where the architecture has them; two norms a layer (LayerNorm: weight
        // and bias; RMSNorm: weight); Phi has one shared LayerNorm a layer.
        let (biases, norms) = match self.arch {
            Gpt2 | GptNeox | Opt | Phi => (self.heads * hd + 2 * self.kv_heads * hd + h + self.intermediate + h, 4 * h),
            StableLm => (0, 4 * h),
            Llama | Gemma | Mistral | Phi3 => (0, 2 * h),
        };
        let norms = if self.arch == Phi { norms / 2 } else { norms };
        let layer = q + kv + o + mlp + biases + norms;
        let e = self.embed_dim.unwrap_or(h);
        let embeddings = self.vocab * e * if self.tied_embeddings { 1 } else { 2 };
        let projections = if e == h { 0 } else { 2 * e * h };
        let positions = match self.arch {
            Gpt2 => self.max_positions * h,
            Opt => (self.max_positions + 2) * h,
            _ => 0,
        };
        let lm_head_bias = if self.arch == Phi { self.vocab } else { 0 };
        let final_norm = match self.arch {
            _ if self.post_norm => 0,
            Llama | Gemma | Mistral | Phi3 => h,
            _ => 2 * h,
        };
        self.layers * layer + embeddings + projections + positions + lm_head_bias + final_norm
    }

    /// Embedding tables and an untied LM head.
    fn embedding_parameters(&self) -> u64 {
        self.vocab * self.embed_dim.unwrap_or(self.hidden) * if self.tied_embeddings { 1 } else { 2 }
    }

    /// At int4, as the study's GPTQ checkpoints hold them: 4-bit linear layers,
    /// embeddings and LM head in fp16 (Llama-2-7B-GPTQ is 3.90 GB, not 7 B × 4.5 bits).
    pub fn weight_bytes(&self, p: Precision) -> u64 {
        match p {
            Precision::Int4 => {
                let embeddings = self.embedding_parameters();
                ((self.parameters() - embeddings) as f64 * p.bytes_per_weight()) as u64
                    + embeddings * Precision::Fp16.bytes_per_weight() as u64
            }
            _ => (self.parameters() as f64 * p.bytes_per_weight()) as u64,
        }
    }

    pub fn kv_cache_bytes(&self, context: u64) -> u64 {
        2 * self.layers * self.kv_heads * self.head_dim * context * 4
    }

    pub fn activation_bytes(&self, context: u64) -> u64 {
        let logits = self.vocab * 4;
        let mlp = self.intermediate * context * 4 * 2;
        let scores = self.heads * context * context * 4;
        logits + mlp + scores + 4 * self.hidden * context * 4
    }
}

/// The fixed part of a run: agent, engine code and allocator slack.
pub const RUNTIME_BYTES: u64 = 30 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub model: &'static str,
    pub precision: Precision,
    pub context: u64,
    pub weights: u64,
    pub kv_cache: u64,
    pub activations: u64,
    pub runtime: u64,
    pub peak: u64,
    pub usable: u64,
    pub fits: bool,
    /// usable − peak (negative: over).
    pub headroom: i64,
}

pub fn fit(model: &ModelConfig, precision: Precision, context: u64, profile: &Profile) -> Fit {
    let (weights, kv_cache, activations) =
        (model.weight_bytes(precision), model.kv_cache_bytes(context), model.activation_bytes(context));
    let peak = weights + kv_cache + activations + RUNTIME_BYTES;
    let usable = profile.ram_usable.value.0;
    Fit {
        model: model.name,
        precision,
        context,
        weights,
        kv_cache,
        activations,
        runtime: RUNTIME_BYTES,
        peak,
        usable,
        fits: peak <= usable,
        headroom: usable as i64 - peak as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> &'static ModelConfig {
        CATALOG.iter().find(|m| m.name == name).unwrap()
    }

    #[test]
    fn parameter_counts_match_the_published_ones() {
        // Exact totals of the released checkpoints (sum of tensor sizes).
        for (name, published) in [
            ("tinyllama-1.1b", 1_100_048_384u64),
            ("llama-2-7b", 6_738_415_616),
            ("mistral-7b", 7_241_732_096),
            ("llama-3-8b", 8_030_261_248),
            ("pythia-160m", 162_322_944),
            ("gpt2", 124_439_808),
            ("gemma-2b", 2_506_172_416),
            ("opt-350m", 331_196_416),
            ("phi-3-mini-4k", 3_821_079_552),
        ] {
            let ours = model(name).parameters();
            let err = (ours as f64 - published as f64).abs() / published as f64;
            assert!(err < 0.005, "{name}: ours {ours}, published {published} ({:.3}%)", err * 100.0);
        }
    }

    #[test]
    fn catalog_counts_equal_the_tensors_of_the_hf_layout() {
        // Two independent derivations: our formula and the tensor list export reads.
        for m in CATALOG {
            if let Some(hf) = m.to_hf() {
                let tensors: u64 = hf.tensors().iter().map(|(_, s)| s.iter().product::<u64>()).sum();
                assert_eq!(tensors, m.parameters(), "{}", m.name);
            }
        }
    }

    #[test]
    fn catalog_families_reach_the_exporter_by_model_type() {
        // `models synth` writes these; a misspelt model_type would drop them silently.
        // Every family of the study exports.
        for m in CATALOG {
            let hf = m.to_hf().unwrap_or_else(|| panic!("{} has no exporter family", m.name));
            assert_eq!(hf.arch.name(), m.arch.model_type(), "{}", m.name);
            hf.validate().unwrap_or_else(|e| panic!("{}: {e}", m.name));
        }
    }

    #[test]
    fn the_study_tiers_separate_small_and_large_models() {
        let profiles = crate::profile::Profiles::builtin().unwrap();
        let iphone12 = profiles.get("iphone-12").unwrap();
        let orin_nx = profiles.get("jetson-orin-nx-16gb").unwrap();
        assert!(fit(model("tinyllama-1.1b"), Precision::Int4, 512, iphone12).fits);
        assert!(!fit(model("llama-2-7b"), Precision::Fp32, 512, orin_nx).fits);
        // 6.7 B × 4.5 bits is 3.8 GB: over the iPhone 12's 2.2 GiB.
        assert!(!fit(model("llama-2-7b"), Precision::Int4, 512, iphone12).fits);
        let f = fit(model("mistral-7b"), Precision::Int8, 1024, orin_nx);
        assert!(f.fits && f.kv_cache == 2 * 32 * 8 * 128 * 1024 * 4, "{f:?}");
    }
}
