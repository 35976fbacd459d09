//! Device profiles: one TOML file per board, every figure with its source.
//!
//! The schema rejects unknown fields and foreign units, so a typo in a
//! team's own profile is an error naming the file and the field rather than
//! a silently missing figure in a report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use edgehil_runtime::wire::EngineKind;

use crate::units::{ByteRate, Bytes, FlopRate, Hertz, OpRate, Seconds};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_profiles.rs"));
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// a profile file could not be read
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    /// a profile file is not valid
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// a field holds a value the schema allows but that makes no sense
    #[error("{path}: field `{field}`: {message}")]
    Invalid { path: PathBuf, field: &'static str, message: String },
    /// a profile could not be written as TOML
    #[error("cannot write profile {name} as TOML: {message}")]
    Encode { name: String, message: String },
    /// no profile of that name
    #[error("no device profile named `{name}`; known: {known}")]
    NotFound { name: String, known: String },
}

/// A figure and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure<T> {
    pub value: T,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    Phone,
    Sbc,
    Mcu,
}

/// The CPU architecture of a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuArch {
    Aarch64,
    X86_64,
    Armv7,
    Thumbv7em,
    Thumbv6m,
    Xtensa,
    Riscv32,
}

/// How the board is reached by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum LinkSpec {
    Serial { baud: u32 },
    Probe { chip: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub display_name: String,
    pub class: DeviceClass,
    pub arch: CpuArch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub cores: Figure<u32>,
    pub clock: Figure<Hertz>,
    pub ram_total: Figure<Bytes>,
    /// What one application can allocate after the OS: the emulated board's cap.
    pub ram_usable: Figure<Bytes>,
    /// Flash for program and weights (microcontrollers): what a firmware and its model must fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash: Option<Figure<Bytes>>,
    /// Peak compute of the CPU cores the runtime uses.
    pub peak_fp32: Figure<FlopRate>,
    pub peak_int8: Figure<OpRate>,
    pub bandwidth: Figure<ByteRate>,
    /// Fixed cost of one inference call in the latency model.
    pub call_overhead: Figure<Seconds>,
    pub link: LinkSpec,
    /// The latency model fitted to measured runs; absent until `edgehil calibrate` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// The latency model's parameters fitted to runs measured with one engine
/// (`edgehil calibrate`): that engine's predictions use these instead of the
/// datasheet peaks, which no engine reaches and which differ between engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The engine of the measured runs: "tract" or "ort".
    pub engine: EngineKind,
    /// Effective rate of fp32 arithmetic.
    pub compute: Figure<FlopRate>,
    /// Effective rate when the engine runs int8 kernels.
    pub compute_int8: Figure<OpRate>,
    pub bandwidth: Figure<ByteRate>,
    /// Fixed cost of one call.
    pub call_overhead: Figure<Seconds>,
    /// Cost of each operation a call runs (dispatch, threads' hand-over);
    /// absent in calibrations made before edgehil counted ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_overhead: Option<Figure<Seconds>>,
    /// Cost of each prompt token beyond its arithmetic and memory traffic.
    pub token_overhead: Figure<Seconds>,
    /// Cost of widening one 4-bit weight to fp32 (ONNX Runtime, fp32
    /// activations, calls of more than one row); absent in older calibrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack: Option<Figure<Seconds>>,
    /// The same kernels' cost per 4-bit weight of a one-token call (no widening).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack_one_row: Option<Figure<Seconds>>,
}

impl Profile {
    /// Parses one profile; `path` names it in errors and must match `name`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let p: Profile = toml::from_str(text)
            .map_err(|e| ProfileError::Parse { path: path.into(), message: e.to_string().trim_end().into() })?;
        let invalid = |field, message: String| Err(ProfileError::Invalid { path: path.into(), field, message });
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        if p.name != stem {
            return invalid("name", format!("`{}` differs from the file name `{stem}`", p.name));
        }
        if p.cores.value == 0 {
            return invalid("cores", "must be at least 1".into());
        }
        if p.ram_usable.value > p.ram_total.value {
            return invalid(
                "ram_usable",
                format!("{} is more than ram_total {}", p.ram_usable.value.0, p.ram_total.value.0),
            );
        }
        for (field, zero) in [
            ("ram_usable", p.ram_usable.value.0 == 0),
            ("peak_fp32", p.peak_fp32.value.0 <= 0.0),
            ("peak_int8", p.peak_int8.value.0 <= 0.0),
            ("bandwidth", p.bandwidth.value.0 <= 0.0),
        ] {
            if zero {
                return invalid(field, "must be more than zero".into());
            }
        }
        if let Some(c) = &p.calibration {
            for (field, zero) in [
                ("calibration.compute", c.compute.value.0 <= 0.0),
                ("calibration.compute_int8", c.compute_int8.value.0 <= 0.0),
                ("calibration.bandwidth", c.bandwidth.value.0 <= 0.0),
            ] {
                if zero {
                    return invalid(field, "must be more than zero".into());
                }
            }
        }
        Ok(p)
    }

    /// The profile as a TOML file that `parse` reads back to the same profile,
    /// each figure within 1e-9 of its value (twelve significant digits).
    pub fn to_toml(&self) -> Result<String, ProfileError> {
        toml::to_string(self).map_err(|e| ProfileError::Encode { name: self.name.clone(), message: e.to_string() })
    }
}

impl Profile {
    /// Every figure with its value, source and reasoning, for `profiles show`.
    pub fn describe(&self) -> String {
        use crate::units::human_bytes;
        use std::fmt::Write;
        let mut s = format!(
            "{} ({})\nclass {:?}, arch {:?}, link {:?}\n",
            self.display_name, self.name, self.class, self.arch, self.link
        );
        if let Some(n) = &self.notes {
            let _ = writeln!(s, "notes: {n}");
        }
        fn row<T>(s: &mut String, field: &str, value: String, figure: &Figure<T>) {
            let _ = writeln!(s, "\n{field:<14} {value}\n{:<14} source: {}", "", figure.source);
            if let Some(r) = &figure.reasoning {
                let _ = writeln!(s, "{:<14} why: {r}", "");
            }
        }
        let gflops = |v: f64, unit: &str| format!("{:.2} {unit}", v / 1e9);
        let f = &self;
        row(&mut s, "cores", f.cores.value.to_string(), &f.cores);
        row(&mut s, "clock", format!("{:.3} GHz", f.clock.value.0 / 1e9), &f.clock);
        row(&mut s, "ram_total", human_bytes(f.ram_total.value.0 as f64), &f.ram_total);
        row(&mut s, "ram_usable", human_bytes(f.ram_usable.value.0 as f64), &f.ram_usable);
        row(&mut s, "peak_fp32", gflops(f.peak_fp32.value.0, "GFLOP/s"), &f.peak_fp32);
        row(&mut s, "peak_int8", gflops(f.peak_int8.value.0, "GOP/s"), &f.peak_int8);
        row(&mut s, "bandwidth", gflops(f.bandwidth.value.0, "GB/s"), &f.bandwidth);
        row(&mut s, "call_overhead", format!("{:.1} us", f.call_overhead.value.0 * 1e6), &f.call_overhead);
        if let Some(c) = &f.calibration {
            let _ = writeln!(
                s,
                "\ncalibration    predictions with engine {} use these instead of the figures above",
                c.engine.name()
            );
            row(&mut s, "compute", gflops(c.compute.value.0, "GFLOP/s"), &c.compute);
            row(&mut s, "compute_int8", gflops(c.compute_int8.value.0, "GOP/s"), &c.compute_int8);
            row(&mut s, "bandwidth", gflops(c.bandwidth.value.0, "GB/s"), &c.bandwidth);
            row(&mut s, "call_overhead", format!("{:.1} us", c.call_overhead.value.0 * 1e6), &c.call_overhead);
            if let Some(op) = &c.op_overhead {
                row(&mut s, "op_overhead", format!("{:.2} us", op.value.0 * 1e6), op);
            }
            row(&mut s, "token_overhead", format!("{:.2} us", c.token_overhead.value.0 * 1e6), &c.token_overhead);
            for (name, figure) in [("unpack", &c.unpack), ("unpack_one_row", &c.unpack_one_row)] {
                if let Some(f) = figure {
                    row(&mut s, name, format!("{:.4} ns per weight", f.value.0 * 1e9), f);
                }
            }
        }
        s
    }
}

/// The profiles known to a run: the built-in ones, then a team's folder
/// (whose profiles replace built-in ones of the same name).
impl Profile {
    /// The profile with `cap` bytes usable instead of its own figure, if given.
    pub fn with_cap(&self, cap: Option<u64>) -> Profile {
        let mut p = self.clone();
        if let Some(cap) = cap {
            p.ram_usable = Figure { value: Bytes(cap), source: "--cap".into(), reasoning: None };
        }
        p
    }
}

#[derive(Debug, Clone)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
    /// Built-in profiles a team's file replaced: (name, that file).
    replaced: Vec<(String, PathBuf)>,
}

impl Profiles {
    pub fn builtin() -> Result<Self, ProfileError> {
        let mut by_name = BTreeMap::new();
        for (stem, text) in builtin::BUILTIN {
            let path = PathBuf::from(format!("device-profiles/{stem}.toml"));
            by_name.insert(stem.to_string(), Profile::parse(text, &path)?);
        }
        Ok(Self { by_name, replaced: Vec::new() })
    }

    /// Built-in profiles plus every `*.toml` in `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Self, ProfileError> {
        let mut all = Self::builtin()?;
        let Some(dir) = dir else { return Ok(all) };
        let read_err = |cause| ProfileError::Read { path: dir.into(), cause };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|cause| ProfileError::Read { path: path.clone(), cause })?;
            let p = Profile::parse(&text, &path)?;
            if all.by_name.insert(p.name.clone(), p).is_some() {
                all.replaced.push((stem_of(&path), path));
            }
        }
        Ok(all)
    }

    pub fn get(&self, name: &str) -> Result<&Profile, ProfileError> {
        self.by_name.get(name).ok_or_else(|| ProfileError::NotFound {
            name: name.into(),
            known: self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.by_name.values()
    }

    /// The built-in profiles that a team's file of the same name replaced,
    /// with that file: a run on one of them does not use the shipped figures.
    pub fn replaced(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.replaced.iter().map(|(name, path)| (name.as_str(), path.as_path()))
    }
}

fn stem_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_profile_named_like_a_built_in_one_is_said_to_replace_it() {
        let dir = std::env::temp_dir().join(format!("edgehil-profiles-replace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let builtin = Profiles::builtin().unwrap();
        let mut jetson = builtin.get("jetson-orin-nano").unwrap().clone();
        jetson.display_name = "Our Jetson".into();
        std::fs::write(dir.join("jetson-orin-nano.toml"), jetson.to_toml().unwrap()).unwrap();
        let mut lab = jetson.clone();
        lab.name = "lab-orin".into();
        std::fs::write(dir.join("lab-orin.toml"), lab.to_toml().unwrap()).unwrap();

        let all = Profiles::load(Some(&dir)).unwrap();
        assert_eq!(all.get("jetson-orin-nano").unwrap().display_name, "Our Jetson");
        let replaced: Vec<(&str, &Path)> = all.replaced().collect();
        assert_eq!(replaced, [("jetson-orin-nano", dir.join("jetson-orin-nano.toml").as_path())]);
        assert_eq!(builtin.replaced().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
