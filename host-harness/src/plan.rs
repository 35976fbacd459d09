//! `edgehil plan`: which model, customization and compression for a board,
//! from the edge-LLM study's guidelines:
//!
//! - customization by difficulty: LoRA for easy and for hard tasks; RAG
//!   (MiniLM embeddings, top-3 by inner product) with the strongest model
//!   that fits for medium ones; when the difficulty is unknown, a distilled
//!   Phi model is the safe choice;
//! - compression: quantization over pruning; the strongest model (most
//!   parameters) that fits at any of fp16 / int8 / int4, at the widest
//!   precision that still fits;
//! - LoRA: rank 16 with alpha 16 or 32; 3–4 hours of training is enough.
//!
//! "Fits" is the catalog's peak-RAM estimate (weights, KV cache for the
//! prompt plus the study's 100 new tokens, activations, runtime) against the
//! profile's usable RAM, after the RAG index and its encoder where RAG is used.

use serde::Serialize;

use crate::catalog::{fit, Fit, ModelConfig, Precision, CATALOG};
use crate::profile::Profile;
use crate::units::human_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Generation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Difficulty {
    Easy,
    Medium,
    Hard,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Customization {
    Lora,
    Rag,
}

/// MiniLM-L6 (22.7 M parameters, fp32) and an index of 10 000 profile items
/// of 384 floats: what RAG holds on the board besides the LLM.
pub const RAG_BYTES: u64 = 22_713_216 * 4 + 10_000 * 384 * 4;

/// The study's generation setting.
pub const NEW_TOKENS: u64 = 100;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub profile: String,
    pub task: Task,
    pub difficulty: Difficulty,
    pub model: &'static str,
    pub parameters: u64,
    pub customization: Customization,
    pub compression: Precision,
    /// (rank, alpha) choices for LoRA.
    pub lora: Option<[(u32, u32); 2]>,
    pub fit: Fit,
    pub rag_bytes: u64,
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// nothing in the catalog fits
    #[error("no catalog model fits {profile}'s {usable} usable RAM at int4 with a {context}-token context (smallest need: {smallest})")]
    NothingFits { profile: String, usable: String, context: u64, smallest: String },
}

/// The widest precision at which `model` fits, with its fit figures.
fn best_fit(model: &ModelConfig, context: u64, profile: &Profile, reserve: u64) -> Option<Fit> {
    [Precision::Fp16, Precision::Int8, Precision::Int4]
        .into_iter()
        .map(|p| fit(model, p, context, profile))
        .find(|f| f.peak + reserve <= f.usable)
}

pub fn plan(profile: &Profile, task: Task, difficulty: Difficulty, prompt_tokens: u64) -> Result<Plan, PlanError> {
    let context = prompt_tokens + if task == Task::Generation { NEW_TOKENS } else { 0 };
    let customization = match difficulty {
        Difficulty::Medium => Customization::Rag,
        Difficulty::Easy | Difficulty::Hard | Difficulty::Unknown => Customization::Lora,
    };
    let reserve = if customization == Customization::Rag { RAG_BYTES } else { 0 };
    let candidates: Vec<&ModelConfig> = match difficulty {
        Difficulty::Unknown => CATALOG.iter().filter(|m| m.name.starts_with("phi-")).collect(),
        _ => CATALOG.iter().collect(),
    };
    let chosen = candidates
        .iter()
        .filter_map(|m| best_fit(m, context, profile, reserve).map(|f| (*m, f)))
        .max_by_key(|(m, _)| m.parameters());
    let Some((model, fit)) = chosen else {
        let smallest =
            CATALOG.iter().map(|m| fit(m, Precision::Int4, context, profile).peak + reserve).min().unwrap_or(0);
        return Err(PlanError::NothingFits {
            profile: profile.name.clone(),
            usable: human_bytes(profile.ram_usable.value.0 as f64),
            context,
            smallest: human_bytes(smallest as f64),
        });
    };
    let mut reasons = vec![match difficulty {
        Difficulty::Easy => "easy task: LoRA fine-tuning adapts the model well enough; no retrieval at run time".to_string(),
        Difficulty::Hard => "hard task: LoRA fine-tuning beats retrieval when the task itself is hard to learn".to_string(),
        Difficulty::Medium => format!(
            "medium task: RAG with the strongest model that fits (MiniLM embeddings, top-3 by inner product; {} reserved for encoder and index)",
            human_bytes(RAG_BYTES as f64)
        ),
        Difficulty::Unknown => "difficulty unknown: a distilled Phi model is the safe choice, fine-tuned with LoRA".to_string(),
    }];
    reasons.push(format!(
        "{} is the largest candidate ({:.2} B parameters) whose estimated peak fits {}'s {} usable RAM",
        model.name,
        model.parameters() as f64 / 1e9,
        profile.name,
        human_bytes(fit.usable as f64)
    ));
    reasons.push(format!(
        "compression: {} quantization, the widest precision that fits; quantization is preferred over pruning, which loses more accuracy for the memory it saves",
        fit.precision.name()
    ));
    if customization == Customization::Lora {
        reasons
            .push("LoRA rank 16 with alpha 16 or 32; 3-4 hours of training is enough, longer gains little".to_string());
    }
    Ok(Plan {
        profile: profile.name.clone(),
        task,
        difficulty,
        model: model.name,
        parameters: model.parameters(),
        customization,
        compression: fit.precision,
        lora: (customization == Customization::Lora).then_some([(16, 16), (16, 32)]),
        rag_bytes: reserve,
        fit,
        reasons,
    })
}

impl Plan {
    pub fn text(&self) -> String {
        let f = &self.fit;
        let mut s = format!(
            "plan for {} ({:?} task, {:?} difficulty)\n  model          {} ({:.2} B parameters)\n  customization  {:?}\n  compression    {}\n",
            self.profile,
            self.task,
            self.difficulty,
            self.model,
            self.parameters as f64 / 1e9,
            self.customization,
            self.compression.name()
        );
        if let Some([(r1, a1), (r2, a2)]) = self.lora {
            s += &format!("  lora           rank {r1} alpha {a1}, or rank {r2} alpha {a2}; 3-4 h of training\n");
        }
        s += &format!(
            "  fit            weights {} + KV cache {} + activations {} + runtime {}{} = {} of {} usable (headroom {}), context {}\n  why\n",
            human_bytes(f.weights as f64),
            human_bytes(f.kv_cache as f64),
            human_bytes(f.activations as f64),
            human_bytes(f.runtime as f64),
            if self.rag_bytes > 0 { format!(" + RAG {}", human_bytes(self.rag_bytes as f64)) } else { String::new() },
            human_bytes((f.peak + self.rag_bytes) as f64),
            human_bytes(f.usable as f64),
            human_bytes(f.headroom as f64 - self.rag_bytes as f64),
            f.context
        );
        for r in &self.reasons {
            s += &format!("    - {r}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profiles;

    fn p(name: &str) -> Profile {
        Profiles::builtin().unwrap().get(name).unwrap().clone()
    }

    #[test]
    fn follows_the_study_guidelines() {
        let orin_nx = p("jetson-orin-nx-16gb");
        let medium = plan(&orin_nx, Task::Generation, Difficulty::Medium, 512).unwrap();
        assert_eq!(medium.customization, Customization::Rag);
        assert!(medium.lora.is_none() && medium.rag_bytes > 0);
        let hard = plan(&orin_nx, Task::Classification, Difficulty::Hard, 512).unwrap();
        assert_eq!((hard.customization, hard.lora), (Customization::Lora, Some([(16, 16), (16, 32)])));
        // 14 GiB holds the 13 B model at int8 (12.1 GiB of weights), not at fp16.
        assert_eq!((hard.model, hard.compression), ("llama-2-13b", Precision::Int8));
        let unknown = plan(&p("iphone-12"), Task::Generation, Difficulty::Unknown, 512).unwrap();
        assert!(unknown.model.starts_with("phi-"), "{}", unknown.model);
        let e = plan(&p("nrf52840-dk"), Task::Classification, Difficulty::Easy, 512).unwrap_err().to_string();
        assert!(e.starts_with("no catalog model fits nrf52840-dk's 200.0 KiB usable RAM"), "{e}");
    }

    #[test]
    fn a_smaller_board_gets_a_smaller_or_narrower_model() {
        let big = plan(&p("jetson-orin-nx-16gb"), Task::Generation, Difficulty::Easy, 512).unwrap();
        let small = plan(&p("iphone-12"), Task::Generation, Difficulty::Easy, 512).unwrap();
        assert!(small.parameters < big.parameters, "{} vs {}", small.model, big.model);
        assert!(small.fit.peak <= small.fit.usable);
    }
}
