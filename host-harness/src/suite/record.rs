//! One line of a suite's journal: a case, how it ended, and what it measured.
//!
//! The journal is JSON lines, appended and synced as each case completes, so
//! a killed run loses nothing already measured. Every consumer (resume, the
//! reports, `suite compare`, `compare`, `calibrate`) reads these records.
//!
//! Each record carries the [`SCHEMA_VERSION`] it was written in. Version 1,
//! the records before the field existed, is read by naming each report's
//! workload from the fields only that kind of report has; a version this
//! edgehil does not know is refused with its number.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use edgehil_hil::Target;
use edgehil_runtime::wire::EngineKind;

use crate::estimate::GraphCost;
use crate::eval::EvalReport;
use crate::generate::GenerateReport;
use crate::report::{RunReport, Status};

/// The journal format this edgehil writes. 2: `schema_version`, and `report`
/// tagged with its `workload` (run, generate or eval). 1: the records before
/// (no `schema_version`, untagged reports).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// the journal could not be read or written
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// a line is not a record
    #[error("{path}:{line}: not a journal record: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    /// an element of a report.json array is not a record
    #[error("{path}: record {index}: not a journal record: {message}")]
    Element { path: PathBuf, index: usize, message: String },
}

/// One point of the suite's matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// The suite's name for the model.
    pub model: String,
    /// "none", "int8", "int4", with "+PRUNE" if pruned; "as-is" for an ONNX file used unchanged.
    pub compression: String,
    pub profile: String,
    /// Written as on the command line: "emu", "serial:PORT[@BAUD]" or "labgrid:PLACE".
    #[serde(with = "crate::text")]
    pub target: Target,
    pub engine: EngineKind,
    /// The workload's name in the suite.
    pub workload: String,
}

impl Case {
    /// Unique within a suite: model/compression/profile/target/engine/workload.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/{}",
            self.model,
            self.compression,
            self.profile,
            self.target,
            self.engine.name(),
            self.workload
        )
    }

    /// The same case on another target: what `compare` pairs emulated and real runs by.
    pub fn without_target(&self) -> String {
        format!("{}/{}/{}/{}/{}", self.model, self.compression, self.profile, self.engine.name(), self.workload)
    }

    /// The same case on another board and engine: what `compare` pairs a
    /// microcontroller's micro-engine case with the emulated board's by.
    pub fn without_board(&self) -> String {
        format!("{}/{}/{}/{}", self.model, self.compression, self.profile, self.workload)
    }
}

/// Cases order by their fields' text: model, compression, profile, target, engine, workload.
impl Ord for Case {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.model, &self.compression, &self.profile)
            .cmp(&(&other.model, &other.compression, &other.profile))
            .then_with(|| self.target.to_string().cmp(&other.target.to_string()))
            .then_with(|| self.engine.name().cmp(other.engine.name()))
            .then_with(|| self.workload.cmp(&other.workload))
    }
}

impl PartialOrd for Case {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The figures every report and comparison reads, whatever the workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// run: median latency of one inference; generate: mean time per generated token;
    /// eval: mean time per item.
    pub latency_ms: Option<f64>,
    /// The latency model's prediction for the profile's device (run only).
    pub predicted_ms: Option<f64>,
    /// generate: generation tok/s (llama-bench tg).
    pub tokens_per_s: Option<f64>,
    pub peak_heap: Option<u64>,
    pub peak_rss: Option<u64>,
    /// The RAM cap the case ran under (the profile's usable RAM unless overridden).
    pub budget_bytes: Option<u64>,
    /// Higher is better, in [0, 1]; `accuracy_metric` names it.
    pub accuracy: Option<f64>,
    pub accuracy_metric: Option<String>,
    /// What one timed call costs (run only): the input to `calibrate`.
    pub cost: Option<GraphCost>,
    /// Tokens processed by one timed call (run: the prompt length; absent for non-language models).
    pub tokens: Option<u64>,
}

impl Measurements {
    /// The peak the verdict used: heap where measured (tract), else RSS.
    pub fn peak(&self) -> Option<u64> {
        self.peak_heap.or(self.peak_rss)
    }
}

/// A workload's whole report, tagged with its kind (`"workload": "run"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "workload", rename_all = "snake_case")]
pub enum WorkloadReport {
    Run(RunReport),
    Generate(GenerateReport),
    Eval(EvalReport),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`SCHEMA_VERSION`] when written; a version 1 record read is upgraded to it.
    pub schema_version: u32,
    pub suite: String,
    pub case: Case,
    pub status: Status,
    /// Why the case failed, did not fit or was skipped.
    pub reason: Option<String>,
    /// Seconds since the Unix epoch.
    pub started_unix_s: f64,
    pub duration_s: f64,
    pub measurements: Measurements,
    /// The workload's whole report, null if none was made.
    pub report: Option<WorkloadReport>,
}

/// A record of any version this edgehil reads, as the current version; why not, if not.
fn decode(mut value: Value) -> Result<Record, String> {
    let version = value.get("schema_version").cloned();
    match version.as_ref().map(Value::as_u64) {
        None | Some(Some(1)) => {
            upgrade_from_v1(&mut value);
            serde_json::from_value(value).map_err(|e| format!("{e} (read as schema_version 1, from before the field)"))
        }
        Some(Some(v)) if v == u64::from(SCHEMA_VERSION) => serde_json::from_value(value).map_err(|e| e.to_string()),
        _ => Err(format!(
            "schema_version {}: this edgehil reads versions 1 to {SCHEMA_VERSION} (a newer edgehil wrote it?)",
            version.unwrap_or_default()
        )),
    }
}

/// Version 1 had no `schema_version` and untagged reports: the tag is told
/// by the fields only that kind of report has (eval its scores, generate
/// its prompt).
fn upgrade_from_v1(value: &mut Value) {
    let Some(record) = value.as_object_mut() else { return };
    if let Some(report) = record.get_mut("report").and_then(Value::as_object_mut) {
        let workload = match (report.contains_key("scores"), report.contains_key("prompt")) {
            (true, _) => "eval",
            (false, true) => "generate",
            (false, false) => "run",
        };
        report.insert("workload".into(), workload.into());
    }
    record.insert("schema_version".into(), SCHEMA_VERSION.into());
}

/// Appends one record as one line and syncs it to disk before returning.
pub fn append(path: &Path, record: &Record) -> Result<(), JournalError> {
    let io = |cause| JournalError::Io { path: path.into(), cause };
    let mut line = serde_json::to_string(record).map_err(|e| io(e.into()))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}

/// What [`repair`] took off a journal's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Where the removed bytes were kept, beside the journal.
    pub kept: PathBuf,
    pub bytes: u64,
}

/// Makes a journal safe to append to: a last line without its newline (a
/// kill in the middle of a write) is cut off, its bytes kept beside the
/// journal as `NAME.partial-N` (the first N not taken). Without this, the
/// next record would be appended to the partial line and the journal would
/// no longer read. `None` if the journal ended cleanly (or is not there).
pub fn repair(path: &Path) -> Result<Option<Repaired>, JournalError> {
    let io = |cause| JournalError::Io { path: path.into(), cause };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(None);
    }
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let tail = &bytes[complete..];
    let name = path.file_name().map_or_else(|| "journal".into(), |n| n.to_string_lossy().into_owned());
    let kept = (1..)
        .map(|n| path.with_file_name(format!("{name}.partial-{n}")))
        .find(|p| !p.exists())
        .expect("some number is free");
    let kept_io = |cause| JournalError::Io { path: kept.clone(), cause };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&kept).map_err(kept_io)?;
    f.write_all(tail).map_err(kept_io)?;
    f.sync_data().map_err(kept_io)?;
    // The copy is on disk before the journal loses the bytes.
    let journal = std::fs::OpenOptions::new().write(true).open(path).map_err(io)?;
    journal.set_len(complete as u64).map_err(io)?;
    journal.sync_data().map_err(io)?;
    Ok(Some(Repaired { kept, bytes: tail.len() as u64 }))
}

/// Every record of a journal, or of a suite's report.json (a JSON array of
/// records). A last journal line without its newline is what a kill in the
/// middle of a write leaves: it is dropped, not an error.
pub fn read(path: &Path) -> Result<Vec<Record>, JournalError> {
    let io = |cause| JournalError::Io { path: path.into(), cause };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let parse = |line: usize, message: String| JournalError::Parse { path: path.into(), line, message };
    if text.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(&text).map_err(|e| parse(e.line(), e.to_string()))?;
        return values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                decode(v).map_err(|message| JournalError::Element { path: path.into(), index: i + 1, message })
            })
            .collect();
    }
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut records = Vec::new();
    for (i, line) in complete.as_bytes().lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| parse(i + 1, e.to_string()))?;
        records.push(decode(value).map_err(|message| parse(i + 1, message))?);
    }
    Ok(records)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::MeasuredBy;
    use edgehil_runtime::wire::{MemLimit, OptLevel};

    pub(crate) fn record(model: &str) -> Record {
        Record {
            schema_version: SCHEMA_VERSION,
            suite: "s".into(),
            case: Case {
                model: model.into(),
                compression: "none".into(),
                profile: "p".into(),
                target: Target::Emulated,
                engine: EngineKind::Tract,
                workload: "w".into(),
            },
            status: Status::Ok,
            reason: None,
            started_unix_s: 0.0,
            duration_s: 0.0,
            measurements: Measurements::default(),
            report: None,
        }
    }

    #[test]
    fn a_partial_last_line_is_cut_off_kept_beside_and_appending_goes_on_cleanly() {
        let dir = std::env::temp_dir().join(format!("edgehil-journal-repair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.jsonl");
        append(&path, &record("a")).unwrap();
        assert_eq!(repair(&path).unwrap(), None, "a clean journal is left alone");
        let clean = std::fs::read(&path).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"suite\":\"s\",\"ca").unwrap();
        drop(f);

        let repaired = repair(&path).unwrap().expect("the partial line is cut off");
        assert_eq!(repaired.kept, dir.join("journal.jsonl.partial-1"));
        assert_eq!(repaired.bytes, 16);
        assert_eq!(std::fs::read(&repaired.kept).unwrap(), b"{\"suite\":\"s\",\"ca");
        assert_eq!(std::fs::read(&path).unwrap(), clean);
        append(&path, &record("b")).unwrap();
        let models: Vec<String> = read(&path).unwrap().into_iter().map(|r| r.case.model).collect();
        assert_eq!(models, ["a", "b"]);

        // A second repair keeps its bytes under the next free name.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{").unwrap();
        assert_eq!(repair(&path).unwrap().unwrap().kept, dir.join("journal.jsonl.partial-2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two records as edgehil wrote them before journals had a schema_version
    /// (a run and a generate case of the suite tests' small suite).
    const VERSION_1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/journal-v1.jsonl");

    #[test]
    fn a_version_1_journal_reads_as_typed_reports() {
        let records = read(Path::new(VERSION_1)).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.schema_version == SCHEMA_VERSION));
        let Some(WorkloadReport::Run(run)) = &records[0].report else { panic!("a run: {:?}", records[0].report) };
        assert_eq!((&run.target, run.engine, run.opt_level), (&Target::Emulated, EngineKind::Tract, OptLevel::All));
        assert_eq!(run.memory.limit, MemLimit::Heap);
        assert_eq!(run.memory.measured_by, MeasuredBy::PeakHeap);
        let Some(WorkloadReport::Generate(generated)) = &records[1].report else {
            panic!("a generation: {:?}", records[1].report)
        };
        assert_eq!(generated.tokens.len(), 8);
        assert_eq!(records[1].case.id(), "tiny-gpt2/none/jetson-orin-nano/emu/tract/generate");

        // Written again, they are version 2 records and read back the same.
        let dir = std::env::temp_dir().join(format!("edgehil-journal-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.jsonl");
        let _ = std::fs::remove_file(&path);
        records.iter().for_each(|r| append(&path, r).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"schema_version":2,"suite":"small","#), "{text}");
        assert!(text.contains(r#""report":{"workload":"run","model":"#), "{text}");
        assert_eq!(read(&path).unwrap(), records);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_of_an_unknown_version_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("edgehil-journal-v9-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v1 = std::fs::read_to_string(VERSION_1).unwrap();
        let path = dir.join("journal.jsonl");
        std::fs::write(&path, v1.replacen('{', r#"{"schema_version":9,"#, 1)).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:1: not a journal record: schema_version 9: this edgehil reads versions 1 to 2 (a newer edgehil wrote it?)",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
