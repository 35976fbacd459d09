//! Output agreement between the board and the host reference, with the
//! metrics ST Edge AI's validate reports (L2R, RMSE, MAE, COS) plus the
//! largest absolute error and top-1 agreement along a class axis.

use serde::{Deserialize, Serialize};

use edgehil_hil::OutputData;
use edgehil_runtime::wire::{Tensor, Values};

/// Metrics for one output; `None` where the output mode did not carry enough.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub output: String,
    /// ‖board − ref‖₂ / ‖ref‖₂
    pub l2r: Option<f64>,
    pub rmse: Option<f64>,
    pub mae: Option<f64>,
    pub cosine: Option<f64>,
    pub max_abs: Option<f64>,
    /// Share of rows (over the last axis) whose argmax agrees; only for
    /// outputs with a class axis (rank ≥ 2, last dimension > 1).
    pub top1: Option<f64>,
    /// For digest mode: the CRC of the board's output equals the reference's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_equal: Option<bool>,
}

pub fn floats(t: &Tensor) -> Vec<f64> {
    match &t.values {
        Values::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        Values::I64(v) => v.iter().map(|x| *x as f64).collect(),
    }
}

fn argmax(row: &[f64]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

fn class_rows(shape: &[u64]) -> Option<usize> {
    match shape {
        [.., last] if shape.len() >= 2 && *last > 1 => Some(*last as usize),
        _ => None,
    }
}

/// Compares full tensors.
pub fn compare_full(board: &[f64], reference: &[f64], shape: &[u64], name: &str) -> Accuracy {
    let n = reference.len().max(1) as f64;
    let (mut se, mut ae, mut max_abs, mut dot, mut nb, mut nr) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for (b, r) in board.iter().zip(reference) {
        let d = b - r;
        se += d * d;
        ae += d.abs();
        max_abs = max_abs.max(d.abs());
        dot += b * r;
        nb += b * b;
        nr += r * r;
    }
    let top1 = class_rows(shape).map(|c| {
        let rows = reference.len() / c;
        let agree = board.chunks(c).zip(reference.chunks(c)).filter(|(b, r)| argmax(b) == argmax(r)).count();
        agree as f64 / rows.max(1) as f64
    });
    let cosine = if nb == 0.0 && nr == 0.0 { 1.0 } else { dot / (nb.sqrt() * nr.sqrt()).max(f64::MIN_POSITIVE) };
    Accuracy {
        output: name.into(),
        l2r: Some(if nr == 0.0 { se.sqrt() } else { se.sqrt() / nr.sqrt() }),
        rmse: Some((se / n).sqrt()),
        mae: Some(ae / n),
        cosine: Some(cosine),
        max_abs: Some(max_abs),
        top1,
        digest_equal: None,
    }
}

/// Compares what the board sent, in whatever mode, with the reference.
pub fn compare(board: &OutputData, reference: &Tensor) -> Accuracy {
    let r = floats(reference);
    let empty = |name: &str| Accuracy {
        output: name.into(),
        l2r: None,
        rmse: None,
        mae: None,
        cosine: None,
        max_abs: None,
        top1: None,
        digest_equal: None,
    };
    match board {
        OutputData::Full(t) => compare_full(&floats(t), &r, &reference.shape, &t.name),
        OutputData::TopK { name, rows, .. } => {
            let mut a = empty(name);
            a.top1 = class_rows(&reference.shape).map(|c| {
                let agree = rows
                    .iter()
                    .zip(r.chunks(c))
                    .filter(|((idx, _), row)| idx.first().map(|i| *i as usize) == Some(argmax(row)))
                    .count();
                agree as f64 / rows.len().max(1) as f64
            });
            a
        }
        OutputData::Digest { name, digest, .. } => {
            let mut a = empty(name);
            let floats32: Vec<f32> = r.iter().map(|v| *v as f32).collect();
            a.digest_equal = Some(edgehil_runtime::wire::Digest::of(&floats32).crc32 == digest.crc32);
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        let r = [1.0, 0.0, 0.0, 1.0];
        let b = [1.0, 0.0, 0.5, 0.0];
        let a = compare_full(&b, &r, &[2, 2], "y");
        // d = [0, 0, 0.5, -1]: SE 1.25, ‖r‖ = √2
        assert!((a.rmse.unwrap() - (1.25f64 / 4.0).sqrt()).abs() < 1e-12);
        assert!((a.mae.unwrap() - 0.375).abs() < 1e-12);
        assert!((a.l2r.unwrap() - (1.25f64).sqrt() / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(a.max_abs, Some(1.0));
        // cos = 1 / (√1.25 · √2)
        assert!((a.cosine.unwrap() - 1.0 / (1.25f64.sqrt() * 2f64.sqrt())).abs() < 1e-12);
        // row 0 argmax 0 = 0; row 1: board [0.5, 0] → 0, ref [0, 1] → 1
        assert_eq!(a.top1, Some(0.5));
        assert_eq!(compare_full(&[1.0, 2.0], &[1.0, 2.0], &[2], "v").top1, None, "no class axis on a vector");
    }
}
