//! The tables of `edgehil profiles list` and `edgehil models list`.

use std::fmt::Write;

use crate::catalog::{fit, Precision, CATALOG};
use crate::profile::{LinkSpec, Profile, Profiles};
use crate::units::{human_bytes, human_rate};

/// One row per known profile: class, arch, cores, RAM, peaks, bandwidth, link.
pub fn profiles_table(profiles: &Profiles) -> String {
    let mut s = format!(
        "{:<20} {:<6} {:<10} {:>5} {:>10} {:>10} {:>14} {:>12} {:>11}  {}\n",
        "NAME", "CLASS", "ARCH", "CORES", "RAM", "USABLE", "FP32", "INT8", "BANDWIDTH", "LINK"
    );
    for p in profiles.iter() {
        let link = match &p.link {
            LinkSpec::Serial { baud } => format!("serial@{baud}"),
            LinkSpec::Probe { chip } => format!("probe:{chip}"),
        };
        let _ = writeln!(
            s,
            "{:<20} {:<6} {:<10} {:>5} {:>10} {:>10} {:>14} {:>12} {:>11}  {}",
            p.name,
            format!("{:?}", p.class).to_lowercase(),
            format!("{:?}", p.arch).to_lowercase(),
            p.cores.value,
            human_bytes(p.ram_total.value.0 as f64),
            human_bytes(p.ram_usable.value.0 as f64),
            human_rate(p.peak_fp32.value.0, "FLOP/s"),
            human_rate(p.peak_int8.value.0, "OP/s"),
            human_rate(p.bandwidth.value.0, "B/s"),
            link
        );
    }
    s
}

/// One row per catalog model: parameters and weight bytes per precision;
/// with a profile, whether each precision fits it at `context` tokens.
pub fn models_table(profile: Option<&Profile>, context: u64) -> String {
    let mut s = format!("{:<20} {:<10} {:>8}", "MODEL", "ARCH", "PARAMS");
    for p in Precision::ALL {
        let _ = write!(s, " {:>10}", p.name().to_uppercase());
    }
    if let Some(p) = profile {
        let _ =
            write!(s, "  FIT ON {} ({} usable, context {context})", p.name, human_bytes(p.ram_usable.value.0 as f64));
    }
    s.push('\n');
    for m in CATALOG {
        let _ = write!(
            s,
            "{:<20} {:<10} {:>7.2}B",
            m.name,
            format!("{:?}", m.arch).to_lowercase(),
            m.parameters() as f64 / 1e9
        );
        for p in Precision::ALL {
            let _ = write!(s, " {:>10}", human_bytes(m.weight_bytes(p) as f64));
        }
        if let Some(profile) = profile {
            let fits: Vec<String> = Precision::ALL
                .iter()
                .map(|p| {
                    let f = fit(m, *p, context, profile);
                    let verdict = if f.fits { "fits" } else { "over" };
                    format!(
                        "{} {} {verdict} ({})",
                        p.name(),
                        human_bytes(f.peak as f64),
                        human_bytes(f.headroom as f64)
                    )
                })
                .collect();
            let _ = write!(s, "  {}", fits.join(", "));
        }
        s.push('\n');
    }
    s
}
