//! `edgehil split --sweep`: every placement run once (all on the board, all
//! in the cloud, adapters or a side network on the board, and each cut K), then SPA's formula over a grid of round
//! trips and bandwidths gives the fastest placement for each network.
//!
//! The grid uses the compute the profiles predict (the board's and the
//! cloud's own speeds; an emulated board's measured timings are this
//! machine's) and each placement's measured M and bytes per exchange.

use std::time::Duration;

use serde::Serialize;

use super::net::NetParams;
use super::{split, Mode, SplitError, SplitOptions, SplitReport};
use crate::profile::Profile;
use crate::units::BitRate;

/// Round trips of the grid: a LAN, a good and a typical Wi-Fi/4G link, a poor one, a bad one.
pub const RTTS_MS: [f64; 5] = [1.0, 10.0, 20.0, 50.0, 200.0];
/// Bandwidths of the grid, bits per second: 1 Mbit/s to 1 Gbit/s.
pub const RATES: [f64; 4] = [1e6, 10e6, 100e6, 1e9];

/// One network of the grid and what is fastest on it.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub rtt_ms: f64,
    pub bandwidth_bit_s: f64,
    /// Index into [`SweepReport::placements`] of the fastest.
    pub best: usize,
    /// Predicted per-token ms of every placement, in [`SweepReport::placements`]' order.
    pub total_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// Each placement's run (at the network given on the command line).
    pub placements: Vec<SplitReport>,
    pub cells: Vec<Cell>,
}

/// A placement's name: `board`, `cloud`, `layer K=2`.
pub fn label(r: &SplitReport) -> String {
    match r.mode {
        Mode::Layer => format!("layer K={}", r.k),
        Mode::Adapter => format!("adapter r={}", r.rank),
        Mode::Lst => format!("lst r={}", r.reduction),
        Mode::Board | Mode::Cloud => r.mode.name().into(),
    }
}

/// SPA's per-token time of `r` on the network (`rtt`, `rate`), with the profiles' predicted compute.
pub fn predicted_ms(r: &SplitReport, net: NetParams) -> f64 {
    r.predicted.dev_ms + r.predicted.cloud_ms + net.predicted(r.m, r.bytes_up + r.bytes_down).as_secs_f64() * 1e3
}

pub fn sweep(opts: &SplitOptions, board: &Profile, cloud: &Profile) -> Result<SweepReport, SplitError> {
    let layers =
        edgehil_onnx::hf::HfModel::open(&opts.model).map_err(edgehil_onnx::export::ExportError::from)?.config.layers;
    let runs = [(Mode::Board, None), (Mode::Cloud, None), (Mode::Adapter, None), (Mode::Lst, None)]
        .into_iter()
        .chain((1..layers).map(|k| (Mode::Layer, Some(k))));
    let mut placements = Vec::new();
    for (mode, k) in runs {
        placements.push(split(&SplitOptions { mode, k, ..opts.clone() }, board, cloud)?);
    }
    let mut cells = Vec::new();
    for rtt_ms in RTTS_MS {
        for rate in RATES {
            let net = NetParams { rtt: Duration::from_secs_f64(rtt_ms / 1e3), bits_per_s: rate };
            let total_ms: Vec<f64> = placements.iter().map(|p| predicted_ms(p, net)).collect();
            let best = (0..total_ms.len()).min_by(|&a, &b| total_ms[a].total_cmp(&total_ms[b])).unwrap_or(0);
            cells.push(Cell { rtt_ms, bandwidth_bit_s: rate, best, total_ms });
        }
    }
    Ok(SweepReport { placements, cells })
}

/// A placement's row: label, M, bytes, measured and predicted times.
pub fn placement_cells(p: &SplitReport) -> [String; 8] {
    [
        label(p),
        p.m.to_string(),
        format!("{}+{}", p.bytes_up, p.bytes_down),
        format!("{:.3}", p.measured.dev_ms),
        format!("{:.3}", p.measured.cloud_ms),
        format!("{:.3}", p.measured.net_ms),
        format!("{:.4}", p.predicted.dev_ms),
        format!("{:.4}", p.predicted.cloud_ms),
    ]
}

impl SweepReport {
    /// The placements as measured, then the best placement per network.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| placement | M | bytes up+down | measured T_dev ms | measured T_cloud ms | measured T_net ms | predicted T_dev ms | predicted T_cloud ms |\n|---|---|---|---|---|---|---|---|\n",
        );
        for p in &self.placements {
            out += &format!("| {} |\n", placement_cells(p).join(" | "));
        }
        out += "\nBest placement per network (SPA's formula, the profiles' predicted compute), per-token ms:\n\n";
        out += "| rtt | bandwidth | best | T ms |";
        let names: Vec<String> = self.placements.iter().map(label).collect();
        for n in &names {
            out += &format!(" {n} |");
        }
        out += "\n|---|---|---|---|";
        out += &"---|".repeat(names.len());
        out += "\n";
        for c in &self.cells {
            out += &format!(
                "| {} ms | {} | {} | {:.3} |",
                c.rtt_ms,
                BitRate(c.bandwidth_bit_s),
                names[c.best],
                c.total_ms[c.best]
            );
            for t in &c.total_ms {
                out += &format!(" {t:.3} |");
            }
            out += "\n";
        }
        out
    }
}
