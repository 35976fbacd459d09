//! What `edgehil calibrate` prints: the cases it used, and how well the fit explains them.

use std::fmt::Write;

use crate::units::human_rate;

use super::fit::{Fit, Param};
use super::read::Measured;

impl Measured {
    /// "runs.json: 18 usable cases (ort on emu); skipped 3: 2 with status failed, 1 of other profiles".
    pub fn summary(&self) -> String {
        let mut s = format!("{}: {} usable cases", self.path.display(), self.cases.len());
        if !self.cases.is_empty() {
            let _ = write!(s, " ({} on {})", self.engine.name(), self.target);
        }
        if !self.skipped.is_empty() {
            let total: usize = self.skipped.iter().map(|(_, n)| n).sum();
            let parts: Vec<String> = self.skipped.iter().map(|(why, n)| format!("{n} {why}")).collect();
            let _ = write!(s, "; skipped {total}: {}", parts.join(", "));
        }
        s
    }
}

impl Fit {
    /// Per case: measured, fitted and the error; then the median and largest error, and the parameters.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0).max(4);
        let mut s =
            format!("{:<width$} {:>6} {:>12} {:>12} {:>8}\n", "case", "tokens", "measured ms", "fitted ms", "error");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<width$} {:>6} {:>12.3} {:>12.3} {:>7.1}%",
                r.label,
                r.tokens,
                r.measured_ms,
                r.fitted_ms,
                r.error_pct()
            );
        }
        let _ = writeln!(s, "median |error| {:.1}%, max |error| {:.1}%", self.median_abs_pct, self.max_abs_pct);
        for param in Param::ALL {
            let v = param.of(&self.params);
            let value = match param {
                Param::Compute => human_rate(v, "FLOP/s"),
                Param::ComputeInt8 => human_rate(v, "OP/s"),
                Param::Bandwidth => human_rate(v, "B/s"),
                Param::CallOverhead => format!("{:.1} us", v * 1e6),
                Param::OpOverhead | Param::TokenOverhead => format!("{:.2} us", v * 1e6),
                Param::Unpack | Param::UnpackOneRow => format!("{:.4} ns per weight", v * 1e9),
            };
            let why = self.not_fitted[param].map(|w| format!(" (not fitted: {w})")).unwrap_or_default();
            let _ = writeln!(s, "  {:<15} {value}{why}", param.name());
        }
        s
    }
}
