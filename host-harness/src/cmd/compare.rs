//! `edgehil compare`: two journals' cases paired across targets.

use anyhow::{bail, Result};

use edgehil::suite;
use edgehil::suite::record::Record;

use crate::cli::CompareArgs;

pub fn compare(args: CompareArgs) -> Result<u8> {
    let a = suite::record::read(&args.a)?;
    let (a, b) = match &args.b {
        Some(b) => (a, suite::record::read(b)?),
        None => split_by_target(a, &args.a)?,
    };
    let pairing = suite::compare::pair(&a, &b, args.emulated_timings_as_real);
    out!("{}", pairing.text());
    if let Some(path) = args.json {
        super::write(&path, serde_json::to_string_pretty(&pairing)?)?;
    }
    Ok(0)
}

/// One journal's records as two sides, by target: the first target met is A.
fn split_by_target(records: Vec<Record>, path: &std::path::Path) -> Result<(Vec<Record>, Vec<Record>)> {
    let mut targets: Vec<String> = Vec::new();
    for r in &records {
        let t = r.case.target.to_string();
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.len() != 2 {
        bail!(
            "{} holds cases on {} target(s) ({}): alone, compare needs a journal of exactly two; give two journals instead",
            path.display(),
            targets.len(),
            targets.join(", ")
        );
    }
    Ok(records.into_iter().partition(|r| r.case.target.to_string() == targets[0]))
}
