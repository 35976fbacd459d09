//! `edgehil sweep`: llama-bench's table for edge boards. `ppN` times a
//! prefill of N tokens (prompt tok/s), `tgN` times N tokens generated one
//! at a time after a one-token prompt (generation tok/s); each is repeated
//! and reported as mean ± sd, per model, profile and engine.

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use edgehil_hil::HilError;
use edgehil_onnx::rng::SplitMix64;
use edgehil_runtime::wire::{EngineKind, GenParams, GenReport};
use serde::Serialize;

use crate::generate::{model_manifest, GenerateHostError, MeanSd};
use crate::profile::Profile;
use crate::report::Status;
use crate::run::{on_board, verdict, BoardOptions, BoardRun};

/// One test of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Test {
    /// Prefill of N prompt tokens.
    Pp(u32),
    /// N generated tokens.
    Tg(u32),
}

impl Test {
    pub fn name(self) -> String {
        match self {
            Test::Pp(n) => format!("pp{n}"),
            Test::Tg(n) => format!("tg{n}"),
        }
    }

    /// Positions the test needs in the model's context.
    fn context(self) -> u64 {
        match self {
            Test::Pp(n) => u64::from(n) + 1,
            Test::Tg(n) => u64::from(n) + 2,
        }
    }
}

impl FromStr for Test {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let n = |rest: &str| rest.parse::<u32>().ok().filter(|n| *n > 0);
        match (s.strip_prefix("pp").and_then(n), s.strip_prefix("tg").and_then(n)) {
            (Some(v), _) => Ok(Test::Pp(v)),
            (_, Some(v)) => Ok(Test::Tg(v)),
            _ => Err(format!("`{s}`: expected ppN or tgN with N ≥ 1, e.g. pp128 or tg128")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub weight_bytes: u64,
    pub profile: String,
    pub engine: EngineKind,
    pub threads: u16,
    pub test: String,
    pub status: Status,
    /// Tokens per second over the repetitions.
    pub tok_s: Option<MeanSd>,
    pub peak_heap: Option<u64>,
    pub peak_rss: Option<u64>,
    pub error: Option<String>,
}

/// The tokens/s of one repetition of `test`.
fn rate(test: Test, r: &GenReport) -> f64 {
    match test {
        Test::Pp(_) => f64::from(r.prompt_tokens) / (r.prefill_nanos as f64 / 1e9),
        Test::Tg(_) => f64::from(r.generated.saturating_sub(1)) / (r.decode_nanos as f64 / 1e9),
    }
}

/// Runs every test on one model, profile and engine, on one board session.
pub fn sweep(
    model: &Path,
    profile: &Profile,
    board: &BoardOptions,
    tests: &[Test],
    reps: u32,
) -> Result<Vec<Row>, GenerateHostError> {
    let manifest = model_manifest(model)?;
    let (vocab, context) = (manifest.vocab, manifest.context);
    let mut got = BoardRun::default();
    let mut results: Vec<(Test, Vec<GenReport>, Option<String>)> = Vec::new();
    let (outcome, _) = on_board(board, profile, &model.join("model.onnx"), &mut got, |session, _| {
        let mut rng = SplitMix64::new(1);
        for test in tests {
            if test.context() > context {
                let why = format!("needs {} positions, the model has {context}", test.context());
                results.push((*test, Vec::new(), Some(why)));
                continue;
            }
            let (prompt, max_new) = match test {
                Test::Pp(n) => (*n, 1),
                Test::Tg(n) => (1, n + 1),
            };
            let ids: Vec<u32> = (0..prompt).map(|_| (rng.next_u64() % vocab) as u32).collect();
            session.set_prompt(&ids)?;
            let params = GenParams { max_new, temperature: 0.0, eos: None, ..GenParams::STUDY };
            let reports = (0..reps.max(1)).map(|_| session.generate(params, |_, _, _| {}).map(|(_, r)| r));
            results.push((*test, reports.collect::<Result<_, HilError>>()?, None));
        }
        Ok(())
    });
    let load = got.load.as_ref();
    let weight_bytes = load.map_or(0, |l| l.weight_bytes);
    let threads = load.map_or(0, |l| l.threads);
    let row = |test: Test, reports: &[GenReport], status, error| {
        let peak = |f: fn(&GenReport) -> u64| reports.iter().map(f).max();
        Row {
            model: model.display().to_string(),
            weight_bytes,
            profile: profile.name.clone(),
            engine: board.engine,
            threads,
            test: test.name(),
            status,
            tok_s: MeanSd::of(&reports.iter().map(|r| rate(test, r)).collect::<Vec<_>>()),
            peak_heap: peak(|r| r.peak_heap),
            peak_rss: peak(|r| r.peak_rss),
            error,
        }
    };
    let mut rows: Vec<Row> = results
        .iter()
        .map(|(t, reports, skipped)| {
            let status = if skipped.is_some() { Status::Skipped } else { Status::Ok };
            row(*t, reports, status, skipped.clone())
        })
        .collect();
    // A board failure fails the test it stopped in and every one after it.
    if outcome.is_err() {
        let peaks = (load.map(|l| l.peak_heap), load.map(|l| l.peak_rss));
        let (status, error, _) = verdict(board.engine, board.cap_on(profile), &outcome, peaks);
        for test in &tests[rows.len()..] {
            rows.push(row(*test, &[], status, error.clone()));
        }
    }
    Ok(rows)
}

pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| model | weights | profile | engine | threads | test | t/s | peak heap | peak RSS |\n\
         | --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: |\n",
    );
    let bytes = crate::units::human_bytes_or_dash;
    for r in rows {
        let tps = match (&r.tok_s, &r.error) {
            (Some(t), _) => format!("{:.2} ± {:.2}", t.mean, t.sd),
            (None, Some(e)) => e.clone(),
            (None, None) => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {tps} | {} | {} |",
            Path::new(&r.model).file_name().map_or(r.model.clone(), |n| n.to_string_lossy().into_owned()),
            crate::units::human_bytes(r.weight_bytes as f64),
            r.profile,
            r.engine.name(),
            r.threads,
            r.test,
            bytes(r.peak_heap),
            bytes(r.peak_rss)
        );
    }
    s
}

pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "model,weight_bytes,profile,engine,threads,test,status,tok_s_mean,tok_s_sd,peak_heap,peak_rss,error\n",
    );
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    // Quoted as RFC 4180 asks: a field with a comma or quote is quoted, quotes doubled.
    let field = |v: &str| {
        if v.contains([',', '"', '\n']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_string()
        }
    };
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            field(&r.model),
            r.weight_bytes,
            field(&r.profile),
            r.engine.name(),
            r.threads,
            r.test,
            r.status.name(),
            r.tok_s.map(|t| format!("{:.3}", t.mean)).unwrap_or_default(),
            r.tok_s.map(|t| format!("{:.3}", t.sd)).unwrap_or_default(),
            opt(r.peak_heap),
            opt(r.peak_rss),
            field(r.error.as_deref().unwrap_or(""))
        );
    }
    s
}

/// How to write the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Csv,
    Json,
}

pub fn render(rows: &[Row], format: Format) -> String {
    match format {
        Format::Md => markdown(rows),
        Format::Csv => csv(rows),
        Format::Json => serde_json::to_string_pretty(rows).unwrap_or_default() + "\n",
    }
}
