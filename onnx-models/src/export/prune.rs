//! Pruning: unstructured magnitude pruning (zeros: the files and the RAM do
//! not shrink, and the manifest says so) and structured pruning of attention
//! heads or MLP channels (the tensors shrink).

use std::str::FromStr;

use serde::Serialize;

use super::emit::{Lin, Mat};
use super::ExportError;
use crate::hf::Config;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prune {
    /// Zero this share of each layer weight, smallest magnitudes first.
    Magnitude(f64),
    /// Drop this many attention heads per layer, those with the smallest output projection norm.
    Heads(u64),
    /// Drop this share of each layer's MLP channels, smallest norm first.
    Mlp(f64),
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneSummary {
    pub method: String,
    /// Parameters removed from the tensors (structured pruning).
    pub parameters_removed: u64,
    /// Weights that are exactly zero in the exported linear layers.
    pub zeros: u64,
    pub effect: &'static str,
}

impl FromStr for Prune {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ExportError::Option(format!(
                "--prune `{s}`: expected magnitude:FRACTION, heads:N or mlp:FRACTION (e.g. magnitude:0.5, heads:2, mlp:0.25)"
            ))
        };
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        let fraction = || value.parse::<f64>().ok().filter(|f| (0.0..1.0).contains(f)).ok_or_else(bad);
        match kind {
            "magnitude" => Ok(Prune::Magnitude(fraction()?)),
            "mlp" => Ok(Prune::Mlp(fraction()?)),
            "heads" => value.parse().map(Prune::Heads).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Prune {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prune::Magnitude(x) => write!(f, "magnitude:{x}"),
            Prune::Heads(n) => write!(f, "heads:{n}"),
            Prune::Mlp(x) => write!(f, "mlp:{x}"),
        }
    }
}

impl Prune {
    pub fn check(&self, config: &Config) -> Result<(), ExportError> {
        match *self {
            Prune::Heads(n) if n == 0 || n >= config.heads => Err(ExportError::Option(format!(
                "--prune heads:{n}: the model has {} heads a layer; drop between 1 and {}",
                config.heads,
                config.heads - 1
            ))),
            Prune::Heads(_) if config.kv_heads != config.heads => Err(ExportError::Unsupported(format!(
                "--prune heads: the model shares {} key/value heads among {} query heads (grouped-query attention); \
                 dropping a query head would not free its key/value head",
                config.kv_heads, config.heads
            ))),
            _ => Ok(()),
        }
    }

    pub fn summary(&self, removed: u64) -> PruneSummary {
        PruneSummary {
            method: self.to_string(),
            parameters_removed: removed,
            zeros: 0,
            effect: match self {
                Prune::Magnitude(_) => "weights set to zero; stored dense, so the files and the RAM do not shrink",
                Prune::Heads(_) | Prune::Mlp(_) => "tensors shrink: fewer parameters in the files and in RAM",
            },
        }
    }
}

/// Zeroes the `fraction` of `w`'s entries with the smallest magnitude.
pub fn magnitude(w: &mut Mat, fraction: f64) {
    let k = (w.data.len() as f64 * fraction) as usize;
    if k == 0 {
        return;
    }
    let mut mags: Vec<f32> = w.data.iter().map(|v| v.abs()).collect();
    let (_, threshold, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
    let threshold = *threshold;
    // Ties at the threshold: zero only as many as still needed.
    let mut left = k - w.data.iter().filter(|v| v.abs() < threshold).count();
    for v in &mut w.data {
        let a = v.abs();
        if a < threshold {
            *v = 0.0;
        } else if a == threshold && left > 0 {
            *v = 0.0;
            left -= 1;
        }
    }
}

/// The `keep` units with the largest score, in their original order.
fn strongest(scores: &[f32], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    order.truncate(keep);
    order.sort_unstable();
    order
}

fn col_norms(m: &Mat) -> Vec<f32> {
    let mut n = vec![0f32; m.cols];
    for r in 0..m.rows {
        for (c, v) in m.data[r * m.cols..(r + 1) * m.cols].iter().enumerate() {
            n[c] += v * v;
        }
    }
    n
}

fn select_rows(lin: &mut Lin, rows: &[usize]) {
    lin.w = lin.w.select_rows(rows);
    if let Some(b) = &mut lin.b {
        *b = rows.iter().map(|r| b[*r]).collect();
    }
}

/// Drops `drop` heads from q/k/v (rows) and o (columns). Returns the heads
/// kept and the parameters removed.
pub fn heads(q: &mut Lin, k: &mut Lin, v: &mut Lin, o: &mut Lin, heads: usize, drop: usize) -> (usize, u64) {
    let hd = q.w.rows / heads;
    let norms = col_norms(&o.w);
    let scores: Vec<f32> = (0..heads).map(|h| norms[h * hd..(h + 1) * hd].iter().sum()).collect();
    let kept = strongest(&scores, heads - drop);
    let dims: Vec<usize> = kept.iter().flat_map(|h| h * hd..(h + 1) * hd).collect();
    let before = count(&[q, k, v, o]);
    for lin in [&mut *q, &mut *k, &mut *v] {
        select_rows(lin, &dims);
    }
    o.w = o.w.select_cols(&dims);
    (kept.len(), before - count(&[q, k, v, o]))
}

/// Drops the `fraction` of MLP channels with the smallest ‖in row‖·‖out column‖.
/// `ins` are the layers producing the channels (up, and gate for SwiGLU), `out` consumes them.
pub fn mlp(ins: &mut [&mut Lin], out: &mut Lin, fraction: f64) -> u64 {
    let channels = out.w.cols;
    let keep = channels - (channels as f64 * fraction) as usize;
    let out_norms = col_norms(&out.w);
    let in_norms: Vec<f32> = (0..channels)
        .map(|c| {
            ins.iter().map(|l| l.w.data[c * l.w.cols..(c + 1) * l.w.cols].iter().map(|v| v * v).sum::<f32>()).sum()
        })
        .collect();
    let scores: Vec<f32> = (0..channels).map(|c| (out_norms[c] * in_norms[c]).sqrt()).collect();
    let kept = strongest(&scores, keep);
    let before = ins.iter().map(|l| size(l)).sum::<u64>() + size(out);
    for lin in ins.iter_mut() {
        select_rows(lin, &kept);
    }
    out.w = out.w.select_cols(&kept);
    before - ins.iter().map(|l| size(l)).sum::<u64>() - size(out)
}

fn size(l: &Lin) -> u64 {
    (l.w.data.len() + l.b.as_ref().map_or(0, Vec::len)) as u64
}

fn count(lins: &[&mut Lin]) -> u64 {
    lins.iter().map(|l| size(l)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_zeroes_exactly_the_share_asked() {
        let mut w = Mat::new(2, 4, vec![0.1, -0.5, 0.3, -0.2, 0.8, 0.05, -0.7, 0.4]);
        magnitude(&mut w, 0.5);
        assert_eq!(w.data, vec![0.0, -0.5, 0.0, 0.0, 0.8, 0.0, -0.7, 0.4]);
    }

    #[test]
    fn options_parse_or_name_what_was_expected() {
        assert_eq!("heads:2".parse::<Prune>().unwrap(), Prune::Heads(2));
        assert_eq!("mlp:0.25".parse::<Prune>().unwrap(), Prune::Mlp(0.25));
        let e = "magnitude:1.5".parse::<Prune>().unwrap_err().to_string();
        assert!(e.contains("expected magnitude:FRACTION"), "{e}");
    }
}
