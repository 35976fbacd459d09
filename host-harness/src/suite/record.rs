//! One line of a suite's journal: a case, how it ended, and what it measured.
//!
//! The journal is JSON lines, appended and synced as each case completes, so
//! a killed run loses nothing already measured. Every consumer (resume, the
//! reports, `suite compare`, `compare`, `calibrate`) reads these records.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::estimate::GraphCost;
use crate::report::Status;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// the journal could not be read or written
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// a line is not a record
    #[error("{path}:{line}: not a journal record: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
}

/// One point of the suite's matrix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Case {
    /// The suite's name for the model.
    pub model: String,
    /// "none", "int8", "int4", with "+PRUNE" if pruned; "as-is" for an ONNX file used unchanged.
    pub compression: String,
    pub profile: String,
    /// "emu" or "serial:PORT".
    pub target: String,
    pub engine: String,
    /// The workload's name in the suite.
    pub workload: String,
}

impl Case {
    /// Unique within a suite: model/compression/profile/target/engine/workload.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/{}",
            self.model, self.compression, self.profile, self.target, self.engine, self.workload
        )
    }

    /// The same case on another target: what `compare` pairs emulated and real runs by.
    pub fn without_target(&self) -> String {
        format!("{}/{}/{}/{}/{}", self.model, self.compression, self.profile, self.engine, self.workload)
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub suite: String,
    pub case: Case,
    pub status: Status,
    /// Why the case failed, did not fit or was skipped.
    pub reason: Option<String>,
    /// Seconds since the Unix epoch.
    pub started_unix_s: f64,
    pub duration_s: f64,
    pub measurements: Measurements,
    /// The workload's whole report (run, generate or eval), null if none was made.
    pub report: serde_json::Value,
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

/// Every record of a journal, or of a suite's report.json (a JSON array of
/// records). A last journal line without its newline is what a kill in the
/// middle of a write leaves: it is dropped, not an error.
pub fn read(path: &Path) -> Result<Vec<Record>, JournalError> {
    let io = |cause| JournalError::Io { path: path.into(), cause };
    let text = std::fs::read_to_string(path).map_err(io)?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).map_err(|e| JournalError::Parse {
            path: path.into(),
            line: e.line(),
            message: e.to_string(),
        });
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
        let record = serde_json::from_str(&line).map_err(|e| JournalError::Parse {
            path: path.into(),
            line: i + 1,
            message: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}
