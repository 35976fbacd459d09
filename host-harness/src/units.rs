//! Quantities with units, as device profiles write them: "6.5 GiB",
//! "1.5 GHz", "144 GFLOP/s", "576 GOP/s", "68 GB/s", "50 us".
//!
//! Each kind accepts only its own units, so "68 GB" where a bandwidth
//! belongs is an error that names what was expected.

use serde::{Deserialize, Serialize};

/// Parses "NUMBER UNIT" against a table of (unit, factor).
fn parse(s: &str, what: &str, units: &[(&str, f64)]) -> Result<f64, String> {
    let expected = || units.iter().map(|(u, _)| *u).collect::<Vec<_>>().join(", ");
    let (num, unit) = s
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("`{s}` is not a {what}: expected a number, one space and a unit ({})", expected()))?;
    let value: f64 = num.parse().map_err(|_| format!("`{num}` in `{s}` is not a number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{s}`: a {what} must be a finite, non-negative number"));
    }
    let factor = units.iter().find(|(u, _)| *u == unit.trim()).map(|(_, f)| *f).ok_or_else(|| {
        format!("unit `{}` in `{s}` is not a unit of {what}: expected one of {}", unit.trim(), expected())
    })?;
    Ok(value * factor)
}

/// "NUMBER UNIT" that `close` accepts as reading back the same value: the
/// shortest such text among the units the value reaches (the larger unit of
/// a tie), so "7 GB" rather than "6.51925802231 GiB"; the smallest unit if none.
fn with_unit(value: f64, units: &[(&str, f64)], close: impl Fn(&str) -> bool) -> String {
    let mut by_size: Vec<&(&str, f64)> = units.iter().collect();
    by_size.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Twelve significant digits: drops the float noise of the division.
    let text = |(unit, factor): &(&str, f64)| {
        let n: f64 = format!("{:.11e}", value / factor).parse().unwrap_or(value / factor);
        format!("{n} {unit}")
    };
    by_size
        .iter()
        .filter(|(_, factor)| value >= *factor)
        .map(|u| text(u))
        .filter(|t| close(t))
        .min_by_key(String::len)
        .unwrap_or_else(|| text(by_size[by_size.len() - 1]))
}

macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $what:literal, tolerance $tol:literal, [$(($unit:literal, $factor:expr)),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub $ty);

        impl $name {
            pub const UNITS: &'static [(&'static str, f64)] = &[$(($unit, $factor)),+];
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                parse(&s, $what, Self::UNITS).map(|v| $name(v as $ty))
            }
        }

        /// As a profile writes it, so that a profile written back reads the same.
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let v = self.0 as f64;
                let close = |t: &str| {
                    parse(t, $what, Self::UNITS).is_ok_and(|r| ((r as $ty) as f64 - v).abs() <= $tol * v.abs())
                };
                f.write_str(&with_unit(v, Self::UNITS, close))
            }
        }

        impl From<$name> for String {
            fn from(q: $name) -> String {
                q.to_string()
            }
        }
    };
}

quantity!(
    /// Bytes.
    Bytes, u64, "size", tolerance 0.0, [("B", 1.0), ("KiB", 1024.0), ("MiB", 1048576.0), ("GiB", 1073741824.0), ("kB", 1e3), ("MB", 1e6), ("GB", 1e9)]
);
quantity!(
    /// Hertz.
    Hertz, f64, "frequency", tolerance 1e-9, [("Hz", 1.0), ("kHz", 1e3), ("MHz", 1e6), ("GHz", 1e9)]
);
quantity!(
    /// Floating-point operations per second.
    FlopRate, f64, "fp32 compute rate", tolerance 1e-9, [("MFLOP/s", 1e6), ("GFLOP/s", 1e9), ("TFLOP/s", 1e12)]
);
quantity!(
    /// Integer operations per second.
    OpRate, f64, "int8 compute rate", tolerance 1e-9, [("MOP/s", 1e6), ("GOP/s", 1e9), ("TOP/s", 1e12)]
);
quantity!(
    /// Bytes per second.
    ByteRate, f64, "bandwidth", tolerance 1e-9, [("MB/s", 1e6), ("GB/s", 1e9)]
);
quantity!(
    /// Bits per second: a network link's rate.
    BitRate, f64, "bit rate", tolerance 1e-9, [("bit/s", 1.0), ("kbit/s", 1e3), ("Mbit/s", 1e6), ("Gbit/s", 1e9)]
);
quantity!(
    /// Seconds.
    Seconds, f64, "duration", tolerance 1e-9, [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("min", 60.0)]
);

/// "1.5 GiB", "12.0 MiB", "340 KiB", "512 B": binary units for people.
/// A byte count for a table, or "-" where there is none.
pub fn human_bytes_or_dash(b: Option<u64>) -> String {
    b.map_or("-".to_string(), |b| human_bytes(b as f64))
}

pub fn human_bytes(b: f64) -> String {
    const STEPS: [(&str, f64); 3] = [("GiB", 1073741824.0), ("MiB", 1048576.0), ("KiB", 1024.0)];
    for (unit, size) in STEPS {
        if b.abs() >= size {
            return format!("{:.1} {unit}", b / size);
        }
    }
    format!("{b:.0} B")
}

/// "144.0 GFLOP/s", "800.0 MFLOP/s": a rate with the SI prefix that fits.
pub fn human_rate(v: f64, unit: &str) -> String {
    for (prefix, size) in [("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)] {
        if v >= size {
            return format!("{:.1} {prefix}{unit}", v / size);
        }
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_rejects_foreign_units() {
        assert_eq!(Bytes::try_from("6.5 GiB".to_string()).unwrap().0, 6979321856);
        assert_eq!(Hertz::try_from("1.5 GHz".to_string()).unwrap().0, 1.5e9);
        assert_eq!(ByteRate::try_from("68 GB/s".to_string()).unwrap().0, 68e9);
        assert!((Seconds::try_from("50 us".to_string()).unwrap().0 - 50e-6).abs() < 1e-18);
        let e = ByteRate::try_from("68 GB".to_string()).unwrap_err();
        assert!(e.contains("unit `GB`") && e.contains("MB/s, GB/s"), "{e}");
        let e = Bytes::try_from("8GiB".to_string()).unwrap_err();
        assert!(e.contains("one space"), "{e}");
        assert!(Bytes::try_from("-1 MiB".to_string()).is_err());
        assert_eq!(human_bytes(1536.0 * 1024.0), "1.5 MiB");
        assert_eq!(human_rate(8e8, "FLOP/s"), "800.0 MFLOP/s");
    }

    #[test]
    fn written_back_reads_the_same() {
        let bytes = |s: &str| Bytes::try_from(s.to_string()).unwrap();
        for (given, written) in [("6.5 GiB", "6.5 GiB"), ("7 GB", "7 GB"), ("200 KiB", "200 KiB"), ("1000 B", "1 kB")] {
            assert_eq!(bytes(given).to_string(), written);
            assert_eq!(bytes(written), bytes(given));
        }
        // 7e9 + 1 bytes is no round number in any unit: only B writes it exactly.
        assert_eq!(Bytes(7_000_000_001).to_string(), "7000000001 B");
        assert_eq!(FlopRate(196.3e9).to_string(), "196.3 GFLOP/s");
        assert_eq!(Seconds(50e-6).to_string(), "50 us");
        assert_eq!(Seconds(0.0).to_string(), "0 ns");
        let rate = FlopRate(1.234_567_890_123_4e11);
        let back = FlopRate::try_from(rate.to_string()).unwrap();
        assert!((back.0 - rate.0).abs() <= 1e-9 * rate.0, "{rate} read back as {back}");
    }
}
