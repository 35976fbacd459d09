//! The calibrated profile: the fit written as a profile's calibration section.

use std::path::{Path, PathBuf};

use crate::profile::{Calibration, Figure, Profile};
use crate::units::{ByteRate, FlopRate, OpRate, Seconds};

use super::fit::{fit, Fit, Param};
use super::read::Measured;
use super::CalibrateError;

/// `value` to four significant digits: what the cases can tell.
fn round4(value: f64) -> f64 {
    if value == 0.0 {
        return 0.0;
    }
    format!("{value:.3e}").parse().unwrap_or(value)
}

/// The default file of the calibrated profile: PROFILE-calibrated.toml.
pub fn default_out(profile: &str) -> PathBuf {
    let base = profile.strip_suffix("-calibrated").unwrap_or(profile);
    PathBuf::from(format!("{base}-calibrated.toml"))
}

/// A calibrated profile, its file text, and the fit that made it.
#[derive(Debug, Clone)]
pub struct Calibrated {
    pub profile: Profile,
    pub toml: String,
    pub fit: Fit,
}

/// `profile` with a calibration section fitted to `measured`, named after
/// `out` (a profile's name is its file's stem) and checked to load from there.
pub fn calibrate(
    measured: &Measured,
    profile: &Profile,
    out: &Path,
    bandwidth: Option<f64>,
) -> Result<Calibrated, CalibrateError> {
    let fit = fit(&measured.cases, profile.peak_int8.value.0 / profile.peak_fp32.value.0, bandwidth)?;
    let source = format!(
        "edgehil calibrate: fitted to {} cases of {} ({} on {}), median |error| {:.1} %, max {:.1} %",
        measured.cases.len(),
        measured.path.display(),
        measured.engine.name(),
        measured.target,
        fit.median_abs_pct,
        fit.max_abs_pct
    );
    let fitted =
        "least squares on log latency of FLOPs / compute + 4-bit weights x unpack (or unpack_one_row) + bytes / bandwidth + call overhead + ops x op overhead + tokens x token overhead";
    let why = |param: Param| fit.not_fitted[param].map_or(fitted.to_string(), |w| format!("not fitted: {w}"));
    fn figure<T>(value: T, source: &str, reasoning: String) -> Figure<T> {
        Figure { value, source: source.to_string(), reasoning: Some(reasoning) }
    }
    let p = &fit.params;
    let calibration = Calibration {
        engine: measured.engine,
        compute: figure(FlopRate(round4(p.compute)), &source, why(Param::Compute)),
        compute_int8: figure(OpRate(round4(p.compute_int8)), &source, why(Param::ComputeInt8)),
        bandwidth: figure(ByteRate(round4(p.bandwidth)), &source, why(Param::Bandwidth)),
        call_overhead: figure(Seconds(round4(p.call_overhead)), &source, why(Param::CallOverhead)),
        op_overhead: Some(figure(Seconds(round4(p.op_overhead)), &source, why(Param::OpOverhead))),
        token_overhead: figure(Seconds(round4(p.token_overhead)), &source, why(Param::TokenOverhead)),
        unpack: Some(figure(Seconds(round4(p.unpack)), &source, why(Param::Unpack))),
        unpack_one_row: Some(figure(Seconds(round4(p.unpack_one_row)), &source, why(Param::UnpackOneRow))),
    };
    let name = out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let calibrated = Profile {
        display_name: format!("{} (calibrated)", profile.display_name.trim_end_matches(" (calibrated)")),
        name,
        calibration: Some(calibration),
        ..profile.clone()
    };
    let toml = calibrated.to_toml()?;
    // What `--profiles-dir` will read: the file must load as this profile.
    let profile = Profile::parse(&toml, out)?;
    Ok(Calibrated { profile, toml, fit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::fit::tests::{cases, close, TRUE};
    use crate::estimate;
    use edgehil_runtime::wire::{EngineKind, OptLevel};

    #[test]
    fn the_calibrated_profile_loads_and_predicts_with_its_figures() {
        let builtin = crate::profile::Profiles::builtin().unwrap();
        let pi = builtin.get("raspberry-pi-5").unwrap();
        let measured = Measured {
            path: "runs.json".into(),
            cases: cases(&TRUE, 0.0),
            engine: EngineKind::Ort,
            target: edgehil_hil::Target::Emulated,
            skipped: vec![],
        };
        let out = default_out(&pi.name);
        assert_eq!(out, PathBuf::from("raspberry-pi-5-calibrated.toml"));
        let c = calibrate(&measured, pi, &out, None).unwrap();
        assert_eq!(c.profile.name, "raspberry-pi-5-calibrated");
        assert_eq!(Profile::parse(&c.toml, &out).unwrap(), c.profile);
        let cal = c.profile.calibration.as_ref().unwrap();
        assert!(
            cal.compute.source.contains("35 cases of runs.json (ort on emu), median |error|"),
            "{}",
            cal.compute.source
        );
        let case = &measured.cases[12];
        let at = |engine| estimate::predict(&case.cost, case.tokens, &c.profile, engine, OptLevel::All);
        let ort = at(EngineKind::Ort);
        assert!(ort.calibrated);
        close("ort prediction", ort.latency_ms, case.measured_ms, 0.01);
        // Another engine's rates are not these: the datasheet figures stand.
        let tract = at(EngineKind::Tract);
        assert!(!tract.calibrated);
        assert_eq!(tract, estimate::predict(&case.cost, case.tokens, pi, EngineKind::Tract, OptLevel::All));
    }
}
