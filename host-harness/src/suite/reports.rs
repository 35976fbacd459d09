//! A suite's results for CI systems (JUnit XML) and for people (Markdown).

use std::fmt::Write;

use crate::report::Status;
use crate::units::human_bytes_or_dash;

use super::record::Record;

/// Counts per status, in a fixed order.
pub fn counts(records: &[Record]) -> [(Status, usize); 4] {
    [Status::Ok, Status::DoesNotFit, Status::Failed, Status::Skipped]
        .map(|s| (s, records.iter().filter(|r| r.status == s).count()))
}

/// Text for XML and HTML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Measurements as (name with unit, value) pairs: JUnit properties and LAVA measurements.
pub fn properties(r: &Record) -> Vec<(&'static str, String)> {
    let m = &r.measurements;
    let mut p = Vec::new();
    let mut add = |name, v: Option<String>| {
        if let Some(v) = v {
            p.push((name, v));
        }
    };
    add("latency_ms", m.latency_ms.map(|v| format!("{v:.6}")));
    add("predicted_ms", m.predicted_ms.map(|v| format!("{v:.6}")));
    add("tokens_per_s", m.tokens_per_s.map(|v| format!("{v:.3}")));
    add("peak_heap_bytes", m.peak_heap.map(|v| v.to_string()));
    add("peak_rss_bytes", m.peak_rss.map(|v| v.to_string()));
    add("budget_bytes", m.budget_bytes.map(|v| v.to_string()));
    add("accuracy", m.accuracy.map(|v| format!("{v:.6}")));
    add("accuracy_metric", m.accuracy_metric.clone());
    p
}

/// One testsuite, one testcase per case; does-not-fit and failed cases are
/// failures (type says which), skipped ones are skipped.
pub fn junit(suite: &str, records: &[Record]) -> String {
    let c = counts(records);
    let failures = c[1].1 + c[2].1;
    let time: f64 = records.iter().map(|r| r.duration_s).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"edgehil\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{}\" time=\"{time:.3}\">",
        records.len(),
        c[3].1
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{}\" time=\"{time:.3}\">",
        escape(suite),
        records.len(),
        c[3].1
    );
    for r in records {
        let k = &r.case;
        let _ = writeln!(
            s,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            escape(&format!("{}.{}.{}.{}", suite, k.model, k.compression, k.profile)),
            escape(&format!("{} {} {}", k.target, k.engine.name(), k.workload)),
            r.duration_s
        );
        let props = properties(r);
        if !props.is_empty() {
            s.push_str("      <properties>\n");
            for (name, value) in props {
                let _ = writeln!(s, "        <property name=\"{name}\" value=\"{}\"/>", escape(&value));
            }
            s.push_str("      </properties>\n");
        }
        let reason = escape(r.reason.as_deref().unwrap_or(""));
        match r.status {
            Status::Ok => {}
            Status::Skipped => {
                let _ = writeln!(s, "      <skipped message=\"{reason}\"/>");
            }
            Status::DoesNotFit | Status::Failed => {
                let _ =
                    writeln!(s, "      <failure type=\"{}\" message=\"{reason}\">{reason}</failure>", r.status.name());
            }
        }
        s.push_str("    </testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The Markdown summary: counts, then one row per case.
pub fn markdown(suite: &str, records: &[Record]) -> String {
    let mut s = format!("# Suite `{suite}`\n\n");
    let counts: Vec<String> = counts(records).iter().map(|(st, n)| format!("{n} {}", st.name())).collect();
    let _ = writeln!(s, "{} cases: {}\n", records.len(), counts.join(", "));
    s.push_str("| case | status | latency ms | predicted ms | peak | budget | accuracy | reason |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---|\n");
    for r in records {
        let m = &r.measurements;
        let accuracy = match (m.accuracy, &m.accuracy_metric) {
            (Some(a), Some(metric)) => format!("{a:.4} {metric}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.case.id(),
            r.status.name(),
            num(m.latency_ms, 3),
            num(m.predicted_ms, 3),
            human_bytes_or_dash(m.peak()),
            human_bytes_or_dash(m.budget_bytes),
            accuracy,
            r.reason.as_deref().unwrap_or("").replace('|', "\\|").replace('\n', " ")
        );
    }
    s
}

/// A LAVA test-case name: letters, digits, `-`, `_` and `.` only.
fn lava_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// `lava-test-case` calls, one per case with its latency as the measurement
/// and one more per case for peak RAM and for accuracy, so LAVA charts each
/// figure with its unit. The output is a shell script for a test definition's
/// run steps (`edgehil suite report OUT --format lava | sh`).
pub fn lava(records: &[Record]) -> String {
    let mut s = String::new();
    for r in records {
        let name = lava_name(&r.case.id());
        let result = match r.status {
            Status::Ok => "pass",
            Status::Skipped => "skip",
            Status::DoesNotFit | Status::Failed => "fail",
        };
        let m = &r.measurements;
        let measurement = |v: Option<String>, units: &str| match v {
            Some(v) => format!(" --measurement {v} --units {units}"),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "lava-test-case {name} --result {result}{}",
            measurement(m.latency_ms.map(|v| format!("{v:.6}")), "ms")
        );
        if let Some(peak) = m.peak() {
            let fits = m.budget_bytes.is_none_or(|b| peak <= b);
            let _ = writeln!(
                s,
                "lava-test-case {name}.peak_ram --result {}{}",
                if fits { "pass" } else { "fail" },
                measurement(Some(peak.to_string()), "bytes")
            );
        }
        if let (Some(a), Some(metric)) = (m.accuracy, &m.accuracy_metric) {
            let _ = writeln!(
                s,
                "lava-test-case {name}.{} --result pass{}",
                lava_name(metric),
                measurement(Some(format!("{a:.6}")), "fraction")
            );
        }
    }
    s
}
