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
//!
//! For a LaMP task ([`plan_lamp`]) the study measured, the choice is its
//! evidence instead: among the scored checkpoints whose inference and, for
//! LoRA, training peak ([`crate::train`]) fit, the best score for the task;
//! the guidelines above only where no scored checkpoint fits.

use serde::Serialize;

use crate::catalog::{fit, Fit, ModelConfig, Precision, CATALOG};
use crate::profile::Profile;
use crate::study::{self, Lamp, Method, ScoreRow, ScoresError};
use crate::train::{self, LoraSetting};
use crate::units::human_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Generation,
}

/// What `plan --task` names: a LaMP task the study scored, or a kind of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskChoice {
    Lamp(Lamp),
    Kind(Task),
}

impl std::str::FromStr for TaskChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "classification" => Ok(TaskChoice::Kind(Task::Classification)),
            "generation" => Ok(TaskChoice::Kind(Task::Generation)),
            _ => s
                .parse()
                .map(TaskChoice::Lamp)
                .map_err(|_| format!("unknown task `{s}`: expected LaMP-1 … LaMP-7, classification or generation")),
        }
    }
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

/// The most profile items RAG indexes for one user: the study's largest
/// history (it found 100 about as good).
pub const RAG_HISTORY_ITEMS: u64 = 1_000;

/// One item in the board's index: a MiniLM embedding of 384 fp32 values.
pub const RAG_BYTES_PER_ITEM: u64 = 384 * 4;

/// MiniLM-L6's activations embedding one item of 256 tokens (its sequence
/// limit): 12 heads' attention scores, the 1536-wide MLP and four 384-wide
/// hidden states.
const RAG_EMBED_ACTIVATIONS: u64 = (12 * 256 * 256 + 256 * 1536 + 4 * 256 * 384) * 4;

/// What RAG holds on the board besides the LLM with `items` profile items
/// indexed: MiniLM-L6's fp32 weights (22.7 M parameters), its activations
/// for one item, and the index. The index holds one user's history at a
/// time (`eval` clears it between users), so it is sized per user.
pub fn rag_bytes(items: u64) -> u64 {
    22_713_216 * 4 + RAG_EMBED_ACTIVATIONS + items * RAG_BYTES_PER_ITEM
}

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
    /// Peak RAM of LoRA training on the board, where the plan trains.
    pub training_peak: Option<u64>,
    /// The study's measured score for the task, where the plan follows one.
    pub score: Option<f64>,
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// nothing in the catalog fits
    #[error("no catalog model fits {profile}'s {usable} usable RAM at int4 with a {context}-token context (smallest need: {smallest})")]
    NothingFits { profile: String, usable: String, context: u64, smallest: String },
    #[error(transparent)]
    Scores(#[from] ScoresError),
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
    let reserve = if customization == Customization::Rag { rag_bytes(RAG_HISTORY_ITEMS) } else { 0 };
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
            "medium task: RAG with the strongest model that fits (MiniLM embeddings, top-3 by inner product; {} reserved for encoder and an index of {RAG_HISTORY_ITEMS} history items)",
            human_bytes(reserve as f64)
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
        training_peak: None,
        score: None,
        reasons,
    })
}

/// A LaMP task's difficulty in the guidelines' terms: the easiest
/// classification is easy; harder classification and the easier
/// summarization are medium (RAG's ground); the hardest summarization is hard.
pub fn lamp_difficulty(task: Lamp) -> Difficulty {
    match (task.is_classification(), task.difficulty_rank()) {
        (true, 0) => Difficulty::Easy,
        (true, _) | (false, 0..=1) => Difficulty::Medium,
        (false, _) => Difficulty::Hard,
    }
}

/// A scored checkpoint that runs (and trains) on the board.
struct Candidate<'a> {
    row: &'a ScoreRow,
    model: &'static ModelConfig,
    fit: Fit,
    reserve: u64,
    training_peak: Option<u64>,
}

impl Candidate<'_> {
    fn peak(&self) -> u64 {
        self.training_peak.unwrap_or(0).max(self.fit.peak + self.reserve)
    }

    fn label(&self, task: Lamp) -> String {
        format!(
            "{} {} {} {:.3}",
            self.row.study_name,
            self.row.precision.name(),
            method_name(self.row.method),
            self.row.score(task)
        )
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Lora => "LoRA",
        Method::Rag => "RAG",
        Method::ZeroShot => "zero-shot",
    }
}

/// The plan the study's measured scores give for `task` on `profile`.
pub fn plan_lamp(profile: &Profile, task: Lamp, prompt_tokens: u64) -> Result<Plan, PlanError> {
    let kind = if task.is_classification() { Task::Classification } else { Task::Generation };
    let difficulty = lamp_difficulty(task);
    let context = prompt_tokens + if kind == Task::Generation { NEW_TOKENS } else { 0 };
    let usable = profile.ram_usable.value.0;
    let rows = study::scores()?;
    let training = train::Calibration::study(LoraSetting::default()).constants;
    let candidates: Vec<Candidate> = rows
        .iter()
        .filter(|r| r.method != Method::ZeroShot)
        .filter_map(|row| {
            let model = CATALOG.iter().find(|m| m.name == row.model)?;
            let reserve = if row.method == Method::Rag { rag_bytes(RAG_HISTORY_ITEMS) } else { 0 };
            // As the study trained them: a 4-bit base through PEFT's k-bit path, with checkpointing.
            let setting = LoraSetting { checkpointing: row.precision == Precision::Int4, ..LoraSetting::default() };
            let training_peak = (row.method == Method::Lora)
                .then(|| train::estimate(model, row.precision, &setting, &training, profile.peak_fp32.value.0).peak);
            Some(Candidate { row, model, fit: fit(model, row.precision, context, profile), reserve, training_peak })
        })
        .collect();
    let by_score =
        |a: &&Candidate, b: &&Candidate| b.row.score(task).total_cmp(&a.row.score(task)).then(a.peak().cmp(&b.peak()));
    let mut fitting: Vec<&Candidate> = candidates.iter().filter(|c| c.peak() <= usable).collect();
    fitting.sort_by(by_score);
    let Some(best) = fitting.first() else {
        let mut p = plan(profile, kind, difficulty, prompt_tokens)?;
        p.reasons.insert(
            0,
            format!("no checkpoint the study scored on {task} fits {}: the guidelines decide", profile.name),
        );
        return Ok(p);
    };
    let mut too_big: Vec<&Candidate> =
        candidates.iter().filter(|c| c.peak() > usable && c.row.score(task) > best.row.score(task)).collect();
    too_big.sort_by(by_score);
    let customization = if best.row.method == Method::Rag { Customization::Rag } else { Customization::Lora };
    let mut reasons = vec![format!(
        "{task} ({}, {} by the study's Table 4): the best {} the study measured ({}) among the {} scored (checkpoint, method) pairs that fit {}'s {} usable RAM: {}",
        if task.is_classification() { "classification" } else { "generation" },
        match difficulty {
            Difficulty::Easy => "the easiest of its kind",
            Difficulty::Hard => "among the hardest of its kind",
            Difficulty::Medium | Difficulty::Unknown => "of middle difficulty",
        },
        task.metric(),
        best.row.source(),
        fitting.len(),
        profile.name,
        human_bytes(usable as f64),
        best.label(task)
    )];
    if let Some(t) = best.training_peak {
        reasons.push(format!(
            "trains on the board: LoRA peak {} (rank 8, AdamW{}), runs at {} with {} headroom",
            human_bytes(t as f64),
            if best.row.precision == Precision::Int4 { ", gradient checkpointing" } else { "" },
            human_bytes((best.fit.peak + best.reserve) as f64),
            human_bytes(usable as f64 - best.peak() as f64)
        ));
    }
    let runners: Vec<String> = fitting.iter().skip(1).take(2).map(|c| c.label(task)).collect();
    if !runners.is_empty() {
        reasons.push(format!("next best that fit: {}", runners.join("; ")));
    }
    for c in too_big.iter().take(2) {
        let why = match c.training_peak {
            Some(t) if t > usable => format!("LoRA training peak {}", human_bytes(t as f64)),
            _ => format!("inference peak {}", human_bytes((c.fit.peak + c.reserve) as f64)),
        };
        reasons.push(format!("scores higher but does not fit: {} ({why})", c.label(task)));
    }
    if let Some(zero) = rows.iter().find(|r| r.method == Method::ZeroShot && r.study_name == best.row.study_name) {
        reasons.push(format!("without customization it scores {:.3} ({})", zero.score(task), zero.source()));
    }
    Ok(Plan {
        profile: profile.name.clone(),
        task: kind,
        difficulty,
        model: best.model.name,
        parameters: best.model.parameters(),
        customization,
        compression: best.row.precision,
        lora: (customization == Customization::Lora).then_some([(8, 16), (16, 32)]),
        fit: best.fit.clone(),
        rag_bytes: best.reserve,
        training_peak: best.training_peak,
        score: Some(best.row.score(task)),
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
        if let Some(t) = self.training_peak {
            s += &format!("  training peak  {}\n", human_bytes(t as f64));
        }
        s += &format!(
            "  fit            weights {} + KV cache {} + activations {} + runtime {}{} = {} of {} usable (headroom {}), context {}\n  why\n",
            human_bytes(f.weights as f64),
            human_bytes(f.kv_cache as f64),
            human_bytes(f.activations as f64),
            human_bytes(f.runtime as f64),
            if self.rag_bytes > 0 {
                format!(" + RAG {} (MiniLM, {RAG_HISTORY_ITEMS}-item index)", human_bytes(self.rag_bytes as f64))
            } else {
                String::new()
            },
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
    fn a_lamp_task_takes_the_best_measured_score_that_trains_and_runs() {
        let nano = p("jetson-orin-nano");
        let usable = nano.ram_usable.value.0;
        let lamp2 = plan_lamp(&nano, "LaMP-2".parse().unwrap(), 512).unwrap();
        // Not llama-3-8b (Table 7: LaMP-2 FT 0.130, and it does not train in 6.5 GiB).
        assert_ne!(lamp2.model, "llama-3-8b");
        assert!(lamp2.training_peak.is_some_and(|t| t <= usable) && lamp2.fit.peak <= usable, "{lamp2:?}");
        let score = lamp2.score.unwrap();
        let rows = study::scores().unwrap();
        // Nothing that fits scores higher: every better row is over the board's RAM.
        let best_overall =
            rows.iter().filter(|r| r.method != Method::ZeroShot).map(|r| r.scores[1]).fold(0.0, f64::max);
        assert!(score <= best_overall && lamp2.reasons[0].contains(&format!("{score:.3}")), "{:?}", lamp2.reasons);
        // The study's 4 GB tier leaves fewer candidates, never a better score.
        let tier = plan_lamp(&nano.with_cap(Some(4_000_000_000)), "LaMP-2".parse().unwrap(), 512).unwrap();
        assert!(tier.score.unwrap() <= score && tier.fit.usable == 4_000_000_000);
    }

    #[test]
    fn the_rag_reserve_holds_a_thousand_items_of_one_user() {
        // Encoder and one item's activations (about 96 MiB), then 1.5 KiB an item.
        assert_eq!(rag_bytes(RAG_HISTORY_ITEMS) - rag_bytes(0), 1_000 * 1_536);
        assert!((90 << 20..100 << 20).contains(&rag_bytes(0)), "{}", rag_bytes(0));
        let medium = plan(&p("jetson-orin-nx-16gb"), Task::Generation, Difficulty::Medium, 512).unwrap();
        assert_eq!(medium.rag_bytes, rag_bytes(1_000));
        assert!(medium.text().contains("1000-item index") && medium.reasons[0].contains("1000 history items"));
        // The study's scored RAG rows reserve the same, and the plan adds it to the inference peak.
        let lamp1 = plan_lamp(&p("jetson-orin-nano"), "LaMP-1".parse().unwrap(), 512).unwrap();
        assert_eq!((lamp1.customization, lamp1.rag_bytes), (Customization::Rag, rag_bytes(1_000)));
    }

    #[test]
    fn a_smaller_board_gets_a_smaller_or_narrower_model() {
        let big = plan(&p("jetson-orin-nx-16gb"), Task::Generation, Difficulty::Easy, 512).unwrap();
        let small = plan(&p("iphone-12"), Task::Generation, Difficulty::Easy, 512).unwrap();
        assert!(small.parameters < big.parameters, "{} vs {}", small.model, big.model);
        assert!(small.fit.peak <= small.fit.usable);
    }
}
