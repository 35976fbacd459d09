//! The report of one run: JSON for machines, a table for people.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use edgehil_hil::{Target, Timing, VmInfo};
use edgehil_runtime::wire::{EngineKind, MemLimit, OptLevel};

use crate::accuracy::Accuracy;
use crate::board::BoardImage;
use crate::estimate::{GraphCost, Prediction};
use crate::units::human_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The model ran within the cap.
    Ok,
    /// A memory limit refused the model.
    DoesNotFit,
    /// The board failed otherwise: crash, hang, version, engine error.
    Failed,
    /// Not run: the case cannot apply (e.g. longer than the model's context).
    Skipped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::DoesNotFit => "does_not_fit",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardSummary {
    pub agent_version: String,
    pub arch: String,
    pub threads: u16,
    pub engines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub load_ms: f64,
    pub weight_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub runs: u32,
    pub warmup: u32,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
    pub mean: f64,
}

/// The name reports give a memory limit: "heap cap" (tract) or "process data limit" (ONNX Runtime).
pub fn limit_name(limit: MemLimit) -> &'static str {
    match limit {
        MemLimit::Heap => "heap cap",
        MemLimit::ProcessData => "process data limit",
    }
}

/// A memory limit as reports write it, by [`limit_name`].
mod limit_text {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use super::{limit_name, MemLimit};

    pub fn serialize<S: Serializer>(limit: &MemLimit, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(limit_name(*limit))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MemLimit, D::Error> {
        let text = String::deserialize(d)?;
        let all = [MemLimit::Heap, MemLimit::ProcessData];
        all.into_iter()
            .find(|l| limit_name(*l) == text)
            .ok_or_else(|| de::Error::unknown_variant(&text, &["heap cap", "process data limit"]))
    }
}

/// The peak a memory verdict compares with the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeasuredBy {
    /// The capped allocator's peak (tract).
    #[serde(rename = "peak heap")]
    PeakHeap,
    /// The process's peak resident set (ONNX Runtime, whose malloc the allocator does not see).
    #[serde(rename = "peak RSS")]
    PeakRss,
}

impl MeasuredBy {
    pub fn name(self) -> &'static str {
        match self {
            MeasuredBy::PeakHeap => "peak heap",
            MeasuredBy::PeakRss => "peak RSS",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub cap_bytes: u64,
    /// Which limit holds the engine (and, on a refusal, the one that tripped).
    #[serde(with = "limit_text")]
    pub limit: MemLimit,
    pub peak_heap: Option<u64>,
    pub peak_rss: Option<u64>,
    /// The figure the verdict compares with the cap.
    pub measured_by: MeasuredBy,
    pub fits: bool,
    /// cap − measured (negative: over).
    pub headroom_bytes: Option<i64>,
    pub headroom_pct: Option<f64>,
    /// From a refusal: at least this much was needed.
    pub needed_at_least: Option<u64>,
    /// The board's RAM, when its kernel's OOM killer ended the agent (a QEMU board).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_oom_ram: Option<u64>,
}

/// The VM of a QEMU board: what it emulated, how long it took to boot, where its console went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    pub machine: String,
    pub cpu: String,
    pub ram_bytes: u64,
    pub cores: u32,
    /// The Debian kernel package it booted.
    pub kernel: Option<String>,
    pub initrd_bytes: Option<u64>,
    /// From starting QEMU to the agent's start; not part of any run timing.
    pub boot_ms: f64,
    pub console_log: String,
}

impl VmSummary {
    pub fn new(vm: &VmInfo, image: Option<&BoardImage>) -> Self {
        VmSummary {
            machine: format!("{} -M {}", vm.arch.program(), vm.arch.machine()),
            cpu: vm.arch.cpu().into(),
            ram_bytes: vm.ram_bytes,
            cores: vm.cores,
            kernel: image.map(|i| i.kernel_package.clone()),
            initrd_bytes: image.map(|i| i.initrd_bytes),
            boot_ms: vm.boot.as_secs_f64() * 1e3,
            console_log: vm.console_log.display().to_string(),
        }
    }

    /// The table's line: "qemu-system-aarch64 -M virt -cpu cortex-a76, 8 GiB, 4 cores; boot 6.1 s; console …".
    pub fn line(&self) -> String {
        format!(
            "{} -cpu {}, {}, {} cores{}; boot {:.1} s (TCG); console {}",
            self.machine,
            self.cpu,
            human_bytes(self.ram_bytes as f64),
            self.cores,
            self.kernel.as_ref().map(|k| format!(", {k}")).unwrap_or_default(),
            self.boot_ms / 1e3,
            self.console_log
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bad_frames_host: u64,
    pub bad_frames_agent: Option<u32>,
    pub resends: u64,
    /// What was sent to the board before the run (none: the board read the host's files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSummary>,
}

/// The files a run put on the board, over all the uploads it made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadSummary {
    pub files: u32,
    /// Files the board held already (same SHA-256): nothing sent.
    pub reused: u32,
    pub bytes_sent: u64,
    pub chunks: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub model: String,
    pub reference: String,
    pub profile: String,
    #[serde(with = "crate::text")]
    pub target: Target,
    pub engine: EngineKind,
    pub opt_level: OptLevel,
    pub status: Status,
    pub error: Option<String>,
    pub board: Option<BoardSummary>,
    pub load: Option<LoadSummary>,
    pub latency_ms: Option<LatencyMs>,
    pub cost: Option<GraphCost>,
    /// Prompt tokens of one call (language models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    pub predicted: Option<Prediction>,
    pub memory: Memory,
    pub accuracy: Vec<Accuracy>,
    pub link: LinkSummary,
    /// A QEMU board's VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSummary>,
    /// A microcontroller board's machine, flash and RAM (`qemu:` Cortex-M targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcu: Option<McuSummary>,
}

/// What a microcontroller board held, as ST's analyze reports it: flash and RAM apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McuSummary {
    /// The machine that emulated the profile's board, e.g. "QEMU mps2-an386 (Cortex-M4F)".
    pub machine: String,
    /// The firmware image in flash (code, read-only data, .data's initial values).
    pub flash_firmware_bytes: u64,
    /// The micro-model in flash, read in place.
    pub flash_model_bytes: u64,
    /// The profile's flash, if it gives one.
    pub flash_profile_bytes: Option<u64>,
    /// RAM at its peak: statics, the stack's deepest (painted) and the heap's peak.
    pub ram_peak_bytes: Option<u64>,
    pub ram_profile_bytes: u64,
    /// The median timed run as the firmware counted it: the chip's cycles on a
    /// real board, the instructions executed under QEMU (`-icount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles_median: Option<u64>,
    /// The profile's core clock, at which `cycles_median` is read as time.
    #[serde(default)]
    pub profile_clock_hz: f64,
}

impl McuSummary {
    /// The cycles line: the count, what it counts, and its time at the profile's clock.
    fn cycles_line(&self, timing: Timing) -> Option<String> {
        let count = self.cycles_median?;
        let what = match timing {
            Timing::EmulatedInstructions => {
                "instructions (QEMU -icount: an instruction count, not the chip's timing; one per cycle)"
            }
            Timing::Host | Timing::Device => "cycles",
        };
        Some(format!(
            "median {count} {what}, {:.3} ms at {:.0} MHz",
            count as f64 / self.profile_clock_hz * 1e3,
            self.profile_clock_hz / 1e6
        ))
    }
}

/// Says when a target's latencies are not the device's.
pub fn timing_note(target: &Target) -> &'static str {
    match target.timing() {
        // A microcontroller's QEMU counts instructions (`-icount`), read at the profile's clock.
        Timing::EmulatedInstructions if matches!(target, Target::QemuMcu { .. }) => {
            "; QEMU's instruction count at the profile's clock, not the chip's timing"
        }
        Timing::EmulatedInstructions => "; emulated-instruction timings (QEMU under TCG), not device latencies",
        Timing::Host | Timing::Device => "",
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| if v != 0.0 && v.abs() < 1e-3 { format!("{v:.2e}") } else { format!("{v:.digits$}") })
}

impl RunReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} on {} ({}, {}, opt {})",
            self.model,
            self.profile,
            self.target,
            self.engine.name(),
            self.opt_level.name()
        );
        let m = &self.memory;
        let verdict = match self.status {
            Status::Ok => "fits".to_string(),
            Status::DoesNotFit if m.kernel_oom_ram.is_some() => {
                format!(
                    "does not fit (board kernel OOM killer, RAM {})",
                    human_bytes(m.kernel_oom_ram.unwrap_or(0) as f64)
                )
            }
            Status::DoesNotFit => match m.needed_at_least {
                // Only known to be over the cap: no figure of its own to give.
                Some(n) if n <= m.cap_bytes.saturating_add(1) => {
                    format!(
                        "does not fit: needed more than the cap {} ({})",
                        human_bytes(m.cap_bytes as f64),
                        limit_name(m.limit)
                    )
                }
                Some(n) => format!(
                    "does not fit: needed >= {}, cap {} ({})",
                    human_bytes(n as f64),
                    human_bytes(m.cap_bytes as f64),
                    limit_name(m.limit)
                ),
                None => format!("does not fit: cap {} ({})", human_bytes(m.cap_bytes as f64), limit_name(m.limit)),
            },
            Status::Failed | Status::Skipped => self.status.name().to_string(),
        };
        let _ = writeln!(s, "  status     {verdict}");
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error      {e}");
        }
        if let Some(l) = &self.latency_ms {
            let _ = writeln!(
                s,
                "  latency    min {:.3} ms  median {:.3} ms  p90 {:.3} ms  max {:.3} ms  ({} runs after {} warm-ups){}",
                l.min,
                l.median,
                l.p90,
                l.max,
                l.runs,
                l.warmup,
                timing_note(&self.target)
            );
        }
        if let Some(p) = &self.predicted {
            let _ = writeln!(
                s,
                "  predicted  {:.3} ms on {} ({}{:?}-bound: compute {:.4} ms at {} peak, memory {:.4} ms, overhead {:.3} ms)",
                p.latency_ms,
                self.profile,
                if p.calibrated { "calibrated, " } else { "" },
                p.bound,
                p.compute_ms,
                p.peak.name(),
                p.memory_ms,
                p.overhead_ms
            );
        }
        if let Some(l) = &self.load {
            let _ = writeln!(s, "  load       {:.1} ms, weights {}", l.load_ms, human_bytes(l.weight_bytes as f64));
        }
        let peak = |v: Option<u64>| v.map_or("-".into(), |v| human_bytes(v as f64));
        let headroom = match (m.headroom_bytes, m.headroom_pct) {
            (Some(b), Some(p)) => format!(", headroom {} ({p:.1}%)", human_bytes(b as f64)),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  memory     peak heap {}, peak RSS {}, cap {} ({}; verdict by {}){headroom}",
            peak(m.peak_heap),
            peak(m.peak_rss),
            human_bytes(m.cap_bytes as f64),
            limit_name(m.limit),
            m.measured_by.name()
        );
        // --outputs digest: the board sent a CRC-32 of each output, no values to measure.
        let digests_only = self.accuracy.iter().all(|a| a.digest_equal.is_some());
        match (self.accuracy.is_empty(), digests_only) {
            (true, _) => {}
            (false, true) => {
                let _ = writeln!(s, "  accuracy   {:<12} digest", "output");
            }
            (false, false) => {
                let _ = writeln!(
                    s,
                    "  accuracy   {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
                    "output", "L2R", "RMSE", "MAE", "COS", "max|err|", "top-1"
                );
            }
        }
        for a in &self.accuracy {
            if let Some(equal) = a.digest_equal {
                let verdict = match equal {
                    true => "match (the board's CRC-32 equals the reference's)",
                    false => "differs (the board's CRC-32 is not the reference's)",
                };
                let _ = writeln!(s, "             {:<12} {verdict}", a.output);
                continue;
            }
            let _ = writeln!(
                s,
                "             {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
                a.output,
                opt(a.l2r, 6),
                opt(a.rmse, 6),
                opt(a.mae, 6),
                opt(a.cosine, 6),
                opt(a.max_abs, 6),
                a.top1.map_or("-".into(), |t| format!("{:.0}%", t * 100.0))
            );
        }
        if let Some(vm) = &self.vm {
            let _ = writeln!(s, "  vm         {}", vm.line());
        }
        if let Some(mcu) = &self.mcu {
            let flash = mcu.flash_firmware_bytes + mcu.flash_model_bytes;
            let of = |v: Option<u64>| v.map_or(String::new(), |v| format!(" of {}", human_bytes(v as f64)));
            let _ = writeln!(s, "  board      {} standing for {}", mcu.machine, self.profile);
            let _ = writeln!(
                s,
                "  flash      {}{} (firmware {}, model {})",
                human_bytes(flash as f64),
                of(mcu.flash_profile_bytes),
                human_bytes(mcu.flash_firmware_bytes as f64),
                human_bytes(mcu.flash_model_bytes as f64)
            );
            let _ = writeln!(
                s,
                "  RAM        peak {}{} (statics + stack + heap)",
                mcu.ram_peak_bytes.map_or("-".into(), |v| human_bytes(v as f64)),
                of(Some(mcu.ram_profile_bytes))
            );
            if let Some(line) = mcu.cycles_line(self.target.timing()) {
                let _ = writeln!(s, "  cycles     {line}");
            }
        }
        let l = &self.link;
        let _ = writeln!(
            s,
            "  link       {} frames sent, {} received, {} bad at host, {} bad at board, {} resends",
            l.frames_sent,
            l.frames_received,
            l.bad_frames_host,
            l.bad_frames_agent.map_or("?".into(), |n| n.to_string()),
            l.resends
        );
        s
    }
}
