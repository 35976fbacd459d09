//! `edgehil run`: one model on one board, against the host reference.

use std::io::Write;
use std::path::{Path, PathBuf};

use edgehil_hil::labgrid::LabgridBoard;
use edgehil_hil::{
    instructions, Bundle, EmulatedBoard, EmulatorConfig, ExitCause, HilError, InferResult, Link, LinkStats, McuConfig,
    QemuArch, QemuMcu, SerialLink, Session, Target, Timeouts, UploadStep, MODEL_ADDR,
};
use edgehil_runtime::engine::{self, EngineError, LoadOptions};
use edgehil_runtime::metrics::LatencySummary;
use edgehil_runtime::wire::{AgentError, BoardInfo, EngineKind, LoadReport, MemLimit, OptLevel, OutputMode, Tensor};

use crate::accuracy::{self, Accuracy};
use crate::board::{self, BoardError, BoardImage};
use crate::estimate::{self, EstimateError};
use crate::inputs::{self, InputError};
use crate::mcu::{self, FlashImage};
use crate::profile::{LinkSpec, Profile};
use crate::report::{
    limit_name, BoardSummary, LatencyMs, LinkSummary, LoadSummary, McuSummary, MeasuredBy, Memory, RunReport, Status,
    UploadSummary, VmSummary,
};
use crate::units::human_bytes;

/// Host-side failures: these stop the run before any board is involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// the host reference could not be computed
    #[error("host reference from {path}: {cause}")]
    Reference { path: PathBuf, cause: EngineError },
    #[error(transparent)]
    Inputs(#[from] InputError),
    #[error(transparent)]
    Estimate(#[from] EstimateError),
    /// the model cannot run on a microcontroller's micro engine
    #[error(transparent)]
    Micro(#[from] edgehil_onnx::micro::MicroError),
    /// the agent binary or the ONNX Runtime library was not found
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Board(#[from] BoardError),
}

/// Which board, which engine, and how to reach it: what `run` and
/// `generate` share.
#[derive(Debug, Clone)]
pub struct BoardOptions {
    pub target: Target,
    pub engine: EngineKind,
    pub opt_level: OptLevel,
    /// Overrides the profile's usable RAM as the cap.
    pub cap: Option<u64>,
    pub agent: PathBuf,
    pub ort_library: Option<PathBuf>,
    pub timeouts: Timeouts,
    /// Further agent arguments (emulated board only).
    pub agent_args: Vec<String>,
    /// The image a `qemu:` target boots ([`board_image`]).
    pub qemu_image: Option<BoardImage>,
    pub upload: Upload,
}

/// Whether a run first sends the board the model and the files its agent
/// reads beside it (external data, tokenizer.json, the embedder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Upload {
    /// Every board but the emulated one, which reads this machine's files.
    #[default]
    Auto,
    /// Every board, the emulated one too (into a storage folder of its own).
    Always,
    /// None: the model paths given are paths on the board.
    Never,
}

impl Upload {
    fn to(self, target: &Target) -> bool {
        match self {
            Upload::Auto => !matches!(target, Target::Emulated),
            Upload::Always => true,
            Upload::Never => false,
        }
    }
}

impl BoardOptions {
    /// The cap on `profile`: the override, or its usable RAM.
    pub fn cap_on(&self, profile: &Profile) -> u64 {
        self.cap.unwrap_or(profile.ram_usable.value.0)
    }

    /// Opens the link, says hello and loads `model` (on a microcontroller, the
    /// micro-model QEMU puts in its flash); what the board said is kept in `got`.
    pub(crate) fn connect(
        &self,
        profile: &Profile,
        model: &Path,
        got: &mut BoardRun,
    ) -> Result<Session, (HilError, Option<LinkStats>)> {
        let link = open_link(self, profile, self.cap_on(profile), Some(model)).map_err(|e| (e, None))?;
        got.vm = link.vm().map(|vm| VmSummary::new(vm, self.qemu_image.as_ref()));
        let mut session = Session::new(link, self.timeouts);
        let mut start = || -> Result<(), HilError> {
            got.info = Some(session.hello()?);
            let threads = got.info.as_ref().map_or(1, |i| i.cores).min(profile.cores.value as u16);
            let path = self.place(&mut session, model, &mut got.upload)?;
            got.load = Some(session.load(&path, self.engine, self.opt_level, threads)?);
            Ok(())
        };
        match start() {
            Ok(()) => Ok(session),
            Err(e) => Err((e, Some(session.stats))),
        }
    }
}

impl BoardOptions {
    /// The path on the board of `model` (an ONNX file): its own path on a
    /// board that reads the host's files, else where the upload of it and the
    /// files beside it put it. What was sent is added to `summary`.
    pub(crate) fn place(
        &self,
        session: &mut Session,
        model: &Path,
        summary: &mut Option<UploadSummary>,
    ) -> Result<String, HilError> {
        // QEMU's loader put the micro-model in the microcontroller's flash.
        if let Target::QemuMcu { .. } = self.target {
            return Ok(format!("flash:{MODEL_ADDR:#010x}"));
        }
        if !self.upload.to(&self.target) {
            return Ok(model.display().to_string());
        }
        let bundle = Bundle::new(&model_files(model)?)?;
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "upload {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        let uploaded = session.upload(&bundle, |step| match step {
            UploadStep::Send { name, size } => {
                bar.set_message(name.to_string());
                bar.inc_length(size);
            }
            UploadStep::Sent { bytes } => bar.inc(bytes),
            UploadStep::Have { .. } => {}
        });
        bar.finish_and_clear();
        let uploaded = uploaded?;
        let secs = uploaded.elapsed.as_secs_f64();
        let sent = match uploaded.bytes_sent {
            0 => "nothing sent".to_string(),
            bytes => format!(
                "{} files sent ({} in {secs:.2} s, {}/s)",
                bundle.files.len() as u32 - uploaded.reused,
                human_bytes(bytes as f64),
                human_bytes(bytes as f64 / secs.max(1e-9)),
            ),
        };
        let _ = writeln!(
            std::io::stderr(),
            "upload: {}: {sent}, {} on the board already",
            model.display(),
            uploaded.reused
        );
        let total = summary.get_or_insert_with(UploadSummary::default);
        total.files += bundle.files.len() as u32;
        total.reused += uploaded.reused;
        total.bytes_sent += uploaded.bytes_sent;
        total.chunks += uploaded.chunks;
        total.seconds += secs;
        Ok(uploaded.paths[0].clone())
    }
}

/// The files an agent reads for `model`: the model, its external data
/// files and the tokenizer.json beside it, if there is one.
pub fn model_files(model: &Path) -> Result<Vec<PathBuf>, HilError> {
    let unreadable = |reason: String| HilError::File { path: model.display().to_string(), reason };
    let proto = engine::onnx::read(model).map_err(|e| unreadable(e.to_string()))?;
    let dir = model.parent().unwrap_or(Path::new("."));
    let mut files = vec![model.to_path_buf()];
    let locations = proto.graph.iter().flat_map(|g| &g.initializer).flat_map(|t| &t.external_data);
    for location in locations.filter(|e| e.key == "location") {
        let file = dir.join(&location.value);
        if !files.contains(&file) {
            files.push(file);
        }
    }
    let tokenizer = model.with_file_name("tokenizer.json");
    if tokenizer.is_file() {
        files.push(tokenizer);
    }
    Ok(files)
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub model: PathBuf,
    pub reference: Option<PathBuf>,
    pub board: BoardOptions,
    pub runs: u32,
    pub warmup: u32,
    pub inputs: Option<PathBuf>,
    pub seed: u64,
    /// Prompt tokens of a language model's seeded inputs.
    pub sequence: u64,
    pub outputs: OutputMode,
}

/// The agent a target starts: this machine's for the emulated board and an
/// x86_64 VM; none for a serial board (it has its own) or an aarch64 VM (its
/// image builds its own).
pub fn agent_for(target: &Target) -> Result<PathBuf, RunError> {
    match target {
        Target::Emulated | Target::Qemu { arch: QemuArch::X86_64 } => find_agent(),
        Target::Serial { .. } | Target::Labgrid { .. } | Target::Qemu { arch: QemuArch::Aarch64 } => Ok(PathBuf::new()),
        Target::QemuMcu { .. } => mcu::find_firmware(),
    }
}

/// The image a `qemu:` target boots, built (or found cached) with `agent`; none for other targets.
pub fn board_image(target: &Target, agent: &Path) -> Result<Option<BoardImage>, RunError> {
    match target {
        Target::Qemu { arch } => Ok(Some(board::build(*arch, Some(agent).filter(|a| !a.as_os_str().is_empty()))?)),
        // A microcontroller boots its firmware with the micro-model of each run (`mcu`).
        Target::Emulated | Target::Serial { .. } | Target::Labgrid { .. } | Target::QemuMcu { .. } => Ok(None),
    }
}

/// The `edgehil-agent` binary: $EDGEHIL_AGENT, or beside this executable
/// (or its parent folder, where cargo puts test binaries).
pub fn find_agent() -> Result<PathBuf, RunError> {
    if let Some(p) = std::env::var_os("EDGEHIL_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| RunError::Setup(format!("cannot locate this executable: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join("edgehil-agent"), dir.join("../edgehil-agent")].into_iter().find(|p| p.is_file()).ok_or_else(|| {
        RunError::Setup(format!(
            "cannot find edgehil-agent beside {}; build it with `cargo build -p edgehil-runtime` or set EDGEHIL_AGENT",
            exe.display()
        ))
    })
}

/// Where the `onnxruntime` wheel's `capi` folder is, found by path without
/// importing it: in isolated mode (`-I`) Python puts neither the working
/// folder nor $PYTHONPATH on its path, so an `onnxruntime.py` where edgehil
/// is run is not executed, and `find_spec` of a top-level package only looks
/// it up. Isolated mode also leaves out the user's own site-packages (`pip
/// install --user`), which is put back where Python would have it.
const FIND_ONNXRUNTIME: &str = r#"
import importlib.util, os, site, sys
user = site.getusersitepackages()
if os.path.isdir(user) and user not in sys.path:
    at = next((i for i, p in enumerate(sys.path) if p.endswith(("site-packages", "dist-packages"))), len(sys.path))
    sys.path.insert(at, user)
spec = importlib.util.find_spec("onnxruntime")
if spec is None or spec.origin is None:
    sys.exit(1)
print(os.path.join(os.path.dirname(spec.origin), "capi"))
"#;

/// libonnxruntime: the given path, $EDGEHIL_ORT_LIBRARY, or the one in the
/// Python `onnxruntime` package (`pip install onnxruntime`).
pub fn find_ort_library(given: Option<&Path>) -> Result<PathBuf, RunError> {
    if let Some(p) = given.map(Path::to_path_buf).or_else(|| std::env::var_os("EDGEHIL_ORT_LIBRARY").map(PathBuf::from))
    {
        return Ok(p);
    }
    let out = std::process::Command::new("python3").args(["-I", "-c", FIND_ONNXRUNTIME]).output();
    let capi = match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => {
            return Err(RunError::Setup(
                "engine ort needs libonnxruntime: give --ort-library PATH, set EDGEHIL_ORT_LIBRARY, or `pip install onnxruntime`".into(),
            ))
        }
    };
    std::fs::read_dir(&capi)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
                .max_by_key(|p| p.as_os_str().len())
        })
        .ok_or_else(|| RunError::Setup(format!("no libonnxruntime.so* in {}", capi.display())))
}

/// Runs a model on the host, uncapped, with tract: the reference.
pub fn host_run(
    path: &Path,
    inputs: Option<&[Tensor]>,
    seeded: inputs::Seeded,
    inputs_file: Option<&Path>,
) -> Result<(Vec<Tensor>, Vec<Tensor>), RunError> {
    let reference_err = |cause| RunError::Reference { path: path.into(), cause };
    let host_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts =
        LoadOptions { engine: EngineKind::Tract, opt_level: OptLevel::All, threads: host_threads, ort_library: None };
    let mut engine = engine::load(path, &opts).map_err(reference_err)?;
    let inputs = match (inputs, inputs_file) {
        (Some(i), _) => i.to_vec(),
        (None, Some(file)) => inputs::from_file(file, &engine.info().inputs)?,
        (None, None) => inputs::seeded(&engine.info().inputs, &seeded)?,
    };
    engine.set_inputs(&inputs).map_err(reference_err)?;
    engine.run().map_err(reference_err)?;
    let outputs = engine.take_outputs().map_err(reference_err)?;
    Ok((inputs, outputs))
}

/// `model` is what a microcontroller's flash gets (none: the firmware alone).
fn open_link(
    opts: &BoardOptions,
    profile: &Profile,
    cap: u64,
    model: Option<&Path>,
) -> Result<Box<dyn Link>, HilError> {
    match &opts.target {
        Target::Emulated => {
            let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let config = EmulatorConfig {
                agent: opts.agent.clone(),
                cap,
                threads: (profile.cores.value as usize).min(host_cores),
                ort_library: opts.ort_library.clone(),
                storage: opts.upload.to(&opts.target),
                extra_args: opts.agent_args.clone(),
            };
            Ok(Box::new(EmulatedBoard::spawn(&config)?))
        }
        Target::Serial { port, baud } => Ok(Box::new(SerialLink::open(port, baud.unwrap_or(profile_baud(profile)))?)),
        Target::Labgrid { place } => Ok(Box::new(LabgridBoard::open(place, profile_baud(profile))?)),
        Target::Qemu { arch } => {
            let image = opts.qemu_image.as_ref().ok_or_else(|| HilError::Spawn {
                agent: arch.program().into(),
                cause: std::io::Error::other("no board image was built for this target"),
            })?;
            Ok(Box::new(board::boot(image, profile, cap, profile.cores.value as usize)?))
        }
        Target::QemuMcu { machine } => Ok(Box::new(QemuMcu::boot(&McuConfig {
            machine: *machine,
            firmware: opts.agent.clone(),
            model: model.map(Path::to_path_buf),
            cap,
        })?)),
    }
}

/// The baud rate of the profile's serial link.
fn profile_baud(profile: &Profile) -> u32 {
    match profile.link {
        LinkSpec::Serial { baud } => baud,
        LinkSpec::Probe { .. } => 115_200,
    }
}

/// A board's health check: its link opened, a hello answered within
/// `board.timeouts`, and the agent told to end (a real board's supervisor
/// starts it again, as after every run).
pub fn health_check(board: &BoardOptions, profile: &Profile) -> Result<BoardInfo, HilError> {
    let link = open_link(board, profile, board.cap_on(profile), None)?;
    let mut session = Session::new(link, board.timeouts);
    let info = session.hello()?;
    session.shutdown()?;
    Ok(info)
}

/// What the board gave before it stopped, if it stopped.
#[derive(Default)]
pub(crate) struct BoardRun {
    pub info: Option<BoardInfo>,
    pub load: Option<LoadReport>,
    pub infer: Option<InferResult>,
    pub agent_bad_frames: Option<u32>,
    /// The VM of a QEMU board: console log and boot time.
    pub vm: Option<VmSummary>,
    pub upload: Option<UploadSummary>,
}

impl BoardRun {
    pub fn board_summary(&self) -> Option<BoardSummary> {
        self.info.as_ref().map(|i| BoardSummary {
            agent_version: i.agent_version.clone(),
            arch: i.arch.clone(),
            threads: self.load.as_ref().map_or(0, |l| l.threads),
            engines: i.engines.iter().map(|e| e.name().to_string()).collect(),
        })
    }

    pub fn load_summary(&self) -> Option<LoadSummary> {
        self.load.as_ref().map(|l| LoadSummary { load_ms: l.load_nanos as f64 / 1e6, weight_bytes: l.weight_bytes })
    }

    pub fn link_summary(&self, stats: Option<LinkStats>) -> LinkSummary {
        stats.map_or_else(LinkSummary::default, |s| LinkSummary {
            frames_sent: s.frames_sent,
            frames_received: s.frames_received,
            bad_frames_host: s.bad_frames,
            bad_frames_agent: self.agent_bad_frames,
            resends: s.resends,
            upload: self.upload.clone(),
        })
    }
}

/// Runs `work` on a connected board, then reads its counters and shuts it
/// down; gives the outcome and the link's figures.
pub(crate) fn on_board(
    board: &BoardOptions,
    profile: &Profile,
    model: &Path,
    got: &mut BoardRun,
    work: impl FnOnce(&mut Session, &mut BoardRun) -> Result<(), HilError>,
) -> (Result<(), HilError>, Option<LinkStats>) {
    let mut session = match board.connect(profile, model, got) {
        Ok(s) => s,
        Err((e, stats)) => return (Err(e), stats),
    };
    let outcome = work(&mut session, got).and_then(|()| {
        got.agent_bad_frames = Some(session.stats()?.bad_frames);
        session.shutdown()
    });
    (outcome, Some(session.stats))
}

/// The status of a board's attempt and its memory verdict against `cap`.
/// `peaks` are (heap, resident set); tract is held by the heap cap,
/// ONNX Runtime by the process data limit.
///
/// One rule on every engine: a run whose measured peak is over the cap does
/// not fit, whatever limit the board enforced, and a refusal's figures are the
/// cap given and a need above it.
pub(crate) fn verdict(
    engine: EngineKind,
    cap: u64,
    outcome: &Result<(), HilError>,
    peaks: (Option<u64>, Option<u64>),
) -> (Status, Option<String>, Memory) {
    let limit = match engine {
        EngineKind::Tract | EngineKind::Micro => MemLimit::Heap,
        EngineKind::Ort => MemLimit::ProcessData,
    };
    let measured_by = match engine {
        EngineKind::Tract | EngineKind::Micro => MeasuredBy::PeakHeap,
        EngineKind::Ort => MeasuredBy::PeakRss,
    };
    let measured = match engine {
        EngineKind::Tract | EngineKind::Micro => peaks.0,
        EngineKind::Ort => peaks.1,
    };
    let mut memory = Memory {
        cap_bytes: cap,
        limit,
        peak_heap: peaks.0,
        peak_rss: peaks.1,
        measured_by,
        fits: false,
        headroom_bytes: None,
        headroom_pct: None,
        needed_at_least: None,
        kernel_oom_ram: None,
    };
    let (mut status, mut error) = match outcome {
        Ok(()) => (Status::Ok, None),
        Err(
            e @ HilError::Agent {
                error: AgentError::OutOfMemory { requested, in_use, cap: limit_bytes, limit }, ..
            },
        ) => {
            match limit {
                MemLimit::Heap => {
                    memory.limit = MemLimit::Heap;
                    // The capped allocator counts what the cap counts: its own
                    // cap is the board's (on an emulated board, the one given).
                    if *limit_bytes != 0 {
                        memory.cap_bytes = *limit_bytes;
                    }
                    memory.needed_at_least = Some(requested + in_use);
                }
                MemLimit::ProcessData => {
                    // RLIMIT_DATA counts the whole data segment (what the agent
                    // held before the model, thread stacks reserved whole), and
                    // the agent sets it above the cap by that much: its figures
                    // are not the cap's. What the refusal says in the cap's terms
                    // is that the model needed more than the cap.
                    memory.limit = MemLimit::ProcessData;
                    memory.needed_at_least = Some(measured.unwrap_or(0));
                    return finish(
                        Status::DoesNotFit,
                        Some(format!(
                            "{e} (the data limit counts the agent's whole data segment: the cap's room, \
                             plus what it held before the model and its thread stacks)"
                        )),
                        memory,
                    );
                }
            }
            (Status::DoesNotFit, Some(e.to_string()))
        }
        Err(e @ HilError::AgentExited { cause: ExitCause::KernelOom { ram }, .. }) => {
            // The guest kernel ran out of the VM's RAM (model files on its
            // RAM-backed storage count too) before the agent's cap refused.
            memory.kernel_oom_ram = Some(*ram);
            memory.needed_at_least = Some(ram.saturating_add(1));
            let why = format!("does not fit (board kernel OOM killer, RAM {})", human_bytes(*ram as f64));
            return finish(Status::DoesNotFit, Some(format!("{why}: {e}")), memory);
        }
        Err(e @ HilError::AgentExited { cause: ExitCause::OutOfMemory, .. }) => {
            (Status::DoesNotFit, Some(e.to_string()))
        }
        Err(e) => (Status::Failed, Some(e.to_string())),
    };
    if let (Some(m), Status::Ok) = (measured, status) {
        let headroom = cap as i64 - m as i64;
        memory.fits = headroom >= 0;
        memory.headroom_bytes = Some(headroom);
        memory.headroom_pct = Some(100.0 * headroom as f64 / cap.max(1) as f64);
        if headroom < 0 {
            // The board's limit let it through (ONNX Runtime's data limit
            // counts other memory than the resident set), but the measure is over.
            status = Status::DoesNotFit;
            memory.needed_at_least = Some(m);
            error = Some(format!(
                "{} {} is over the cap {} (the board's {} did not stop it)",
                measured_by.name(),
                human_bytes(m as f64),
                human_bytes(cap as f64),
                limit_name(memory.limit)
            ));
        }
    }
    finish(status, error, memory)
}

/// A verdict's last word: a refusal is a need above the cap, whatever figure came with it.
fn finish(status: Status, error: Option<String>, mut memory: Memory) -> (Status, Option<String>, Memory) {
    if status == Status::DoesNotFit {
        let over = memory.cap_bytes.saturating_add(1);
        memory.needed_at_least = Some(memory.needed_at_least.unwrap_or(0).max(over));
    }
    (status, error, memory)
}

pub fn run(opts: &RunOptions, profile: &Profile) -> Result<RunReport, RunError> {
    let board = &opts.board;
    let reference_path = opts.reference.clone().unwrap_or_else(|| opts.model.clone());
    let (inputs, reference) = host_run(
        &reference_path,
        None,
        inputs::Seeded::for_model(opts.seed, &opts.model, opts.sequence),
        opts.inputs.as_deref(),
    )?;
    let cost = estimate::graph_cost(&opts.model, &inputs)?;
    let tokens = inputs::prompt_tokens(&inputs);
    let predicted = estimate::predict(&cost, tokens.unwrap_or(0), profile, board.engine, board.opt_level);
    let cap = board.cap_on(profile);
    // A microcontroller runs the micro-model compiled from the ONNX model, from flash.
    let image = match board.target {
        Target::QemuMcu { .. } => Some(FlashImage::compile(&opts.model)?),
        _ => None,
    };
    let firmware_bytes = image.as_ref().map(|_| mcu::flash_bytes(&board.agent)).transpose()?;

    let mut got = BoardRun::default();
    let board_model = image.as_ref().map_or(opts.model.as_path(), FlashImage::path);
    let (outcome, link_stats) = on_board(board, profile, board_model, &mut got, |session, got| {
        session.set_inputs(&inputs)?;
        got.infer = Some(session.infer(opts.runs, opts.warmup, opts.outputs, |_, _| {})?);
        Ok(())
    });
    let peaks = match (&got.infer, &got.load) {
        (Some(i), Some(l)) => (Some(i.report.peak_heap.max(l.peak_heap)), Some(i.report.peak_rss.max(l.peak_rss))),
        (None, Some(l)) => (Some(l.peak_heap), Some(l.peak_rss)),
        _ => (None, None),
    };
    let (status, error, memory) = verdict(board.engine, cap, &outcome, peaks);

    // A microcontroller's runs as its counter saw them: the chip's cycles, or
    // under QEMU the instructions executed; read as time at the profile's clock.
    let counted: Vec<u64> = got.infer.as_ref().map_or_else(Vec::new, |i| {
        let clock_hz = got.info.as_ref().map_or(0, |b| b.clock_hz);
        i.cycles
            .iter()
            .map(|&c| match board.target {
                Target::QemuMcu { .. } => instructions(c, clock_hz),
                _ => c,
            })
            .collect()
    });
    let latency_ms = got.infer.as_ref().and_then(|i| {
        let us: Vec<f64> = match counted.is_empty() {
            true => i.latencies_ns.iter().map(|n| *n as f64 / 1e3).collect(),
            false => counted.iter().map(|c| *c as f64 / profile.clock.value.0 * 1e6).collect(),
        };
        LatencySummary::from_micros(&us).map(|s| LatencyMs {
            runs: opts.runs,
            warmup: opts.warmup,
            min: s.min_us / 1e3,
            median: s.median_us / 1e3,
            p90: s.p90_us / 1e3,
            max: s.max_us / 1e3,
            mean: s.mean_us / 1e3,
        })
    });
    let accuracy: Vec<Accuracy> = got
        .infer
        .as_ref()
        .map_or_else(Vec::new, |i| i.outputs.iter().zip(&reference).map(|(b, r)| accuracy::compare(b, r)).collect());
    Ok(RunReport {
        model: opts.model.display().to_string(),
        reference: reference_path.display().to_string(),
        profile: profile.name.clone(),
        target: board.target.clone(),
        engine: board.engine,
        opt_level: got.load.as_ref().map_or(board.opt_level, |l| l.opt_level),
        status,
        error,
        board: got.board_summary(),
        load: got.load_summary(),
        latency_ms,
        cost: Some(cost),
        tokens,
        predicted: Some(predicted),
        memory,
        accuracy,
        link: got.link_summary(link_stats),
        vm: got.vm,
        mcu: match (&board.target, &image, firmware_bytes) {
            (Target::QemuMcu { machine }, Some(image), Some(firmware)) => Some(McuSummary {
                machine: format!("QEMU {machine} ({})", machine.core()),
                flash_firmware_bytes: firmware,
                flash_model_bytes: image.bytes,
                flash_profile_bytes: profile.flash.as_ref().map(|f| f.value.0),
                ram_peak_bytes: peaks.1,
                ram_profile_bytes: profile.ram_total.value.0,
                cycles_median: {
                    let mut sorted = counted.clone();
                    sorted.sort_unstable();
                    sorted.get(sorted.len() / 2).copied()
                },
                profile_clock_hz: profile.clock.value.0,
            }),
            _ => None,
        },
    })
}
