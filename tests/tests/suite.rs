//! `edgehil suite`: the matrix from a TOML file, the journal that survives a
//! kill, failing cases that do not stop the night, reports, regressions
//! against a baseline, and emulated against a board on a serial line.

use crate::common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{binary, ort_library, scratch_dir};
use edgehil::report::Status;
use edgehil::suite::record::{self, Record};
use edgehil_hil::Target;

fn edgehil(args: &[&str]) -> Output {
    edgehil_cmd(args).output().unwrap()
}

pub(crate) fn edgehil_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("edgehil"));
    cmd.args(args).env("EDGEHIL_AGENT", binary("edgehil-agent")).env("EDGEHIL_ORT_LIBRARY", ort_library());
    cmd
}

pub(crate) fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A suite file in `dir` whose model paths point into the repository.
pub(crate) fn write_suite(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("suite.toml");
    let body = body.replace("@REPO", &repo().display().to_string());
    std::fs::write(&path, body).unwrap();
    path
}

/// Two models, two compressions of one, two workloads: 5 quick cases on tract.
const SMALL: &str = r#"
name = "small"
timeout = "120 s"
profiles = ["jetson-orin-nano"]
engines = ["tract"]

[[model]]
name = "block"
path = "@REPO/onnx-models/fixtures/block.onnx"

[[model]]
name = "tiny-gpt2"
hf = "@REPO/onnx-models/reference/gpt2"
compression = ["none", "int8"]

[[run]]
runs = 3
warmup = 1
prompt_tokens = 8

[[generate]]
prompt = "The board on the desk"
max_new = 8
temperature = 0.0
reps = 1
ignore_eos = true
"#;

pub(crate) fn journal(out: &Path) -> Vec<Record> {
    record::read(&out.join("journal.jsonl")).unwrap()
}

#[test]
fn a_malformed_suite_names_the_line_and_key_before_anything_runs() {
    let dir = scratch_dir("suite-malformed");
    let out = dir.join("out");
    let cases = [
        (SMALL.replace("compression = [", "compresion = ["), "unknown field `compresion`", "line 14"),
        (
            SMALL.replace("\"jetson-orin-nano\"", "\"jetson-orin-nanoo\""),
            "no device profile named `jetson-orin-nanoo`",
            ":4: key `profiles`",
        ),
        (
            SMALL.replace("fixtures/block.onnx", "fixtures/nothing.onnx"),
            "nothing.onnx does not exist",
            ":9: key `model.path`",
        ),
        (SMALL.replace("\"int8\"", "\"int3\""), "expected none, int8 or int4", ":14: key `model.compression`"),
        (SMALL.replace("runs = 3", "runs = \"three\""), "invalid type", "line 17"),
        (
            SMALL.replace("[[generate]]", "[[generate]]\nmodels = [\"gpt2\"]"),
            "no [[model]] named `gpt2`",
            "key `models`",
        ),
    ];
    for (body, what, place) in cases {
        let suite = write_suite(&dir, &body);
        let o = edgehil(&["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains("suite.toml"), "names the file: {t}");
        assert!(t.contains(what), "says what is wrong ({what}): {t}");
        assert!(t.contains(place), "names the line and key ({place}): {t}");
        assert!(!out.exists(), "nothing ran");
    }
}

fn journal_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("journal.jsonl")).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn killing_the_suite_loses_nothing_and_resume_runs_only_the_rest() {
    let dir = scratch_dir("suite-resume");
    let suite = write_suite(&dir, SMALL);
    let out = dir.join("out");
    let args = ["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let mut child = edgehil_cmd(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while journal_lines(&out).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(120), "two cases within two minutes");
        assert!(child.try_wait().unwrap().is_none(), "the suite ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = journal_lines(&out);
    let kept = record::read(&out.join("journal.jsonl")).unwrap();
    assert!(kept.len() >= 2 && kept.len() < 5, "killed part way: {} of 5", kept.len());

    let o = edgehil(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    assert_eq!(journal_lines(&out), before, "a refused run leaves the journal alone");

    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let o = edgehil(&resumed);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&format!("resuming: {} of 5 cases already in the journal", kept.len())), "{}", text(&o));
    let after = journal_lines(&out);
    assert_eq!(after[..before.len()], before[..], "what was measured before the kill is kept as it was");
    let records = journal(&out);
    let mut ids: Vec<String> = records.iter().map(|r| r.case.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every case once: {ids:?}");
    assert!(records.iter().all(|r| r.status == Status::Ok), "{records:#?}");
    for file in ["report.json", "junit.xml", "summary.md", "report.html"] {
        assert!(out.join(file).is_file(), "{file}");
    }
}

/// A copy of a built-in profile with `usable` as its usable RAM.
fn small_profile(dir: &Path, usable: &str) -> PathBuf {
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let text = std::fs::read_to_string(repo().join("device-profiles/jetson-orin-nano.toml")).unwrap();
    let text = text.replace("name = \"jetson-orin-nano\"", "name = \"tiny-board\"").replacen(
        "ram_usable = { value = \"6.5 GiB\"",
        &format!("ram_usable = {{ value = \"{usable}\""),
        1,
    );
    std::fs::write(profiles.join("tiny-board.toml"), text).unwrap();
    profiles
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_board_that_hangs_crashes_or_runs_out_of_memory_fails_its_case_and_the_suite_goes_on() {
    let dir = scratch_dir("suite-failures");
    let profiles = small_profile(&dir, "64 KiB");
    let one_model = |agent: &str, profiles: &str| {
        format!(
            "name = \"f\"\ntimeout = \"3 s\"\nprofiles = [{profiles}]\n{agent}\n\
             [[model]]\nname = \"block\"\npath = \"@REPO/onnx-models/fixtures/block.onnx\"\n\
             [[model]]\nname = \"mlp\"\npath = \"@REPO/onnx-models/fixtures/mlp.onnx\"\n\
             [[run]]\nruns = 2\nwarmup = 0\n"
        )
    };
    let run = |name: &str, body: String| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let suite = write_suite(&sub, &body);
        let out = sub.join("out");
        let o = edgehil(&[
            "--profiles-dir",
            profiles.to_str().unwrap(),
            "suite",
            "run",
            suite.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        (o, journal(&out))
    };

    // Out of memory: the 64 KiB board refuses the model, the other board runs it.
    let (o, records) = run("oom", one_model("", "\"tiny-board\", \"jetson-orin-nano\""));
    assert_eq!(o.status.code(), Some(3), "exit code of a does-not-fit: {}", text(&o));
    assert_eq!(records.len(), 4);
    for r in &records {
        let expected = if r.case.profile == "tiny-board" { Status::DoesNotFit } else { Status::Ok };
        assert_eq!(r.status, expected, "{r:#?}");
    }
    assert!(records.iter().filter(|r| r.status == Status::DoesNotFit).all(|r| r.reason.is_some()));

    // A hung board: its agent never answers, each case ends at the 3 s timeout.
    let hang = script(&dir, "hang.sh", "exec sleep 600");
    let (o, records) = run("hang", one_model(&format!("agent = \"{}\"", hang.display()), "\"jetson-orin-nano\""));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(records.len(), 2, "the second case ran after the first hung");
    for r in &records {
        assert_eq!(r.status, Status::Failed);
        assert!(r.duration_s < 60.0, "bounded by the timeout, not the hang: {r:#?}");
        let reason = r.reason.as_deref().unwrap();
        assert!(reason.contains("timed out") || reason.contains("no answer"), "{reason}");
    }

    // A crashing board: the reason carries its exit and last words.
    let crash = script(&dir, "crash.sh", "echo 'panicked at flash' >&2; exit 3");
    let (o, records) = run("crash", one_model(&format!("agent = \"{}\"", crash.display()), "\"jetson-orin-nano\""));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.status, Status::Failed);
        let reason = r.reason.as_deref().unwrap();
        assert!(reason.contains("exit code 3") && reason.contains("panicked at flash"), "{reason}");
    }
}

/// Runs SMALL into `out` once per test binary run.
fn small_run(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let suite = write_suite(&dir, SMALL);
    let out = dir.join("out");
    let o = edgehil(&["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    out
}

/// Measured figures vary run to run; the rest must not.
fn redact_measured(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let measured = ["latency_ms", "peak_heap_bytes", "peak_rss_bytes", "tokens_per_s"]
            .iter()
            .find(|p| line.contains(&format!("name=\"{p}\"")));
        let line = match measured {
            Some(p) => format!("        <property name=\"{p}\" value=\"[measured]\"/>"),
            None => line.to_string(),
        };
        out.push_str(&redact_attr(&line, "time"));
        out.push('\n');
    }
    out
}

fn redact_attr(line: &str, attr: &str) -> String {
    let key = format!(" {attr}=\"");
    match line.find(&key) {
        Some(at) => {
            let start = at + key.len();
            let end = start + line[start..].find('"').unwrap();
            format!("{}[s]{}", &line[..start], &line[end..])
        }
        None => line.to_string(),
    }
}

#[test]
fn junit_has_a_testcase_per_case_with_measurements_as_properties() {
    let out = small_run("suite-junit");
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let records = journal(&out);
    assert_eq!(xml.matches("<testcase ").count(), records.len());
    assert_eq!(xml.matches("<testcase ").count(), 5);
    insta::assert_snapshot!("junit", redact_measured(&xml));
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.starts_with("# Suite `small`\n\n5 cases: 5 ok, 0 does_not_fit, 0 failed, 0 skipped"), "{md}");
    let report: Vec<Record> = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report, records);

    // The same journal as LAVA test cases: every figure with its unit, measured values redacted.
    let o = edgehil(&["suite", "report", out.to_str().unwrap(), "--format", "lava"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lava: String = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let (head, unit) =
                l.split_once(" --measurement ").map_or((l, ""), |(h, m)| (h, m.split(" --units ").nth(1).unwrap()));
            let measured = ["ms", "bytes"].contains(&unit);
            let value = l.split(" --measurement ").nth(1).map(|m| m.split(' ').next().unwrap()).unwrap_or("");
            format!("{head} --measurement {} --units {unit}\n", if measured { "[measured]" } else { value })
        })
        .collect();
    insta::assert_snapshot!("lava", lava);
}

/// The journal with one case slower, one less accurate and one gone.
fn worse_copy(records: &[Record], path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for r in records {
        let mut r = r.clone();
        match (r.case.model.as_str(), r.case.compression.as_str(), r.case.workload.as_str()) {
            ("block", _, _) => r.measurements.latency_ms = r.measurements.latency_ms.map(|l| l * 1.5),
            ("tiny-gpt2", "int8", "run") => r.measurements.accuracy = r.measurements.accuracy.map(|a| a - 0.2),
            ("tiny-gpt2", "none", "generate") => continue,
            _ => {}
        }
        writeln!(f, "{}", serde_json::to_string(&r).unwrap()).unwrap();
    }
}

#[test]
fn suite_compare_lists_what_regressed_and_exits_non_zero() {
    let out = small_run("suite-compare");
    let baseline = out.join("journal.jsonl");
    let records = journal(&out);
    let o = edgehil(&["suite", "compare", out.to_str().unwrap(), "--baseline", baseline.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("5 cases compared") && text(&o).contains("no regressions"), "{}", text(&o));

    let current = out.join("worse.jsonl");
    worse_copy(&records, &current);
    let o = edgehil(&["suite", "compare", current.to_str().unwrap(), "--baseline", baseline.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let mut listed = String::from_utf8_lossy(&o.stdout).into_owned();
    // The figures are measured; which cases and what regressed are not.
    listed = listed.lines().map(|l| l.split(": ").next().unwrap_or(l).to_string() + "\n").collect();
    insta::assert_snapshot!("regressions", listed);

    // Within a generous tolerance, only the missing case and the accuracy drop remain.
    let o = edgehil(&[
        "suite",
        "compare",
        current.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
        "--latency-pct",
        "60",
    ]);
    assert_eq!(o.status.code(), Some(5));
    assert!(text(&o).contains("2 regressions"), "{}", text(&o));
}

#[test]
fn compare_pairs_the_emulated_board_with_a_board_on_a_serial_line() {
    let board = common::NullModem::start("6979321856");
    let dir = scratch_dir("suite-compare-targets");
    let body = SMALL.replace(
        "engines = [\"tract\"]",
        &format!("engines = [\"tract\", \"ort\"]\ntargets = [\"emu\", \"serial:{}\"]", board.host_end.display()),
    );
    let suite = write_suite(&dir, &body);
    let out = dir.join("out");
    let o = edgehil(&["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let records = journal(&out);
    assert_eq!(records.len(), 20);
    let (emu, real): (Vec<Record>, Vec<Record>) = records.into_iter().partition(|r| r.case.target == Target::Emulated);
    let (a, b) = (out.join("emu.json"), out.join("real.json"));
    std::fs::write(&a, serde_json::to_string(&emu).unwrap()).unwrap();
    std::fs::write(&b, serde_json::to_string(&real).unwrap()).unwrap();
    let pairs = out.join("pairs.json");
    let o = edgehil(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--json", pairs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let pairing: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pairs).unwrap()).unwrap();
    let pairs = pairing["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 10, "{pairing:#}");
    assert!(pairing["only_a"].as_array().unwrap().is_empty() && pairing["only_b"].as_array().unwrap().is_empty());
    for p in pairs {
        let ratio = p["latency_ratio"].as_f64().unwrap();
        assert!(ratio > 0.05 && ratio < 20.0, "same machine on both ends: {p:#}");
        assert!(p["ram_difference"].is_i64(), "{p:#}");
        // The same engine, inputs and greedy decoding give the same answers at both ends.
        assert_eq!(p["accuracy_difference"].as_f64(), Some(0.0), "{p:#}");
    }
    assert!(text(&o).contains("| block/as-is/jetson-orin-nano/tract/run | emu ok | serial:"), "{}", text(&o));
}

/// Two quick tract cases on fixtures.
const TWO_FIXTURES: &str = r#"
name = "two"
timeout = "120 s"
profiles = ["jetson-orin-nano"]

[[model]]
name = "block"
path = "@REPO/onnx-models/fixtures/block.onnx"

[[model]]
name = "mlp"
path = "@REPO/onnx-models/fixtures/mlp.onnx"

[[run]]
runs = 1
warmup = 0
"#;

#[test]
fn resume_after_a_cut_short_last_line_repairs_the_journal_and_keeps_the_cut_bytes() {
    let dir = scratch_dir("suite-partial-line");
    let suite = write_suite(&dir, TWO_FIXTURES);
    let out = dir.join("out");
    let args = ["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let o = edgehil(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A kill in the middle of writing the second record: half its line, no newline.
    let path = out.join("journal.jsonl");
    let whole = std::fs::read_to_string(&path).unwrap();
    let first_end = whole.find('\n').unwrap() + 1;
    let cut = first_end + (whole.len() - first_end) / 2;
    std::fs::write(&path, &whole[..cut]).unwrap();

    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let o = edgehil(&resumed);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let kept = out.join("journal.jsonl.partial-1");
    assert!(err.contains("journal.jsonl") && err.contains(&kept.display().to_string()), "says so: {err}");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), whole[first_end..cut], "the cut bytes are kept");
    assert!(text(&o).contains("resuming: 1 of 2 cases already in the journal"), "{}", text(&o));
    let lines = journal_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0], whole[..first_end - 1], "the complete record is kept as it was");
    let ids: Vec<String> = journal(&out).iter().map(|r| r.case.id()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    // The journal reads again: reports and another resume.
    let o = edgehil(&["suite", "report", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = edgehil(&resumed);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("resuming: 2 of 2 cases already in the journal"), "{}", text(&o));
}

#[test]
fn names_in_a_suite_are_identifiers_not_paths() {
    let dir = scratch_dir("suite-names");
    let out = dir.join("results").join("out");
    let victim = dir.join("victim");
    let cases = [
        (TWO_FIXTURES.replace("name = \"block\"", "name = \"../../victim\""), ":7: key `model.name`"),
        (TWO_FIXTURES.replace("name = \"block\"", "name = \"a/b\""), ":7: key `model.name`"),
        (TWO_FIXTURES.replace("name = \"block\"", "name = \"\""), ":7: key `model.name`"),
        (TWO_FIXTURES.replace("name = \"block\"", "name = \"..\""), ":7: key `model.name`"),
        (TWO_FIXTURES.replace("name = \"two\"", "name = \"../../victim\""), ":2: key `name`"),
        (TWO_FIXTURES.replace("[[run]]", "[[run]]\nname = \"../run\""), ":15: key `name`"),
    ];
    for (body, place) in cases {
        let suite = write_suite(&dir, &body);
        let o = edgehil(&["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains("suite.toml"), "names the file: {t}");
        assert!(t.contains(place), "names the line and key ({place}): {t}");
        assert!(t.contains("a name cannot"), "says why: {t}");
        assert!(!out.exists() && !victim.exists(), "nothing ran or was written");
    }
}

#[test]
fn a_closed_stdout_ends_the_suite_quietly_with_its_journal_whole() {
    let dir = scratch_dir("suite-closed-stdout");
    let suite = write_suite(&dir, TWO_FIXTURES);
    let out = dir.join("out");
    let mut child = edgehil_cmd(&["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes before anything is printed, as `| head -1` would after its line.
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(journal(&out).len(), 2);
    assert!(out.join("report.html").is_file());
}

#[test]
fn a_journal_from_before_schema_version_is_still_compared() {
    // Two records as edgehil wrote them before journals carried a schema_version.
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host-harness/testdata/journal-v1.jsonl");
    let v1 = v1.to_str().unwrap();
    let o = edgehil(&["suite", "compare", v1, "--baseline", v1]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("2 cases compared") && text(&o).contains("no regressions"), "{}", text(&o));
    let o = edgehil(&["compare", v1, v1]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("| tiny-gpt2/none/jetson-orin-nano/tract/generate | emu ok | emu ok | 1.000 |"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_model_from_a_python_package_that_is_not_installed_is_skipped_with_the_reason() {
    let dir = scratch_dir("suite-package");
    let body = SMALL.replace(
        "[[run]]",
        "[[model]]\nname = \"wheel-model\"\npython_package_file = \"edgehil_no_such_package/model.gguf\"\n\
         compression = [\"none\", \"int8\"]\n\n[[run]]",
    );
    let out = dir.join("out");
    let o = edgehil(&["suite", "run", write_suite(&dir, &body).to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "a skipped model fails nothing: {}", text(&o));
    let records = journal(&out);
    let skipped: Vec<&Record> = records.iter().filter(|r| r.case.model == "wheel-model").collect();
    // Its two compressions × run and generate, each recorded, none run.
    assert_eq!(skipped.len(), 4, "{records:?}");
    for r in skipped {
        assert_eq!(r.status, Status::Skipped);
        let reason = r.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("Python package `edgehil_no_such_package` is not installed"), "{reason}");
    }
    assert!(records.iter().filter(|r| r.case.model != "wheel-model").all(|r| r.status == Status::Ok));
    let t = write_suite(&dir, &body.replace("edgehil_no_such_package/model.gguf", "model.gguf"));
    let o = edgehil(&["suite", "run", t.to_str().unwrap(), "--out", dir.join("out2").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("key `model.python_package_file`: `model.gguf`: expected PACKAGE/PATH"), "{}", text(&o));
}
