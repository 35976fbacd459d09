//! The HTML page of a suite's results: one self-contained file that opens
//! from disk with no server and no network, so CI can keep it as an artifact
//! and anyone can open it offline.
//!
//! The header and the table of cases are plain HTML made here, so they read
//! even with scripts blocked. The charts are SVG drawn in the browser by a
//! small hand-written script (`html/charts.js`) from the records embedded as
//! JSON: drawing needs text measurement and layout that a browser does well
//! and Rust string templates do badly.

use std::fmt::Write;

use serde_json::{json, Value};

use super::record::Record;
use super::reports::escape;
use crate::report::Status;
use crate::units::human_bytes_or_dash;

const STYLE: &str = include_str!("html/style.css");
const SCRIPT: &str = include_str!("html/charts.js");

/// The whole page for `records` of suite `suite`, cases sorted by case.
pub fn html(suite: &str, records: &[Record]) -> String {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| a.case.cmp(&b.case));
    let title = escape(suite);
    let mut page = String::new();
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // The policy makes "no network" a property of the page, not a promise:
    // anything that tried to load from elsewhere would be refused.
    page.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         script-src 'unsafe-inline'; style-src 'unsafe-inline'\">\n",
    );
    let _ = writeln!(page, "<title>{title} · edgehil suite</title>");
    let _ = writeln!(page, "<style>\n{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(page, "<header><h1>Suite {title}</h1>{}</header>", counts(&sorted));
    page.push_str(BODY);
    page.push_str(&table(&sorted));
    let _ = writeln!(page, "<script type=\"application/json\" id=\"data\">{}</script>", data(&sorted));
    let _ = writeln!(page, "<script>\n{SCRIPT}</script>\n</body>\n</html>");
    page
}

/// The chart sections the script fills, and the place it reports an error.
const BODY: &str = r#"<p id="error" role="alert"></p>
<noscript><p class="note">The charts need JavaScript; the table of cases does not.</p></noscript>
<section>
<h2>Latency per model and profile</h2>
<p class="note">run: median time of one inference; generate: mean time per generated token; eval: mean time per item.
The short dark mark beside a bar is the latency model's prediction for the profile's device.</p>
<div class="chart" id="latency"></div>
</section>
<section>
<h2>Peak RAM against the budget</h2>
<p class="note">Peak heap where the allocator measured it, else peak resident set; the black line is the case's RAM cap.</p>
<div class="chart" id="ram"></div>
</section>
<section>
<h2>Emulated vs real board latency</h2>
<p class="note">The same case on the emulated board and on a real one. Above the line the board is slower than the emulation.</p>
<div class="chart" id="targets"></div>
</section>
"#;

/// "6 ok · 1 does not fit · …", each count in its status's colour.
fn counts(records: &[&Record]) -> String {
    let all = [Status::Ok, Status::DoesNotFit, Status::Failed, Status::Skipped];
    let parts: Vec<String> = all
        .iter()
        .map(|&s| {
            let n = records.iter().filter(|r| r.status == s).count();
            format!("<span class=\"s-{}\">{n} {}</span>", s.name(), label(s))
        })
        .collect();
    format!("<p class=\"counts\">{} cases: {}</p>", records.len(), parts.join(" · "))
}

fn label(s: Status) -> String {
    s.name().replace('_', " ")
}

/// One row per case, with the same units as the text reports.
fn table(records: &[&Record]) -> String {
    let mut s = String::from(
        "<section>\n<h2>Every case</h2>\n<table>\n<thead><tr><th>case</th><th>status</th><th>reason</th>\
         <th>latency</th><th>peak RAM</th><th>budget</th><th>accuracy</th><th>duration</th></tr></thead>\n<tbody>\n",
    );
    for r in records {
        let m = &r.measurements;
        let over = matches!((m.peak(), m.budget_bytes), (Some(p), Some(b)) if p > b);
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"s-{}\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1} s</td></tr>",
            escape(&r.case.id()),
            r.status.name(),
            label(r.status),
            escape(r.reason.as_deref().unwrap_or("")),
            m.latency_ms.map_or("-".into(), |v| format!("{v:.3} ms")),
            if over { " over" } else { "" },
            human_bytes_or_dash(m.peak()),
            human_bytes_or_dash(m.budget_bytes),
            accuracy(r),
            r.duration_s,
        );
    }
    s.push_str("</tbody>\n</table>\n</section>\n");
    s
}

fn accuracy(r: &Record) -> String {
    let m = &r.measurements;
    match (m.accuracy, &m.accuracy_metric) {
        (Some(a), Some(metric)) => format!("{a:.3} ({})", escape(metric)),
        (Some(a), None) => format!("{a:.3}"),
        (None, _) => "-".into(),
    }
}

/// What the charts read, as JSON safe inside a script element: every `<` is
/// written `\u003c` (same string to JSON.parse), so no value can close the
/// element or open a comment.
fn data(records: &[&Record]) -> String {
    let cases: Vec<Value> = records.iter().map(|r| row(r)).collect();
    json!({ "cases": cases }).to_string().replace('<', "\\u003c")
}

/// A case as the charts need it; `peak` is the figure the verdict used.
fn row(r: &Record) -> Value {
    let (c, m) = (&r.case, &r.measurements);
    json!({
        "id": c.id(),
        "pair": c.without_target(),
        "model": c.model,
        "compression": c.compression,
        "profile": c.profile,
        "target": c.target.to_string(),
        "engine": c.engine,
        "workload": c.workload,
        "status": r.status.name(),
        "latency_ms": m.latency_ms,
        "predicted_ms": m.predicted_ms,
        "peak": m.peak(),
        "budget": m.budget_bytes,
    })
}
