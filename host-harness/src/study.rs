//! The edge-LLM study's measured task scores (its Tables 7 and 8), as data:
//! `data/study-scores.tsv`, one row per checkpoint and method with its
//! LaMP-1…7 scores, mapped to our catalog's models and precisions.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::catalog::Precision;

/// A LaMP benchmark task, 1 to 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Lamp(u8);

impl Lamp {
    pub const ALL: [Lamp; 7] = [Lamp(1), Lamp(2), Lamp(3), Lamp(4), Lamp(5), Lamp(6), Lamp(7)];

    /// LaMP-1…3 are classification (accuracy), LaMP-4…7 generation (ROUGE-1).
    pub fn is_classification(self) -> bool {
        self.0 <= 3
    }

    pub fn metric(self) -> &'static str {
        if self.is_classification() {
            "accuracy"
        } else {
            "ROUGE-1"
        }
    }

    /// Rank by the study's difficulty (its Table 4, the cloud models' mean
    /// zero-shot score): classification LaMP-2 < LaMP-3 < LaMP-1, generation
    /// LaMP-6 < LaMP-5 < LaMP-7 < LaMP-4. 0 is the easiest of its kind.
    pub fn difficulty_rank(self) -> usize {
        let order: &[u8] = if self.is_classification() { &[2, 3, 1] } else { &[6, 5, 7, 4] };
        order.iter().position(|&t| t == self.0).unwrap_or(0)
    }

    fn column(self) -> usize {
        usize::from(self.0 - 1)
    }
}

impl fmt::Display for Lamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LaMP-{}", self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown task `{0}`: expected LaMP-1 … LaMP-7")]
pub struct BadLamp(String);

impl FromStr for Lamp {
    type Err = BadLamp;
    fn from_str(s: &str) -> Result<Self, BadLamp> {
        let n = s.strip_prefix("LaMP-").or_else(|| s.strip_prefix("lamp-")).and_then(|n| n.parse::<u8>().ok());
        match n {
            Some(n @ 1..=7) => Ok(Lamp(n)),
            _ => Err(BadLamp(s.into())),
        }
    }
}

/// How the study adapted the model to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// LoRA fine-tuning (the study's "FT": rank 8, alpha 16).
    Lora,
    Rag,
    ZeroShot,
}

/// One checkpoint's scores with one method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreRow {
    /// The study's name for the checkpoint.
    pub study_name: String,
    /// Our catalog's model.
    pub model: String,
    pub precision: Precision,
    pub method: Method,
    pub scores: [f64; 7],
}

impl ScoreRow {
    pub fn score(&self, task: Lamp) -> f64 {
        self.scores[task.column()]
    }

    /// Where the score comes from, for a reason line.
    pub fn source(&self) -> &'static str {
        match self.method {
            Method::Lora | Method::Rag => "Table 7",
            Method::ZeroShot => "Table 8",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoresError {
    /// a line of the scores file is malformed
    #[error("data/study-scores.tsv line {line}: {message}")]
    Line { line: usize, message: String },
}

const SCORES_TSV: &str = include_str!("../data/study-scores.tsv");

/// The study's scores as shipped.
pub fn scores() -> Result<Vec<ScoreRow>, ScoresError> {
    parse(SCORES_TSV)
}

fn parse(text: &str) -> Result<Vec<ScoreRow>, ScoresError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.starts_with("study_name") || line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| ScoresError::Line { line: i + 1, message };
        let cells: Vec<&str> = line.split('\t').collect();
        let [study_name, model, precision, method, scores @ ..] = cells.as_slice() else {
            return Err(bad(format!("expected 11 tab-separated cells, found {}", cells.len())));
        };
        let precision = match *precision {
            "fp16" => Precision::Fp16,
            "int4" => Precision::Int4,
            other => return Err(bad(format!("precision `{other}`: expected fp16 or int4"))),
        };
        let method = match *method {
            "lora" => Method::Lora,
            "rag" => Method::Rag,
            "zero-shot" => Method::ZeroShot,
            other => return Err(bad(format!("method `{other}`: expected lora, rag or zero-shot"))),
        };
        let scores: Vec<f64> = scores
            .iter()
            .map(|s| s.parse::<f64>().map_err(|_| bad(format!("score `{s}` is not a number"))))
            .collect::<Result<_, _>>()?;
        let scores: [f64; 7] =
            scores.try_into().map_err(|v: Vec<f64>| bad(format!("expected 7 scores (LaMP-1…7), found {}", v.len())))?;
        rows.push(ScoreRow { study_name: study_name.to_string(), model: model.to_string(), precision, method, scores });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scores_parse_and_hold_the_study_rows() {
        let rows = scores().unwrap();
        // Table 7's 34 checkpoints less its two pruned ones, twice (LoRA, RAG); Table 8's 27.
        assert_eq!(rows.iter().filter(|r| r.method == Method::Lora).count(), 32);
        assert_eq!(rows.iter().filter(|r| r.method == Method::ZeroShot).count(), 27);
        let l3 = rows.iter().find(|r| r.study_name == "Llama-v3-8b" && r.method == Method::Lora).unwrap();
        assert_eq!((l3.score("LaMP-2".parse().unwrap()), l3.precision), (0.130, Precision::Fp16));
        let mistral = rows.iter().find(|r| r.study_name == "Mistral-7b-G" && r.method == Method::Rag).unwrap();
        assert_eq!(
            (mistral.model.as_str(), mistral.precision, mistral.score(Lamp(6))),
            ("mistral-7b", Precision::Int4, 0.327)
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse("a\tb\tfp8\tlora\t1\t2\t3\t4\t5\t6\t7\n").unwrap_err().to_string();
        assert_eq!(e, "data/study-scores.tsv line 1: precision `fp8`: expected fp16 or int4");
        let e = parse("a\tb\tfp16\tlora\t1\t2\n").unwrap_err().to_string();
        assert!(e.contains("expected 7 scores"), "{e}");
        assert_eq!(
            "LaMP-9".parse::<Lamp>().unwrap_err().to_string(),
            "unknown task `LaMP-9`: expected LaMP-1 … LaMP-7"
        );
    }

    #[test]
    fn difficulty_follows_the_studys_table_4() {
        let rank = |s: &str| s.parse::<Lamp>().unwrap().difficulty_rank();
        assert!(rank("LaMP-2") < rank("LaMP-3") && rank("LaMP-3") < rank("LaMP-1"));
        assert!(rank("LaMP-6") < rank("LaMP-5") && rank("LaMP-5") < rank("LaMP-7") && rank("LaMP-7") < rank("LaMP-4"));
    }
}
