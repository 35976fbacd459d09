//! `edgehil compare`: two journals' cases paired across targets.

use anyhow::Result;

use edgehil::suite;

use crate::cli::CompareArgs;

pub fn compare(args: CompareArgs) -> Result<u8> {
    let pairing = suite::compare::pair(
        &suite::record::read(&args.a)?,
        &suite::record::read(&args.b)?,
        args.emulated_timings_as_real,
    );
    out!("{}", pairing.text());
    if let Some(path) = args.json {
        super::write(&path, serde_json::to_string_pretty(&pairing)?)?;
    }
    Ok(0)
}
