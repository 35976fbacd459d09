//! The suite's HTML page as a user sees it: opened from disk in headless
//! Chromium, with the DOM read after its script has drawn the charts.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgehil::report::Status;
use edgehil::suite::html::html;
use edgehil::suite::record::{Case, Measurements, Record, SCHEMA_VERSION};
use edgehil_runtime::wire::EngineKind;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const ACM: &str = "serial:/dev/ttyACM0";

fn case(model: &str, compression: &str, profile: &str, target: &str) -> Case {
    Case {
        model: model.into(),
        compression: compression.into(),
        profile: profile.into(),
        target: target.parse().unwrap(),
        engine: EngineKind::Tract,
        workload: "run".into(),
    }
}

fn record(case: Case, status: Status, reason: Option<&str>, measurements: Measurements) -> Record {
    Record {
        schema_version: SCHEMA_VERSION,
        suite: "nightly".into(),
        case,
        status,
        reason: reason.map(Into::into),
        started_unix_s: 1_790_000_000.0,
        duration_s: 4.2,
        measurements,
        report: None,
    }
}

fn ran(latency_ms: f64, predicted_ms: Option<f64>, heap: Option<u64>, rss: Option<u64>, budget: u64) -> Measurements {
    Measurements {
        latency_ms: Some(latency_ms),
        predicted_ms,
        peak_heap: heap,
        peak_rss: rss,
        budget_bytes: Some(budget),
        ..Measurements::default()
    }
}

/// 2 models × 2 profiles on the emulated board, two of them also on a real
/// board, one that does not fit, one failed and one skipped.
fn nightly() -> Vec<Record> {
    let ok = Status::Ok;
    vec![
        record(
            case("tinyllama", "int4", "pi-zero-2w", "emu"),
            ok,
            None,
            ran(850.0, Some(900.0), Some(300 * MIB), None, 400 * MIB),
        ),
        record(
            case("tinyllama", "int4", "rpi5", "emu"),
            ok,
            None,
            ran(120.0, Some(95.0), Some(300 * MIB), None, 6 * GIB),
        ),
        // No heap figure (ONNX Runtime): the peak is the resident set.
        record(
            case("minilm", "int8", "pi-zero-2w", "emu"),
            ok,
            None,
            ran(12.0, Some(15.0), None, Some(40 * MIB), 400 * MIB),
        ),
        // Both figures: the peak is the heap, not the larger RSS.
        record(
            case("minilm", "int8", "rpi5", "emu"),
            ok,
            None,
            ran(2.5, None, Some(38 * MIB), Some(90 * MIB), 6 * GIB),
        ),
        record(
            case("tinyllama", "int4", "pi-zero-2w", ACM),
            ok,
            None,
            ran(1010.0, None, Some(310 * MIB), None, 400 * MIB),
        ),
        record(case("minilm", "int8", "pi-zero-2w", ACM), ok, None, ran(14.0, None, None, Some(44 * MIB), 400 * MIB)),
        record(
            case("tinyllama", "none", "pi-zero-2w", "emu"),
            Status::DoesNotFit,
            Some("needed >= 1.9 GiB, cap 400.0 MiB (heap)"),
            Measurements { peak_heap: Some(1946 * MIB), budget_bytes: Some(400 * MIB), ..Measurements::default() },
        ),
        record(
            case("phi", "int4", "rpi5", "emu"),
            Status::Failed,
            Some("agent exited: signal 11"),
            Measurements::default(),
        ),
        record(
            case("phi", "int4", "pi-zero-2w", "emu"),
            Status::Skipped,
            Some("prompt longer than the context"),
            Measurements::default(),
        ),
    ]
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("EDGEHIL_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.is_file(),
        "Chromium is missing at {} (or set EDGEHIL_CHROMIUM): scripts/test.sh installs it (apt-get install chromium)",
        path.display()
    );
    path
}

/// Runs headless Chromium on `page` with `action` (--dump-dom or
/// --screenshot=…), its stdout to `out`, in a fresh profile, and kills it if
/// it hangs.
fn chromium_run(page: &Path, action: &str, out: &Path) {
    let profile = out.with_extension("profile");
    let _ = std::fs::remove_dir_all(&profile);
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=10000", "--window-size=1200,1600", action])
        .arg(format!("file://{}", page.display()))
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium {action} on {} did not finish in 120 s", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "chromium {action}: {status}\n{stderr}");
}

/// The page written to `dir`, and its DOM after the script ran.
fn render(dir: &Path, page_html: &str) -> (PathBuf, String) {
    let page = dir.join("suite.html");
    std::fs::write(&page, page_html).unwrap();
    let dom = dir.join("dom.html");
    chromium_run(&page, "--dump-dom", &dom);
    (page, std::fs::read_to_string(dom).unwrap())
}

/// A start tag as Chromium serializes it: name and double-quoted attributes.
#[derive(Debug)]
struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn num(&self, name: &str) -> f64 {
        self.attr(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} of {self:?}"))
    }

    fn has_class(&self, class: &str) -> bool {
        self.attr("class").is_some_and(|c| c.split_whitespace().any(|w| w == class))
    }

    fn case(&self) -> &str {
        self.attr("data-case").unwrap_or_else(|| panic!("no data-case on {self:?}"))
    }
}

/// Every start tag in `html`, in order. Quote-aware, so a `>` inside an
/// attribute value does not end the tag.
fn tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off + 1;
        let name_end = i + html[i..].find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(html.len() - i);
        if name_end == i {
            continue; // an end tag, a comment or the doctype
        }
        let mut tag = Tag { name: html[i..name_end].to_ascii_lowercase(), attrs: Vec::new() };
        i = name_end;
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' {
                break;
            }
            let key_end = i + html[i..].find(['=', '>', ' ', '/']).unwrap();
            let key = html[i..key_end].to_string();
            i = key_end;
            let mut value = String::new();
            if b[i] == b'=' && b[i + 1] == b'"' {
                let close = i + 2 + html[i + 2..].find('"').unwrap();
                value = unescape(&html[i + 2..close]);
                i = close + 1;
            }
            tag.attrs.push((key, value));
        }
        // A script's text is not markup (and the page's has `<` in it).
        if tag.name == "script" {
            i += html[i..].find("</script").unwrap_or(html.len() - i);
        }
        out.push(tag);
    }
    out
}

/// An attribute value as the page wrote it: Chromium escapes these on output.
fn unescape(value: &str) -> String {
    [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&nbsp;", "\u{a0}"), ("&amp;", "&")]
        .iter()
        .fold(value.to_string(), |v, (from, to)| v.replace(from, to))
}

/// The markup inside `<svg data-chart="name">`.
fn chart<'a>(dom: &'a str, name: &str) -> &'a str {
    let at = dom.find(&format!("data-chart=\"{name}\"")).unwrap_or_else(|| panic!("no {name} chart in the page"));
    let end = at + dom[at..].find("</svg>").unwrap();
    &dom[at..end]
}

/// The data marks of a chart with `data-kind` `kind`.
fn marks(chart: &str, kind: &str) -> Vec<Tag> {
    tags(chart).into_iter().filter(|t| t.has_class("mark") && t.attr("data-kind") == Some(kind)).collect()
}

fn ids(marks: &[Tag]) -> Vec<String> {
    let mut ids: Vec<String> = marks.iter().map(|t| t.case().to_string()).collect();
    ids.sort();
    ids
}

fn ids_where(records: &[Record], keep: impl Fn(&Record) -> bool) -> Vec<String> {
    let mut ids: Vec<String> = records.iter().filter(|r| keep(r)).map(|r| r.case.id()).collect();
    ids.sort();
    ids
}

/// Drawn, and nothing in #error.
fn assert_drawn(dom: &str) {
    let error = dom.find("id=\"error\"").expect("the page has an #error element");
    let content = &dom[error + dom[error..].find('>').unwrap() + 1..];
    let content = &content[..content.find("</p>").unwrap()];
    assert!(content.is_empty(), "the script failed: {content}");
    let body = tags(dom).into_iter().find(|t| t.name == "body").unwrap();
    assert_eq!(body.attr("data-drawn"), Some("yes"), "the script did not finish drawing");
}

#[test]
fn the_suite_page_draws_every_case_in_chromium() {
    let records = nightly();
    let dir = common::scratch_dir("html-report");
    let (page, dom) = render(&dir, &html("nightly", &records));
    assert_drawn(&dom);

    for count in ["9 cases", "6 ok", "1 does not fit", "1 failed", "1 skipped"] {
        assert!(dom.contains(count), "the header does not say {count}");
    }
    let rows = tags(&dom).iter().filter(|t| t.name == "tr").count();
    assert_eq!(rows, 1 + records.len(), "the table has a header row and a row per case");

    // Latency: a bar per case that measured one, a prediction where there is one.
    let latency = chart(&dom, "latency");
    let bars = marks(latency, "measured");
    assert_eq!(ids(&bars), ids_where(&records, |r| r.measurements.latency_ms.is_some()));
    assert_eq!(ids(&marks(latency, "predicted")), ids_where(&records, |r| r.measurements.predicted_ms.is_some()));
    assert!(latency.contains("log scale"), "2.5 ms to 1010 ms spans decades: the axis should say log scale");
    let latency_of = |id: &str| records.iter().find(|r| r.case.id() == id).unwrap().measurements.latency_ms.unwrap();
    let mut by_latency: Vec<(f64, f64)> = bars.iter().map(|b| (latency_of(b.case()), b.num("height"))).collect();
    by_latency.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in by_latency.windows(2) {
        assert!(w[0].1 < w[1].1, "bar heights are not ordered as the latencies: {by_latency:?}");
    }

    // RAM: the peak the verdict used against the budget, the over-budget case marked.
    let ram = chart(&dom, "ram");
    let peaks = marks(ram, "peak");
    let budgets = marks(ram, "budget");
    assert_eq!(ids(&peaks), ids_where(&records, |r| r.measurements.peak().is_some()));
    assert_eq!(ids(&budgets), ids_where(&records, |r| r.measurements.budget_bytes.is_some()));
    let dnf = case("tinyllama", "none", "pi-zero-2w", "emu").id();
    let over: Vec<&str> = peaks.iter().filter(|t| t.has_class("over")).map(Tag::case).collect();
    assert_eq!(over, [dnf.as_str()]);
    for peak in &peaks {
        let budget = budgets.iter().find(|b| b.case() == peak.case()).unwrap();
        let reaches = peak.num("x") + peak.num("width") > budget.num("x1");
        assert_eq!(reaches, peak.has_class("over"), "{}: the bar and the budget line disagree", peak.case());
    }
    let marked = tags(ram).into_iter().any(|t| t.has_class("dnf") && t.attr("data-case") == Some(dnf.as_str()));
    assert!(marked, "the case that does not fit is not marked in the RAM chart");
    // minilm on rpi5 measured 38 MiB heap and 90 MiB RSS: the heap is the peak.
    let minilm = case("minilm", "int8", "rpi5", "emu").id();
    let small = peaks.iter().find(|t| t.case() == minilm).unwrap();
    let budget_x = budgets.iter().find(|b| b.case() == minilm).unwrap().num("x1");
    let expected = 38.0 / (6.0 * 1024.0) * (budget_x - small.num("x"));
    assert!((small.num("width") - expected).abs() < 0.5, "peak of {minilm}: width {} for 38 MiB", small.num("width"));

    // Emulated vs real: exactly the two cases that ran on both.
    let points = marks(chart(&dom, "targets"), "pair");
    assert_eq!(ids(&points), ids_where(&records, |r| r.case.target.to_string() == ACM));
    for p in &points {
        let real = records.iter().find(|r| r.case.id() == p.case()).unwrap();
        let emu = case(&real.case.model, &real.case.compression, &real.case.profile, "emu").id();
        assert_eq!(p.attr("data-emu-case"), Some(emu.as_str()));
    }

    // What a person would see: a screenshot with the charts in it.
    let png = dir.join("suite.png");
    chromium_run(&page, &format!("--screenshot={}", png.display()), &dir.join("screenshot.log"));
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    assert!(bytes.len() > 40_000, "{}: {} bytes is a blank page, not three charts", png.display(), bytes.len());
}

#[test]
fn markup_in_a_record_is_shown_as_text() {
    let evil = "</script><b>bold</b>";
    let mut case = case(evil, "int8", "rpi5", "emu");
    case.workload = format!("w{evil}");
    let records = [record(case, Status::Failed, Some(evil), ran(3.0, None, Some(MIB), None, 2 * MIB))];
    let page = html(evil, &records);
    assert_eq!(page.matches("</script>").count(), 2, "a value closed a script element");

    let (_, dom) = render(&common::scratch_dir("html-report-markup"), &page);
    assert_drawn(&dom);
    assert!(!tags(&dom).iter().any(|t| t.name == "b"), "a record's text became a <b> element");
    assert!(dom.contains("&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"), "the text is not on the page");
    let bars = marks(chart(&dom, "latency"), "measured");
    assert_eq!(ids(&bars), [records[0].case.id()], "the case id reads back from the DOM as written");
    assert!(dom.contains("No case ran on both the emulated board and a real board"));
    assert!(!dom.contains("data-chart=\"targets\""), "an empty targets chart was drawn");
}
