//! `edgehil suite run|compare|report|worker`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use edgehil::profile::Profiles;
use edgehil::suite::file::{Suite, Tolerances};
use edgehil::suite::record::{self, Record};
use edgehil::suite::runner::{journal_path, run_case, run_suite, write_reports, Progress, RunSuiteOptions};
use edgehil::suite::{compare, reports};

use crate::cli::{ReportFormat, SuiteCmd};

/// A journal, a report.json, or a suite's --out folder.
fn records_at(path: &Path) -> Result<Vec<Record>> {
    let file = if path.is_dir() { journal_path(path) } else { path.to_path_buf() };
    Ok(record::read(&file)?)
}

pub fn suite(command: SuiteCmd, profiles: &Profiles, profiles_dir: Option<&Path>) -> Result<u8> {
    match command {
        SuiteCmd::Worker { suite: path, out, case } => {
            let s = Suite::load(&path, profiles)?;
            let case = serde_json::from_str(&case).context("--case: not a case")?;
            let record = run_case(&s, profiles, &out, case);
            outln!("{}", serde_json::to_string(&record)?);
            Ok(0)
        }
        SuiteCmd::Report { results, format } => {
            let records = records_at(&results)?;
            let name = records.first().map_or("suite".to_string(), |r| r.suite.clone());
            match format {
                None => {
                    let dir = if results.is_dir() {
                        results
                    } else {
                        results.parent().unwrap_or(Path::new(".")).to_path_buf()
                    };
                    for path in write_reports(&dir, &name, &records)? {
                        outln!("{}", path.display());
                    }
                }
                Some(ReportFormat::Json) => outln!("{}", serde_json::to_string_pretty(&records)?),
                Some(ReportFormat::Junit) => out!("{}", reports::junit(&name, &records)),
                Some(ReportFormat::Md) => out!("{}", reports::markdown(&name, &records)),
                Some(ReportFormat::Lava) => out!("{}", reports::lava(&records)),
            }
            Ok(0)
        }
        SuiteCmd::Compare { current, baseline, latency_pct, peak_ram_pct, accuracy_drop } => {
            let tolerances = Tolerances { latency_pct, peak_ram_pct, accuracy_drop };
            let c = compare::against_baseline(&records_at(&baseline)?, &records_at(&current)?, tolerances);
            out!("{}", c.text());
            Ok(if c.regressions.is_empty() { 0 } else { super::EXIT_REGRESSED })
        }
        SuiteCmd::Run { suite: path, out, resume, baseline, profiles: on, targets, engine, jobs } => {
            let mut s = Suite::load(&path, profiles)?;
            s.override_axes(on, targets, engine, profiles)?;
            let out = out.unwrap_or_else(|| PathBuf::from("edgehil-results").join(&s.name));
            let mut worker = vec![std::env::current_exe().context("locating edgehil")?.into_os_string()];
            if let Some(dir) = profiles_dir {
                worker.extend(["--profiles-dir".into(), dir.as_os_str().to_owned()]);
            }
            let opts = RunSuiteOptions { out: out.clone(), resume, worker, jobs: jobs as usize };
            let (records, unhealthy) = run_with_progress(&s, profiles, &opts)?;
            let written = write_reports(&out, &s.name, &records)?;
            out!("{}", reports::markdown(&s.name, &records));
            outln!(
                "\njournal {} and {}",
                journal_path(&out).display(),
                written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
            let mut code = records.iter().map(|r| r.status).fold(0, super::worse);
            if unhealthy {
                // Its cases are skipped, not passed: a dead board fails the night.
                code = code.max(super::EXIT_BOARD_FAILED);
            }
            if let Some(baseline) = baseline {
                let c = compare::against_baseline(&records_at(&baseline)?, &records, s.tolerances);
                out!("\n{}", c.text());
                if !c.regressions.is_empty() {
                    code = code.max(super::EXIT_REGRESSED);
                }
            }
            Ok(code)
        }
    }
}

/// Runs the suite with a progress bar on a terminal, a line per case either
/// way; the journal, and whether a board failed its health check.
fn run_with_progress(s: &Suite, profiles: &Profiles, opts: &RunSuiteOptions) -> Result<(Vec<Record>, bool)> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} cases, {elapsed} elapsed, eta {eta}  {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_prefix(s.name.clone());
    // Off a terminal (CI logs) the bar is hidden and would swallow these lines.
    let say = |line: String| if bar.is_hidden() { errln!("{line}") } else { bar.println(line) };
    let mut unhealthy = false;
    let mut show = |p: Progress| match p {
        Progress::Start { total, done } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.reset_eta();
            if done > 0 {
                say(format!("resuming: {done} of {total} cases already in the journal"));
            }
        }
        Progress::Repaired { journal, repaired } => say(format!(
            "{}: the last line was cut short (a killed write); its {} bytes were removed and kept in {}",
            journal.display(),
            repaired.bytes,
            repaired.kept.display()
        )),
        Progress::Exporting(what) => bar.set_message(format!("exporting {what}")),
        Progress::Case(case) => bar.set_message(case.id()),
        Progress::Unhealthy { target, reason } => {
            unhealthy = true;
            say(format!("board {target} failed its health check, its cases are skipped: {reason}"))
        }
        Progress::Done(r) => {
            let latency = r.measurements.latency_ms.map_or(String::new(), |l| format!("  {l:.3} ms"));
            let reason = r.reason.as_deref().map_or(String::new(), |r| format!("  ({r})"));
            say(format!("{:<12} {}{latency}{reason}", r.status.name(), r.case.id()));
            bar.inc(1);
        }
    };
    let records = run_suite(s, profiles, opts, &mut show)?;
    bar.finish_and_clear();
    Ok((records, unhealthy))
}
