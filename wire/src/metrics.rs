//! Metric types shared by the agent and the host.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Order statistics of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LatencySummary {
    pub count: u32,
    pub min_us: f64,
    pub median_us: f64,
    pub p90_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarises `samples_us`; `None` when there are none.
    pub fn from_micros(samples_us: &[f64]) -> Option<Self> {
        if samples_us.is_empty() {
            return None;
        }
        let mut s: Vec<f64> = samples_us.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        Some(Self {
            count: n as u32,
            min_us: s[0],
            median_us: percentile(&s, 0.5),
            p90_us: percentile(&s, 0.9),
            max_us: s[n - 1],
            mean_us: s.iter().sum::<f64>() / n as f64,
        })
    }
}

/// Linear interpolation between closest ranks (numpy's default), on sorted
/// data: `q` = 0.5 is the median, the mean of the middle two of an even count.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_numpy_percentiles() {
        // numpy.percentile([1..10], [50, 90]) == [5.5, 9.1]
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = LatencySummary::from_micros(&v).unwrap();
        assert_eq!((s.min_us, s.max_us), (1.0, 10.0));
        assert!((s.median_us - 5.5).abs() < 1e-12);
        assert!((s.p90_us - 9.1).abs() < 1e-12);
        assert!((s.mean_us - 5.5).abs() < 1e-12);
        assert!(LatencySummary::from_micros(&[]).is_none());
    }
}
