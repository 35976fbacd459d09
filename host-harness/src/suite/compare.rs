//! Comparing journals: tonight against a baseline (what regressed), and one
//! target against another (emulated against real).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use edgehil_hil::{Target, Timing};
use edgehil_runtime::wire::EngineKind;

use crate::report::Status;
use crate::units::human_bytes;

use super::file::Tolerances;
use super::record::Record;

/// One thing that got worse than the tolerance allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    pub case: String,
    /// "status", "latency", "peak RAM", "accuracy" or "missing".
    pub what: &'static str,
    pub baseline: String,
    pub current: String,
    /// How far it moved, and the limit.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineComparison {
    pub tolerances: Tolerances,
    /// Cases in both journals.
    pub compared: usize,
    pub regressions: Vec<Regression>,
    /// Cases only the current journal has.
    pub new: Vec<String>,
}

fn pct(base: f64, cur: f64) -> f64 {
    (cur / base - 1.0) * 100.0
}

/// The last record of each case (a resumed journal may hold a case once only,
/// but a hand-merged one may not).
fn by_id(records: &[Record], key: fn(&Record) -> String) -> BTreeMap<String, &Record> {
    records.iter().map(|r| (key(r), r)).collect()
}

pub fn against_baseline(baseline: &[Record], current: &[Record], tol: Tolerances) -> BaselineComparison {
    let base = by_id(baseline, |r| r.case.id());
    let cur = by_id(current, |r| r.case.id());
    let mut regressions = Vec::new();
    let mut compared = 0;
    for (id, b) in &base {
        let Some(c) = cur.get(id) else {
            regressions.push(Regression {
                case: id.clone(),
                what: "missing",
                baseline: b.status.name().into(),
                current: "not run".into(),
                detail: "the case is in the baseline but not in this run".into(),
            });
            continue;
        };
        compared += 1;
        let mut push = |what, baseline: String, current: String, detail: String| {
            regressions.push(Regression { case: id.clone(), what, baseline, current, detail })
        };
        if b.status == Status::Ok && c.status != Status::Ok {
            push("status", "ok".into(), c.status.name().into(), c.reason.clone().unwrap_or_default());
            continue;
        }
        if b.status != Status::Ok || c.status != Status::Ok {
            continue;
        }
        let (bm, cm) = (&b.measurements, &c.measurements);
        if let (Some(bl), Some(cl)) = (bm.latency_ms, cm.latency_ms) {
            if bl > 0.0 && pct(bl, cl) > tol.latency_pct {
                push(
                    "latency",
                    format!("{bl:.3} ms"),
                    format!("{cl:.3} ms"),
                    format!("+{:.1}% (limit +{}%)", pct(bl, cl), tol.latency_pct),
                );
            }
        }
        if let (Some(bp), Some(cp)) = (bm.peak(), cm.peak()) {
            if bp > 0 && pct(bp as f64, cp as f64) > tol.peak_ram_pct {
                push(
                    "peak RAM",
                    human_bytes(bp as f64),
                    human_bytes(cp as f64),
                    format!("+{:.1}% (limit +{}%)", pct(bp as f64, cp as f64), tol.peak_ram_pct),
                );
            }
        }
        if let (Some(ba), Some(ca)) = (bm.accuracy, cm.accuracy) {
            if ba - ca > tol.accuracy_drop {
                let metric = cm.accuracy_metric.as_deref().unwrap_or("accuracy");
                push(
                    "accuracy",
                    format!("{ba:.4} {metric}"),
                    format!("{ca:.4} {metric}"),
                    format!("-{:.4} (limit -{})", ba - ca, tol.accuracy_drop),
                );
            }
        }
    }
    let new = cur.keys().filter(|id| !base.contains_key(*id)).cloned().collect();
    BaselineComparison { tolerances: tol, compared, regressions, new }
}

impl BaselineComparison {
    pub fn text(&self) -> String {
        let t = &self.tolerances;
        let mut s = format!(
            "{} cases compared (tolerances: latency +{}%, peak RAM +{}%, accuracy -{})\n",
            self.compared, t.latency_pct, t.peak_ram_pct, t.accuracy_drop
        );
        match self.regressions.len() {
            0 => s.push_str("no regressions\n"),
            n => {
                let _ = writeln!(s, "{n} regressions:");
                for r in &self.regressions {
                    let _ = writeln!(s, "  {}  {}: {} → {}  {}", r.case, r.what, r.baseline, r.current, r.detail);
                }
            }
        }
        if !self.new.is_empty() {
            let _ = writeln!(s, "{} cases not in the baseline: {}", self.new.len(), self.new.join(", "));
        }
        s
    }
}

/// One case as two targets ran it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    /// The case without its target.
    pub case: String,
    #[serde(with = "crate::text")]
    pub a_target: Target,
    #[serde(with = "crate::text")]
    pub b_target: Target,
    pub a_engine: EngineKind,
    pub b_engine: EngineKind,
    pub a_status: Status,
    pub b_status: Status,
    /// What each side's latencies are worth (host, device, emulated-instruction).
    #[serde(serialize_with = "timing_name")]
    pub a_timing: Timing,
    #[serde(serialize_with = "timing_name")]
    pub b_timing: Timing,
    /// B's latency / A's; none where a side has emulated-instruction timings
    /// and the caller did not say to treat them as real.
    pub latency_ratio: Option<f64>,
    /// B's peak − A's, bytes.
    pub ram_difference: Option<i64>,
    /// B's accuracy − A's.
    pub accuracy_difference: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pairing {
    pub pairs: Vec<Pair>,
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
}

fn timing_name<S: serde::Serializer>(t: &Timing, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

/// Pairs the cases of two journals by everything but the target; a case on
/// a board with one engine (a microcontroller's micro engine) pairs with the
/// other side's case of every engine. Latencies of an emulated-instruction
/// target (QEMU) are not compared with anything unless
/// `emulated_timings_as_real`: they measure the emulator.
pub fn pair(a: &[Record], b: &[Record], emulated_timings_as_real: bool) -> Pairing {
    let a = by_id(a, |r| r.case.without_target());
    let b = by_id(b, |r| r.case.without_target());
    let matches = |ra: &Record, rb: &Record| {
        let one_engine = ra.case.target.only_engine().is_some() || rb.case.target.only_engine().is_some();
        ra.case.without_target() == rb.case.without_target()
            || (one_engine && ra.case.without_board() == rb.case.without_board())
    };
    let found = |ra: &Record| -> Vec<&Record> { b.values().copied().filter(|rb| matches(ra, rb)).collect() };
    let pairs = a
        .iter()
        .flat_map(|(key, ra)| found(ra).into_iter().map(move |rb| (key, *ra, rb)))
        .map(|(key, ra, rb)| {
            let (ma, mb) = (&ra.measurements, &rb.measurements);
            let (a_timing, b_timing) = (ra.case.target.timing(), rb.case.target.timing());
            let comparable = emulated_timings_as_real || ![a_timing, b_timing].contains(&Timing::EmulatedInstructions);
            Pair {
                case: key.clone(),
                a_target: ra.case.target.clone(),
                b_target: rb.case.target.clone(),
                a_engine: ra.case.engine,
                b_engine: rb.case.engine,
                a_status: ra.status,
                b_status: rb.status,
                a_timing,
                b_timing,
                latency_ratio: ma
                    .latency_ms
                    .zip(mb.latency_ms)
                    .filter(|(x, _)| *x > 0.0 && comparable)
                    .map(|(x, y)| y / x),
                ram_difference: ma.peak().zip(mb.peak()).map(|(x, y)| y as i64 - x as i64),
                accuracy_difference: ma.accuracy.zip(mb.accuracy).map(|(x, y)| y - x),
            }
        })
        .collect();
    Pairing {
        pairs,
        only_a: a.iter().filter(|(_, ra)| found(ra).is_empty()).map(|(k, _)| k.clone()).collect(),
        only_b: b.iter().filter(|(_, rb)| !a.values().any(|ra| matches(ra, rb))).map(|(k, _)| k.clone()).collect(),
    }
}

impl Pair {
    fn latency_cell(&self) -> String {
        match (self.latency_ratio, [self.a_timing, self.b_timing].contains(&Timing::EmulatedInstructions)) {
            (Some(r), false) => format!("{r:.3}"),
            (Some(r), true) => format!("{r:.3} (emulated-instruction timings)"),
            (None, true) => "not compared: emulated-instruction timings".into(),
            (None, false) => "-".into(),
        }
    }
}

impl Pairing {
    pub fn text(&self) -> String {
        let mut s = String::from(
            "| case | A | B | latency B/A | peak RAM B−A | accuracy B−A |\n|---|---|---|---:|---:|---:|\n",
        );
        for p in &self.pairs {
            let ram = p.ram_difference.map_or("-".into(), |d| {
                let sign = if d < 0 { "−" } else { "+" };
                format!("{sign}{}", human_bytes(d.unsigned_abs() as f64))
            });
            // Each side's engine where they differ (a microcontroller's micro against the emulated board's).
            let engine = |e: EngineKind| match p.a_engine == p.b_engine {
                true => String::new(),
                false => format!(" ({})", e.name()),
            };
            let _ = writeln!(
                s,
                "| {} | {}{} {} | {}{} {} | {} | {} | {} |",
                p.case,
                p.a_target,
                engine(p.a_engine),
                p.a_status.name(),
                p.b_target,
                engine(p.b_engine),
                p.b_status.name(),
                p.latency_cell(),
                ram,
                p.accuracy_difference.map_or("-".into(), |d| format!("{d:+.4}")),
            );
        }
        for (side, list) in [("A", &self.only_a), ("B", &self.only_b)] {
            if !list.is_empty() {
                let _ = writeln!(s, "\nonly in {side}: {}", list.join(", "));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::record::tests::record;
    use crate::suite::record::Case;
    use edgehil_hil::{McuMachine, QemuArch};

    fn on(target: Target, latency_ms: f64, accuracy: f64) -> Record {
        let mut r = record("m");
        r.case.target = target;
        r.measurements.latency_ms = Some(latency_ms);
        r.measurements.accuracy = Some(accuracy);
        r
    }

    #[test]
    fn emulated_instruction_timings_are_labelled_and_not_compared_unless_told() {
        let emu = [on(Target::Emulated, 2.0, 0.99)];
        let qemu = [on(Target::Qemu { arch: QemuArch::Aarch64 }, 60.0, 0.98)];
        let p = pair(&emu, &qemu, false);
        let only = &p.pairs[0];
        assert_eq!((only.a_timing, only.b_timing), (Timing::Host, Timing::EmulatedInstructions));
        assert_eq!(only.latency_ratio, None);
        assert!((only.accuracy_difference.unwrap() + 0.01).abs() < 1e-12, "accuracy is compared all the same");
        assert!(p.text().contains("| not compared: emulated-instruction timings |"), "{}", p.text());
        let told = pair(&emu, &qemu, true);
        assert_eq!(told.pairs[0].latency_ratio, Some(30.0));
        assert!(told.text().contains("| 30.000 (emulated-instruction timings) |"), "{}", told.text());
        // A real board's timings are compared as before.
        let serial = [on(Target::Serial { port: "/dev/ttyUSB0".into(), baud: None }, 3.0, 0.99)];
        assert_eq!(pair(&emu, &serial, false).pairs[0].latency_ratio, Some(1.5));
    }

    #[test]
    fn a_microcontroller_case_pairs_with_every_engine_of_the_emulated_board() {
        let mcu = Target::QemuMcu { machine: McuMachine::Mps2An386 };
        let emu: Vec<Record> = [EngineKind::Tract, EngineKind::Ort]
            .into_iter()
            .map(|engine| Record {
                case: Case { engine, ..on(Target::Emulated, 1.0, 1.0).case },
                ..on(Target::Emulated, 1.0, 1.0)
            })
            .collect();
        let board = Record {
            case: Case { engine: EngineKind::Micro, ..on(mcu.clone(), 9.0, 0.99).case },
            ..on(mcu, 9.0, 0.99)
        };
        let other_model = on(Target::Emulated, 1.0, 1.0);
        let other_model = Record { case: Case { model: "n".into(), ..other_model.case.clone() }, ..other_model };
        let p = pair(&[emu, vec![other_model]].concat(), &[board], false);
        let cases: Vec<(&str, EngineKind, EngineKind)> =
            p.pairs.iter().map(|p| (p.case.as_str(), p.a_engine, p.b_engine)).collect();
        assert_eq!(
            cases,
            [
                ("m/none/p/ort/w", EngineKind::Ort, EngineKind::Micro),
                ("m/none/p/tract/w", EngineKind::Tract, EngineKind::Micro)
            ]
        );
        assert_eq!(
            (p.only_a.as_slice(), p.only_b.as_slice()),
            (["n/none/p/tract/w".to_string()].as_slice(), [].as_slice())
        );
        assert!(
            p.text().contains("| m/none/p/tract/w | emu (tract) ok | qemu:mps2-an386 (micro) ok | not compared: emulated-instruction timings |"),
            "{}",
            p.text()
        );
    }
}
