//! Generation with a KV cache: one prefill of the prompt, then one token at
//! a time feeding the model its own `present.*` outputs back as
//! `past_key_values.*`. The agent and the host reference call this same
//! loop, so their tokens can be compared one for one.

use std::format;
use std::string::{String, ToString};
use std::time::Instant;
use std::vec::Vec;

use crate::engine::{Engine, EngineError, ModelInfo};
use crate::wire::{GenParams, GenReport, StopReason, Tensor, Values};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// the model lacks what cached generation needs
    #[error("not a language model with a KV cache: {0}")]
    NotALanguageModel(String),
    #[error("empty prompt: generation needs at least one token")]
    EmptyPrompt,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Where a decoder export (onnx-models) keeps its inputs and outputs.
#[derive(Debug, Clone)]
struct Layout {
    /// Past key/value inputs in model order: (name, kv heads, head dim).
    past: Vec<(String, u64, u64)>,
    logits: usize,
    /// For each past input, the index of the output that continues it.
    present: Vec<usize>,
    vocab: usize,
}

impl Layout {
    fn of(info: &ModelInfo) -> Result<Self, GenerateError> {
        let missing = |what: &str| GenerateError::NotALanguageModel(format!("no {what}"));
        let names: Vec<&str> = info.inputs.iter().map(|i| i.name.as_str()).collect();
        if names.len() < LM_INPUTS.len() || names[..LM_INPUTS.len()] != LM_INPUTS {
            return Err(GenerateError::NotALanguageModel(format!(
                "inputs must begin with {LM_INPUTS:?}; they are {names:?}"
            )));
        }
        let mut past = Vec::new();
        let mut present = Vec::new();
        for input in &info.inputs[LM_INPUTS.len()..] {
            let Some(rest) = input.name.strip_prefix("past_key_values.") else {
                return Err(GenerateError::NotALanguageModel(format!("unexpected input `{}`", input.name)));
            };
            let (Some(Some(heads)), Some(Some(dim))) = (input.shape.get(1), input.shape.get(3)) else {
                return Err(GenerateError::NotALanguageModel(format!(
                    "`{}` needs fixed kv-head and head-dim axes, has {:?}",
                    input.name, input.shape
                )));
            };
            let out = std::format!("present.{rest}");
            let index =
                info.outputs.iter().position(|o| o.name == out).ok_or_else(|| missing(&format!("output `{out}`")))?;
            past.push((input.name.clone(), *heads, *dim));
            present.push(index);
        }
        let logits = info.outputs.iter().position(|o| o.name == "logits").ok_or_else(|| missing("output `logits`"))?;
        let vocab = info.outputs[logits].shape.last().copied().flatten().ok_or_else(|| missing("fixed vocab axis"))?;
        Ok(Self { past, logits, present, vocab: vocab as usize })
    }
}

const LM_INPUTS: [&str; 3] = ["input_ids", "attention_mask", "position_ids"];

fn ids_tensor(name: &str, values: Vec<i64>) -> Tensor {
    Tensor { name: name.to_string(), shape: std::vec![1, values.len() as u64], values: Values::I64(values) }
}

/// A deterministic random stream (SplitMix64), the same on every board.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks the next token from one row of logits.
pub fn pick(logits: &[f32], params: &GenParams, rng: &mut Rng) -> u32 {
    let greedy = || logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
    if params.temperature <= 0.0 {
        return greedy();
    }
    // Highest first; ties keep the lower id first, as a stable sort does.
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    if params.top_k > 0 {
        order.truncate(params.top_k as usize);
    }
    let t = f64::from(params.temperature);
    let top = f64::from(logits[order[0] as usize]);
    let weights: Vec<f64> = order.iter().map(|i| ((f64::from(logits[*i as usize]) - top) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    // The smallest head of the order whose probability reaches top_p.
    let mut kept = 0;
    let mut mass = 0.0;
    while kept < weights.len() {
        mass += weights[kept] / total;
        kept += 1;
        if mass >= f64::from(params.top_p) {
            break;
        }
    }
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut draw = rng.unit() * kept_total;
    for (i, w) in weights[..kept].iter().enumerate() {
        if draw < *w {
            return order[i];
        }
        draw -= w;
    }
    order[kept - 1]
}

/// Empty caches for a prefill.
fn empty_past(layout: &Layout) -> Vec<Tensor> {
    layout
        .past
        .iter()
        .map(|(name, heads, dim)| Tensor {
            name: name.clone(),
            shape: std::vec![1, *heads, 0, *dim],
            values: Values::F32(Vec::new()),
        })
        .collect()
}

/// One forward pass of `ids` after `cached` tokens whose keys and values
/// are `past`; gives the logits (every row) and the new cache.
fn step(
    engine: &mut dyn Engine,
    layout: &Layout,
    ids: Vec<i64>,
    cached: usize,
    mut past: Vec<Tensor>,
) -> Result<(Vec<f32>, Vec<Tensor>), GenerateError> {
    let total = cached + ids.len();
    let mut inputs = std::vec![
        ids_tensor("input_ids", ids),
        ids_tensor("attention_mask", std::vec![1; total]),
        ids_tensor("position_ids", (cached as i64..total as i64).collect()),
    ];
    inputs.append(&mut past);
    engine.set_inputs(&inputs)?;
    engine.run()?;
    let mut outputs: Vec<Option<Tensor>> = engine.take_outputs()?.into_iter().map(Some).collect();
    let mut take = |i: usize| outputs[i].take().ok_or_else(|| EngineError::Run(format!("output {i} missing")));
    let logits = match take(layout.logits)?.values {
        Values::F32(v) if v.len() % layout.vocab == 0 && !v.is_empty() => v,
        _ => return Err(EngineError::Run("logits are not f32 rows of the vocab".to_string()).into()),
    };
    let present = layout
        .present
        .iter()
        .zip(&layout.past)
        .map(|(i, (name, ..))| Ok(Tensor { name: name.clone(), ..take(*i)? }))
        .collect::<Result<_, EngineError>>()?;
    Ok((logits, present))
}

/// The logits of every position of `ids` in one pass (teacher forcing):
/// row `i` predicts token `i + 1`. Returns the rows and the vocab size.
pub fn logits_of(engine: &mut dyn Engine, ids: &[u32]) -> Result<(Vec<f32>, usize), GenerateError> {
    let layout = Layout::of(engine.info())?;
    if ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let past = empty_past(&layout);
    let (logits, _) = step(engine, &layout, ids.iter().map(|t| i64::from(*t)).collect(), 0, past)?;
    Ok((logits, layout.vocab))
}

/// Generates from `prompt`; `on_token(index, id, nanos since start)` sees
/// each token as it is picked and may stop the loop with an error of its own.
pub fn generate<E>(
    engine: &mut dyn Engine,
    prompt: &[u32],
    params: &GenParams,
    mut on_token: impl FnMut(u32, u32, u64) -> Result<(), E>,
) -> Result<Result<(Vec<u32>, GenReport), E>, GenerateError> {
    let layout = Layout::of(engine.info())?;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let mut rng = Rng::new(params.seed);
    let started = Instant::now();
    let mut past = empty_past(&layout);
    let mut tokens: Vec<u32> = Vec::new();
    let mut ids: Vec<i64> = prompt.iter().map(|t| i64::from(*t)).collect();
    let mut cached = 0;
    let (mut prefill_nanos, mut first_token_nanos) = (0, 0);
    let mut stop = StopReason::MaxNew;
    while tokens.len() < params.max_new as usize {
        let fed = ids.len();
        let (logits, present) = step(engine, &layout, core::mem::take(&mut ids), cached, past)?;
        (cached, past) = (cached + fed, present);
        if tokens.is_empty() {
            prefill_nanos = started.elapsed().as_nanos() as u64;
        }
        let id = pick(&logits[logits.len() - layout.vocab..], params, &mut rng);
        let nanos = started.elapsed().as_nanos() as u64;
        if tokens.is_empty() {
            first_token_nanos = nanos;
        }
        if let Err(e) = on_token(tokens.len() as u32, id, nanos) {
            return Ok(Err(e));
        }
        tokens.push(id);
        ids = std::vec![i64::from(id)];
        if params.eos == Some(id) {
            stop = StopReason::Eos;
            break;
        }
    }
    let report = GenReport {
        prompt_tokens: prompt.len() as u32,
        generated: tokens.len() as u32,
        prefill_nanos,
        first_token_nanos,
        decode_nanos: (started.elapsed().as_nanos() as u64).saturating_sub(first_token_nanos),
        kv_bytes: past.iter().map(|t| t.values.len() as u64 * 4).sum(),
        peak_heap: 0,
        peak_rss: 0,
        stop,
    };
    Ok(Ok((tokens, report)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: u32, top_p: f32) -> GenParams {
        GenParams { max_new: 1, temperature, top_k, top_p, seed: 0, eos: None }
    }

    #[test]
    fn zero_temperature_is_argmax() {
        assert_eq!(pick(&[0.1, 3.0, -1.0, 2.9], &params(0.0, 0, 1.0), &mut Rng::new(1)), 1);
    }

    #[test]
    fn top_k_and_top_p_bound_the_draw() {
        let logits = [5.0, 4.9, 4.8, -10.0, 4.7];
        let mut rng = Rng::new(3);
        let mut seen = [0u32; 5];
        for _ in 0..2000 {
            seen[pick(&logits, &params(1.0, 2, 1.0), &mut rng) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3] + seen[4], 0, "top-k 2 keeps ids 0 and 1: {seen:?}");
        assert!(seen[0] > 800 && seen[1] > 700, "both kept ids are drawn about equally: {seen:?}");
        // One id holds more than top_p of the mass: nucleus sampling keeps only it.
        let sharp = [10.0, 0.0, 0.0];
        assert!((0..200).all(|_| pick(&sharp, &params(1.0, 0, 0.9), &mut rng) == 0));
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|_| pick(&logits, &params(1.0, 10, 0.9), &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
