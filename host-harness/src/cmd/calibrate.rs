//! `edgehil calibrate`: a profile's latency model fitted to measured runs, written as a profile.

use std::path::Path;

use anyhow::{Context, Result};

use edgehil::calibrate::{calibrate as fit_profile, default_out, read, Filter};
use edgehil::profile::Profiles;

use crate::cli::CalibrateArgs;

pub fn calibrate(args: CalibrateArgs, profiles: &Profiles) -> Result<u8> {
    let profile = profiles.get(&args.profile)?;
    let filter = Filter {
        profile: &profile.name,
        engine: args.engine,
        target: args.target.as_ref(),
        emulated_timings_as_real: args.emulated_timings_as_real,
    };
    let cases = read(&args.measured, &filter)?;
    outln!("{}", cases.summary());
    let out = args.out.unwrap_or_else(|| default_out(&profile.name));
    let calibrated = fit_profile(&cases, profile, &out, args.bandwidth)
        .with_context(|| format!("calibrating {} with {}", profile.name, args.measured.display()))?;
    out!("{}", calibrated.fit.table());
    super::write(&out, &calibrated.toml)?;
    outln!(
        "wrote {} to {}; use it with --profiles-dir {}",
        calibrated.profile.name,
        out.display(),
        out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).display()
    );
    Ok(0)
}
