//! Retrieval on the board: a sentence-embedding model turns each item into
//! a vector, the index holds them, and a query gets the items of largest
//! inner product (the study's RAG: MiniLM, top 3). MiniLM's embeddings are
//! normalised, so the inner product is the cosine.

use std::format;
use std::string::ToString;
use std::vec::Vec;

use crate::engine::{Engine, EngineError};
use crate::wire::{Tensor, Values};

/// The embedding of one item's token ids (batch 1, no padding).
pub fn embed(engine: &mut dyn Engine, ids: &[u32]) -> Result<Vec<f32>, EngineError> {
    let n = ids.len() as u64;
    let inputs = engine
        .info()
        .inputs
        .iter()
        .map(|info| {
            let values: Vec<i64> = match info.name.as_str() {
                "input_ids" => ids.iter().map(|t| i64::from(*t)).collect(),
                "attention_mask" => std::vec![1; ids.len()],
                "token_type_ids" => std::vec![0; ids.len()],
                other => return Err(EngineError::Inputs(format!("an embedder takes no input `{other}`"))),
            };
            Ok(Tensor { name: info.name.clone(), shape: std::vec![1, n], values: Values::I64(values) })
        })
        .collect::<Result<Vec<_>, _>>()?;
    engine.set_inputs(&inputs)?;
    engine.run()?;
    let outputs = engine.take_outputs()?;
    match outputs.into_iter().find(|t| t.name == "sentence_embedding").map(|t| t.values) {
        Some(Values::F32(v)) => Ok(v),
        _ => Err(EngineError::Run("the embedder gave no f32 `sentence_embedding`".to_string())),
    }
}

/// Item vectors, one after the other.
#[derive(Debug, Default)]
pub struct Index {
    dim: usize,
    data: Vec<f32>,
}

impl Index {
    pub fn add(&mut self, v: Vec<f32>) -> Result<(), EngineError> {
        if self.data.is_empty() {
            self.dim = v.len();
        } else if v.len() != self.dim {
            return Err(EngineError::Run(format!("embedding of {} values in an index of {}", v.len(), self.dim)));
        }
        self.data.extend(v);
        Ok(())
    }

    pub fn clear(&mut self) {
        self.data = Vec::new();
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.data.len() as u64 * 4
    }

    /// The `k` items of largest inner product with `query`, best first;
    /// ties keep the earlier item first.
    pub fn top(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut scored: Vec<(u32, f32)> = self
            .data
            .chunks(self.dim.max(1))
            .enumerate()
            .map(|(i, v)| (i as u32, v.iter().zip(query).map(|(a, b)| a * b).sum()))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_is_by_inner_product_and_rejects_other_sizes() {
        let mut index = Index::default();
        index.add(std::vec![1.0, 0.0]).unwrap();
        index.add(std::vec![0.6, 0.8]).unwrap();
        index.add(std::vec![0.0, 1.0]).unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(index.bytes(), 24);
        let top = index.top(&[0.0, 1.0], 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 1]);
        assert!(index.add(std::vec![1.0]).is_err());
    }
}
