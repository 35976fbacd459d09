//! The sweep's HTML page: one self-contained file (no script, no network)
//! with the best placement per network as an SVG grid, drawn here: its cells
//! are of fixed size, so it needs none of the text layout the suite's
//! charts leave to the browser.

use std::fmt::Write;

use super::sweep::{label, placement_cells, SweepReport, RATES, RTTS_MS};
use crate::suite::reports::escape;
use crate::units::BitRate;

const STYLE: &str = include_str!("../suite/html/style.css");
const CELL_W: usize = 150;
const CELL_H: usize = 44;
const LEFT: usize = 80;
const TOP: usize = 30;

/// A placement's colour: board green, cloud blue, cuts in shades of orange by K.
fn colour(name: &str, k: u64, layers: u64) -> String {
    match name {
        "board" => "#6ab04c".into(),
        "cloud" => "#4a90d9".into(),
        "adapter" => "#9b59b6".into(),
        "lst" => "#16a085".into(),
        _ => format!("hsl(30, 85%, {}%)", 40 + 40 * k / layers.max(1)),
    }
}

pub fn html(model: &str, report: &SweepReport) -> String {
    let title = escape(model);
    let mut page = String::new();
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    let _ = writeln!(page, "<title>{title} · edgehil split sweep</title>");
    let _ = writeln!(page, "<style>\n{STYLE}</style>\n</head>\n<body>");
    let first = report.placements.first();
    let _ = writeln!(
        page,
        "<header><h1>Split sweep: {title}</h1><p>board {} · cloud {}</p></header>",
        escape(first.map_or("", |p| p.board_profile.as_str())),
        escape(first.map_or("", |p| p.cloud_profile.as_str())),
    );
    page.push_str("<section>\n<h2>Best placement per network</h2>\n<p class=\"note\">SPA's formula T = T_dev + T_cloud + M × (τ + bytes / bandwidth) with the profiles' predicted compute; each cell names the fastest placement and its per-token time.</p>\n");
    page.push_str(&chart(report));
    page.push_str("</section>\n<section>\n<h2>Placements</h2>\n<table>\n<thead><tr><th>placement</th><th>M</th><th>bytes up+down</th><th>measured T_dev ms</th><th>measured T_cloud ms</th><th>measured T_net ms</th><th>predicted T_dev ms</th><th>predicted T_cloud ms</th></tr></thead>\n<tbody>\n");
    for p in &report.placements {
        let cells: Vec<String> = placement_cells(p).iter().map(|c| format!("<td>{}</td>", escape(c))).collect();
        let _ = writeln!(page, "<tr>{}</tr>", cells.concat());
    }
    let network = first.map_or(String::new(), |p| escape(&p.network));
    let _ =
        writeln!(page, "</tbody>\n</table>\n<p class=\"note\">Network: {network}</p>\n</section>\n</body>\n</html>");
    page
}

/// The grid: round trips down, bandwidths across.
fn chart(report: &SweepReport) -> String {
    let (w, h) = (LEFT + CELL_W * RATES.len(), TOP + CELL_H * RTTS_MS.len());
    let mut svg = format!(
        "<svg id=\"best\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"best placement per round trip and bandwidth\">\n"
    );
    for (j, rate) in RATES.iter().enumerate() {
        let x = LEFT + CELL_W * j + CELL_W / 2;
        let _ = writeln!(svg, "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>", TOP - 10, BitRate(*rate));
    }
    for (i, rtt) in RTTS_MS.iter().enumerate() {
        let y = TOP + CELL_H * i + CELL_H / 2 + 5;
        let _ = writeln!(svg, "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">rtt {rtt} ms</text>", LEFT - 8);
    }
    for (n, cell) in report.cells.iter().enumerate() {
        let (i, j) = (n / RATES.len(), n % RATES.len());
        let (x, y) = (LEFT + CELL_W * j, TOP + CELL_H * i);
        let best = &report.placements[cell.best];
        let name = label(best);
        let _ = writeln!(
            svg,
            "<g class=\"cell\" data-best=\"{name}\"><rect x=\"{x}\" y=\"{y}\" width=\"{CELL_W}\" height=\"{CELL_H}\" fill=\"{}\" stroke=\"#fff\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{name} · {:.2} ms</text></g>",
            colour(best.mode.name(), best.k, best.layers),
            x + CELL_W / 2,
            y + CELL_H / 2 + 5,
            cell.total_ms[cell.best]
        );
    }
    svg.push_str("</svg>\n");
    svg
}
