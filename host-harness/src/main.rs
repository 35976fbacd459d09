//! `edgehil`: the command line. Everything it does lives in the library; this
//! file parses arguments, prints, and maps outcomes to exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use edgehil::generate::{GenerateOptions, Streamer, TextTokenizer};
use edgehil::profile::Profiles;
use edgehil::report::Status;
use edgehil::run::{self, RunOptions};
use edgehil::suite::{self, file::Tolerances};
use edgehil::units::{human_bytes, human_rate, ByteRate, Bytes};
use edgehil_hil::{Target, Timeouts};
use edgehil_runtime::wire::{EngineKind, GenParams, OptLevel, OutputMode};

/// Whether stdout's reader has gone (`edgehil … | head -1`): from then on
/// what would be printed is dropped and the command finishes its work (the
/// journal, --json and --out files) with its own exit code. Rust's println!
/// would panic instead, and restoring SIGPIPE's default would also kill the
/// host when an emulated board's agent dies with its pipe open.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

fn write_out(args: std::fmt::Arguments) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => STDOUT_GONE.store(true, Ordering::Relaxed),
        Err(e) => panic!("writing to stdout: {e}"),
    }
}

/// Progress and errors: a closed stderr leaves nobody to tell.
fn write_err(args: std::fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

macro_rules! out {
    ($($t:tt)*) => { write_out(format_args!($($t)*)) };
}

macro_rules! outln {
    () => { write_out(format_args!("\n")) };
    ($($t:tt)*) => { write_out(format_args!("{}\n", format_args!($($t)*))) };
}

macro_rules! errln {
    ($($t:tt)*) => { write_err(format_args!("{}\n", format_args!($($t)*))) };
}

/// Exit codes: 0 all fit and ran; 1 host error; 2 usage; 3 a model did not fit; 4 a board failed;
/// 5 something regressed against the baseline.
const EXIT_DOES_NOT_FIT: u8 = 3;
const EXIT_BOARD_FAILED: u8 = 4;
const EXIT_REGRESSED: u8 = 5;

#[derive(Parser)]
#[command(version, about = "Does this model, compressed this way, fit this board, how fast, and is it still right?")]
struct Cli {
    /// A folder of a team's own device profiles (added to the built-in ones).
    #[arg(long, global = true, env = "EDGEHIL_PROFILES_DIR")]
    profiles_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a model on a board (default: the shipped transformer block on the emulated Jetson Orin Nano).
    Run(RunArgs),
    /// The study's models: parameters, weight bytes per precision, and fit on a profile.
    Models {
        #[command(subcommand)]
        command: ModelsCmd,
    },
    /// Recommend model, customization (LoRA or RAG) and compression for a board, from the study's guidelines.
    Plan {
        #[arg(long)]
        profile: String,
        #[arg(long, value_enum)]
        task: edgehil::plan::Task,
        #[arg(long, value_enum, default_value = "unknown")]
        difficulty: edgehil::plan::Difficulty,
        /// Prompt length in tokens (generation adds the study's 100 new tokens).
        #[arg(long, default_value_t = 512)]
        prompt_tokens: u64,
        /// Also write the plan as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Generate text with an exported language model on a board: streamed tokens, speed, RAM, agreement with the host.
    Generate(GenerateArgs),
    /// Task accuracy on LaMP-format data (zero-shot, RAG with MiniLM on the board, or a LoRA-merged export).
    Eval(EvalArgs),
    /// llama-bench's speed table (ppN prompt, tgN generation tok/s) per model, profile and engine.
    Sweep(SweepArgs),
    /// Export a Hugging Face folder (gpt2, gpt_neox, llama, opt, bert) to an ONNX model folder.
    Export(ExportArgs),
    /// Nightly suites: a matrix from one TOML file, a journal that loses nothing, reports, baselines.
    Suite {
        #[command(subcommand)]
        command: SuiteCmd,
    },
    /// Pair the cases of two journals by everything but the target (e.g. emulated against real).
    Compare {
        /// Journal or report.json of A (e.g. the emulated run).
        a: PathBuf,
        /// Journal or report.json of B (e.g. the real board's run).
        b: PathBuf,
        /// Also write the pairs as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Device profiles.
    Profiles {
        #[command(subcommand)]
        command: ProfilesCmd,
    },
    /// Fit a profile's latency model (compute, bandwidth, call, op and token overheads) to measured runs.
    Calibrate {
        /// A suite journal (JSON lines), or the JSON array `edgehil run --json` writes.
        #[arg(long)]
        measured: PathBuf,
        /// The profile the runs were made with: only its cases are used.
        #[arg(long)]
        profile: String,
        /// The calibrated profile to write (default PROFILE-calibrated.toml); the file stem is its name.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the cases of this engine (tract or ort).
        #[arg(long, value_parser = parse_engine)]
        engine: Option<EngineKind>,
        /// Only the cases on this target (emu, serial:PORT).
        #[arg(long)]
        target: Option<String>,
        /// The board's memory bandwidth as measured there (e.g. a STREAM copy: "20 GB/s"),
        /// kept instead of fitted: one model's runs barely tell it from a fixed overhead.
        #[arg(long, value_parser = parse_byte_rate)]
        bandwidth: Option<f64>,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Every catalog model; with --profile, whether each precision fits its usable RAM.
    List {
        #[arg(long)]
        profile: Option<String>,
        /// Context length for the KV cache and activations.
        #[arg(long, default_value_t = 512)]
        context: u64,
    },
    /// Write a random-weight Hugging Face folder of a catalog configuration (gpt2, gpt_neox, llama, opt).
    Synth {
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Parser)]
struct ExportArgs {
    /// Hugging Face folder: config.json, model.safetensors, tokenizer.json.
    hf_dir: PathBuf,
    /// Output folder: model.onnx, model.onnx.data, tokenizer.json, edgehil.json. An earlier export there is
    /// replaced; any other non-empty folder only with --force.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out even if it is a non-empty folder that is not an earlier export (never the source folder
    /// or a folder containing it).
    #[arg(long)]
    force: bool,
    /// Weight precision: none (fp32), int8 (per channel) or int4 (blocks, MatMulNBits).
    #[arg(long, default_value = "none")]
    quant: edgehil_onnx::export::Quant,
    /// Block size of int4.
    #[arg(long, default_value_t = 32)]
    block: usize,
    /// magnitude:FRACTION, heads:N or mlp:FRACTION.
    #[arg(long)]
    prune: Option<edgehil_onnx::export::Prune>,
    /// A PEFT LoRA adapter folder to merge before quantization.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// int4: let ONNX Runtime quantize activations to int8 (MatMulNBits accuracy_level 4) instead of
    /// keeping them fp32 (level 0, the default): about twice the speed, about 1.3× the RAM of the weights.
    #[arg(long)]
    ort_int8_activations: bool,
}

#[derive(Subcommand)]
enum SuiteCmd {
    /// Run every case of SUITE not yet in the journal; reports land beside it.
    Run {
        suite: PathBuf,
        /// Folder for the journal, exports and reports (default: edgehil-results/SUITE_NAME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Go on with the journal in --out, skipping completed cases.
        #[arg(long)]
        resume: bool,
        /// Compare with this journal or report.json at the end, with the suite's tolerances.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Instead of the suite's profiles (repeat for several).
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// Instead of the suite's targets: emu or serial:PORT[@BAUD] (repeat for several).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Instead of the suite's engines, comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = parse_engine)]
        engine: Vec<EngineKind>,
    },
    /// List what regressed against a baseline; exits 5 if anything did.
    Compare {
        /// This run's journal, report.json, or --out folder.
        current: PathBuf,
        #[arg(long)]
        baseline: PathBuf,
        /// Latency may grow by this many percent.
        #[arg(long, default_value_t = Tolerances::default().latency_pct)]
        latency_pct: f64,
        /// Peak RAM may grow by this many percent.
        #[arg(long, default_value_t = Tolerances::default().peak_ram_pct)]
        peak_ram_pct: f64,
        /// Accuracy may drop by this much (0–1 scale).
        #[arg(long, default_value_t = Tolerances::default().accuracy_drop)]
        accuracy_drop: f64,
    },
    /// Render a journal's reports again (e.g. after a killed run), or print one format.
    Report {
        /// A --out folder, journal or report.json.
        results: PathBuf,
        /// Print this format instead of rewriting the files beside the journal.
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
    },
    /// Run one case and print its record (what `suite run` starts per case).
    #[command(hide = true)]
    Worker {
        suite: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The case as JSON.
        #[arg(long)]
        case: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Json,
    Junit,
    Md,
    /// lava-test-case calls for a LAVA test definition.
    Lava,
}

#[derive(Subcommand)]
enum ProfilesCmd {
    /// A table of every known profile.
    List,
    /// One profile with every figure and its source.
    Show { name: String },
}

/// Where and how a model runs: shared by `run`, `generate` and `sweep`.
#[derive(clap::Args)]
struct BoardArgs {
    /// Device profile; repeat to run on several boards in turn.
    #[arg(long = "profile", default_values_t = ["jetson-orin-nano".to_string()])]
    profiles: Vec<String>,
    /// emu, or serial:PORT[@BAUD].
    #[arg(long, default_value = "emu")]
    target: String,
    /// tract or ort; several, comma-separated, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "tract", value_parser = parse_engine)]
    engine: Vec<EngineKind>,
    /// Graph optimisation level for ort: disabled, basic, extended, all.
    #[arg(long, default_value = "all", value_parser = parse_opt_level)]
    opt_level: OptLevel,
    /// RAM cap instead of the profile's usable RAM, e.g. "64 MiB".
    #[arg(long, value_parser = parse_bytes)]
    cap: Option<u64>,
    /// Seconds of silence from the board before a request is sent again (eight unanswered sends in a row at most, each waiting longer).
    #[arg(long, default_value_t = 1.5)]
    resend_after: f64,
    /// Longest one request may take, in seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// The edgehil-agent binary for the emulated board (default: beside edgehil, or $EDGEHIL_AGENT).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// libonnxruntime.so for --engine ort (default: $EDGEHIL_ORT_LIBRARY, or the pip package's).
    #[arg(long)]
    ort_library: Option<PathBuf>,
}

impl BoardArgs {
    /// The profiles, and the board options for each engine.
    fn options(self) -> Result<(Vec<String>, Vec<run::BoardOptions>)> {
        let target: Target = self.target.parse()?;
        let ort_library = match self.engine.contains(&EngineKind::Ort) {
            true => Some(run::find_ort_library(self.ort_library.as_deref())?),
            false => self.ort_library,
        };
        let agent = match (&target, self.agent) {
            (_, Some(a)) => a,
            (Target::Emulated, None) => run::find_agent()?,
            (Target::Serial { .. }, None) => PathBuf::new(),
        };
        let boards = self
            .engine
            .iter()
            .map(|&engine| run::BoardOptions {
                target: target.clone(),
                engine,
                opt_level: self.opt_level,
                cap: self.cap,
                agent: agent.clone(),
                ort_library: ort_library.clone(),
                timeouts: Timeouts {
                    resend_after: Duration::from_secs_f64(self.resend_after),
                    request: Duration::from_secs_f64(self.timeout),
                    ..Timeouts::default()
                },
                agent_args: Vec::new(),
            })
            .collect();
        Ok((self.profiles, boards))
    }
}

/// How new tokens are picked: the study's settings by default.
#[derive(clap::Args)]
struct SamplingArgs {
    #[arg(long, default_value_t = GenParams::STUDY.max_new)]
    max_new: u32,
    /// 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = GenParams::STUDY.temperature)]
    temperature: f32,
    #[arg(long, default_value_t = GenParams::STUDY.top_p)]
    top_p: f32,
    /// 0 keeps every token.
    #[arg(long, default_value_t = GenParams::STUDY.top_k)]
    top_k: u32,
    #[arg(long, default_value_t = GenParams::STUDY.seed)]
    seed: u64,
}

impl SamplingArgs {
    fn params(&self) -> GenParams {
        GenParams {
            max_new: self.max_new,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            eos: None,
        }
    }
}

#[derive(Parser)]
struct GenerateArgs {
    /// A folder written by `edgehil export` (model.onnx, tokenizer.json, edgehil.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    /// The fp32 export of the same model: report teacher-forced top-1 agreement with it.
    #[arg(long)]
    reference: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Keep going past the end-of-sequence token (fixed-length timing).
    #[arg(long)]
    ignore_eos: bool,
    /// Also tokenize the prompt and decode the output on the board (agents with std), checked against the host.
    #[arg(long)]
    tokenize_on_board: bool,
    /// Repetitions for the speed figures (mean ± sd).
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Write the reports as a JSON array here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    board: BoardArgs,
}

#[derive(Parser)]
struct EvalArgs {
    /// A LaMP-format task folder: questions.json, outputs.json [, task.json] (e.g. eval/lamp-sample/classification).
    #[arg(long)]
    task: PathBuf,
    #[arg(long, value_enum, default_value = "zero-shot")]
    method: edgehil::eval::Method,
    /// The language model: a folder written by `edgehil export` (LoRA-merged for --method lora).
    #[arg(long)]
    model: PathBuf,
    /// MiniLM exported with `edgehil export`, for --method rag.
    #[arg(long)]
    embedder: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Append each item's result here (JSON lines) as it completes.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Write the reports as a JSON array here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    board: BoardArgs,
}

#[derive(Parser)]
struct SweepArgs {
    /// Folders written by `edgehil export`; repeat for several.
    #[arg(long = "model", required = true)]
    models: Vec<PathBuf>,
    /// Tests, comma-separated: ppN (prefill of N tokens), tgN (N generated tokens).
    #[arg(long, value_delimiter = ',', default_value = "pp128,pp512,tg128")]
    tests: Vec<edgehil::sweep::Test>,
    #[arg(long, default_value_t = 3)]
    reps: u32,
    #[arg(long, value_enum, default_value = "md")]
    format: edgehil::sweep::Format,
    /// Write the table here as well as to the terminal.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    board: BoardArgs,
}

#[derive(Parser)]
struct RunArgs {
    /// ONNX model, or a folder written by `edgehil export` (default: onnx-models/fixtures/block.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    board: BoardArgs,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: u32,
    /// Untimed warm-up runs before them.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Inputs as JSON: {"NAME": {"shape": [..], "values": [..]}}; default: seeded random.
    #[arg(long)]
    inputs: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Prompt tokens in the seeded inputs of a language model (a prefill on an empty cache).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: u64,
    /// Model whose host outputs are the reference (e.g. the fp32 model of an int8 one); default: --model.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// What the board sends back: full, topk:K, digest.
    #[arg(long, default_value = "full", value_parser = parse_outputs)]
    outputs: OutputMode,
    /// Write the reports as a JSON array here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_engine(s: &str) -> Result<EngineKind, String> {
    EngineKind::ALL.into_iter().find(|e| e.name() == s).ok_or_else(|| format!("`{s}`: expected tract or ort"))
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    OptLevel::ALL
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| format!("`{s}`: expected disabled, basic, extended or all"))
}

fn parse_outputs(s: &str) -> Result<OutputMode, String> {
    match s {
        "full" => Ok(OutputMode::Full),
        "digest" => Ok(OutputMode::Digest),
        _ => s
            .strip_prefix("topk:")
            .and_then(|k| k.parse().ok())
            .map(OutputMode::TopK)
            .ok_or_else(|| format!("`{s}`: expected full, digest or topk:K")),
    }
}

fn parse_byte_rate(s: &str) -> Result<f64, String> {
    ByteRate::try_from(s.to_string()).map(|b| b.0)
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    s.parse::<u64>().or_else(|_| Bytes::try_from(s.to_string()).map(|b| b.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("edgehil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    let profiles = Profiles::load(cli.profiles_dir.as_deref())?;
    // A suite's workers load the same folder: the suite has said it once.
    let worker = matches!(&cli.command, Some(Cmd::Suite { command: SuiteCmd::Worker { .. } }));
    for (name, file) in profiles.replaced().filter(|_| !worker) {
        errln!("edgehil: warning: {} replaces the built-in profile `{name}`", file.display());
    }
    match cli.command.unwrap_or(Cmd::Run(RunArgs::parse_from(["run"]))) {
        Cmd::Profiles { command: ProfilesCmd::List } => {
            out!("{}", profiles_table(&profiles));
            Ok(0)
        }
        Cmd::Profiles { command: ProfilesCmd::Show { name } } => {
            let p = profiles.get(&name)?;
            out!("{}", p.describe());
            Ok(0)
        }
        Cmd::Models { command: ModelsCmd::List { profile, context } } => {
            let profile = profile.map(|p| profiles.get(&p)).transpose()?;
            out!("{}", models_table(profile, context));
            Ok(0)
        }
        Cmd::Plan { profile, task, difficulty, prompt_tokens, json } => {
            let p = edgehil::plan::plan(profiles.get(&profile)?, task, difficulty, prompt_tokens)?;
            out!("{}", p.text());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&p)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(0)
        }
        Cmd::Models { command: ModelsCmd::Synth { name, out, seed } } => {
            use edgehil::catalog::CATALOG;
            let Some(model) = CATALOG.iter().find(|m| m.name == name) else {
                bail!("no catalog model `{name}`; see `edgehil models list`");
            };
            let Some(config) = model.to_hf() else {
                bail!("`{name}` is a {:?} model; synth writes gpt2, gpt_neox, llama and opt", model.arch);
            };
            let bytes = edgehil_onnx::hf::write_random(&config, &out, seed)?;
            outln!(
                "{}: {} parameters, {} of fp32 weights in {}",
                name,
                model.parameters(),
                human_bytes(bytes as f64),
                out.display()
            );
            Ok(0)
        }
        Cmd::Run(args) => run_cmd(args, &profiles),
        Cmd::Generate(args) => generate_cmd(args, &profiles),
        Cmd::Sweep(args) => sweep_cmd(args, &profiles),
        Cmd::Eval(args) => eval_cmd(args, &profiles),
        Cmd::Export(args) => export_cmd(args),
        Cmd::Suite { command } => suite_cmd(command, &profiles, cli.profiles_dir.as_deref()),
        Cmd::Compare { a, b, json } => {
            let pairing = suite::compare::pair(&suite::record::read(&a)?, &suite::record::read(&b)?);
            out!("{}", pairing.text());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&pairing)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(0)
        }
        Cmd::Calibrate { measured, profile, out, engine, target, bandwidth } => {
            calibrate_cmd(profiles.get(&profile)?, &measured, out, engine, target.as_deref(), bandwidth)
        }
    }
}

/// A journal, a report.json, or a suite's --out folder.
fn records_at(path: &Path) -> Result<Vec<suite::record::Record>> {
    let file = if path.is_dir() { suite::runner::journal_path(path) } else { path.to_path_buf() };
    Ok(suite::record::read(&file)?)
}

fn suite_cmd(command: SuiteCmd, profiles: &Profiles, profiles_dir: Option<&Path>) -> Result<u8> {
    use suite::runner::{run_case, run_suite, write_reports, Progress, RunSuiteOptions};
    match command {
        SuiteCmd::Worker { suite: path, out, case } => {
            let s = suite::file::Suite::load(&path, profiles)?;
            let case = serde_json::from_str(&case).context("--case: not a case")?;
            let record = run_case(&s, profiles, &out, case);
            outln!("{}", serde_json::to_string(&record)?);
            Ok(0)
        }
        SuiteCmd::Report { results, format } => {
            let records = records_at(&results)?;
            let name = records.first().map_or("suite".to_string(), |r| r.suite.clone());
            match format {
                None => {
                    let dir = if results.is_dir() {
                        results
                    } else {
                        results.parent().unwrap_or(Path::new(".")).to_path_buf()
                    };
                    for path in write_reports(&dir, &name, &records)? {
                        outln!("{}", path.display());
                    }
                }
                Some(ReportFormat::Json) => outln!("{}", serde_json::to_string_pretty(&records)?),
                Some(ReportFormat::Junit) => out!("{}", suite::reports::junit(&name, &records)),
                Some(ReportFormat::Md) => out!("{}", suite::reports::markdown(&name, &records)),
                Some(ReportFormat::Lava) => out!("{}", suite::reports::lava(&records)),
            }
            Ok(0)
        }
        SuiteCmd::Compare { current, baseline, latency_pct, peak_ram_pct, accuracy_drop } => {
            let tolerances = Tolerances { latency_pct, peak_ram_pct, accuracy_drop };
            let c = suite::compare::against_baseline(&records_at(&baseline)?, &records_at(&current)?, tolerances);
            out!("{}", c.text());
            Ok(if c.regressions.is_empty() { 0 } else { EXIT_REGRESSED })
        }
        SuiteCmd::Run { suite: path, out, resume, baseline, profiles: on, targets, engine } => {
            let mut s = suite::file::Suite::load(&path, profiles)?;
            s.override_axes(on, targets, engine, profiles)?;
            let out = out.unwrap_or_else(|| PathBuf::from("edgehil-results").join(&s.name));
            let mut worker = vec![std::env::current_exe().context("locating edgehil")?.into_os_string()];
            if let Some(dir) = profiles_dir {
                worker.extend(["--profiles-dir".into(), dir.as_os_str().to_owned()]);
            }
            let opts = RunSuiteOptions { out: out.clone(), resume, worker };
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} cases, {elapsed} elapsed, eta {eta}  {msg}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar.set_prefix(s.name.clone());
            // Off a terminal (CI logs) the bar is hidden and would swallow these lines.
            let say = |line: String| if bar.is_hidden() { errln!("{line}") } else { bar.println(line) };
            let mut show = |p: Progress| match p {
                Progress::Start { total, done } => {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                    bar.reset_eta();
                    if done > 0 {
                        say(format!("resuming: {done} of {total} cases already in the journal"));
                    }
                }
                Progress::Repaired { journal, repaired } => say(format!(
                    "{}: the last line was cut short (a killed write); its {} bytes were removed and kept in {}",
                    journal.display(),
                    repaired.bytes,
                    repaired.kept.display()
                )),
                Progress::Exporting(what) => bar.set_message(format!("exporting {what}")),
                Progress::Case(case) => bar.set_message(case.id()),
                Progress::Done(r) => {
                    let latency = r.measurements.latency_ms.map_or(String::new(), |l| format!("  {l:.3} ms"));
                    let reason = r.reason.as_deref().map_or(String::new(), |r| format!("  ({r})"));
                    say(format!("{:<12} {}{latency}{reason}", r.status.name(), r.case.id()));
                    bar.inc(1);
                }
            };
            let records = run_suite(&s, &opts, &mut show)?;
            bar.finish_and_clear();
            let written = write_reports(&out, &s.name, &records)?;
            out!("{}", suite::reports::markdown(&s.name, &records));
            outln!(
                "\njournal {} and {}",
                suite::runner::journal_path(&out).display(),
                written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
            let mut code = records.iter().map(|r| r.status).fold(0, worse);
            if let Some(baseline) = baseline {
                let c = suite::compare::against_baseline(&records_at(&baseline)?, &records, s.tolerances);
                out!("\n{}", c.text());
                if !c.regressions.is_empty() {
                    code = code.max(EXIT_REGRESSED);
                }
            }
            Ok(code)
        }
    }
}

fn export_cmd(args: ExportArgs) -> Result<u8> {
    use edgehil_onnx::export::{export, ExportOptions};
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message("export");
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let opts = ExportOptions {
        quant: args.quant,
        block: args.block,
        prune: args.prune,
        lora: args.lora,
        ort_int8_activations: args.ort_int8_activations,
        progress: Some(&mut progress),
        force: args.force,
    };
    let result = export(&args.hf_dir, &args.out, opts);
    bar.finish_and_clear();
    let m = result.with_context(|| format!("exporting {}", args.hf_dir.display()))?;
    outln!(
        "{} ({} parameters) → {}: {} of weights, {:?}{}{}, in {:.1} s",
        m.architecture.name(),
        m.parameters_exported,
        args.out.display(),
        human_bytes(m.weight_bytes as f64),
        m.quantization.scheme,
        m.pruning.as_ref().map(|p| format!(", pruned {} ({})", p.method, p.effect)).unwrap_or_default(),
        m.lora
            .as_ref()
            .map(|l| format!(", LoRA r={} merged into {} modules", l.rank, l.modules_merged))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

fn profiles_table(profiles: &Profiles) -> String {
    let mut s = format!(
        "{:<20} {:<6} {:<10} {:>5} {:>10} {:>10} {:>14} {:>12} {:>11}  {}\n",
        "NAME", "CLASS", "ARCH", "CORES", "RAM", "USABLE", "FP32", "INT8", "BANDWIDTH", "LINK"
    );
    for p in profiles.iter() {
        let link = match &p.link {
            edgehil::profile::LinkSpec::Serial { baud } => format!("serial@{baud}"),
            edgehil::profile::LinkSpec::Probe { chip } => format!("probe:{chip}"),
        };
        s += &format!(
            "{:<20} {:<6} {:<10} {:>5} {:>10} {:>10} {:>14} {:>12} {:>11}  {}\n",
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

fn models_table(profile: Option<&edgehil::profile::Profile>, context: u64) -> String {
    use edgehil::catalog::{fit, Precision, CATALOG};
    let mut s = format!("{:<20} {:<10} {:>8}", "MODEL", "ARCH", "PARAMS");
    for p in Precision::ALL {
        s += &format!(" {:>10}", p.name().to_uppercase());
    }
    if let Some(p) = profile {
        s += &format!("  FIT ON {} ({} usable, context {context})", p.name, human_bytes(p.ram_usable.value.0 as f64));
    }
    s.push('\n');
    for m in CATALOG {
        s += &format!(
            "{:<20} {:<10} {:>7.2}B",
            m.name,
            format!("{:?}", m.arch).to_lowercase(),
            m.parameters() as f64 / 1e9
        );
        for p in Precision::ALL {
            s += &format!(" {:>10}", human_bytes(m.weight_bytes(p) as f64));
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
            s += &format!("  {}", fits.join(", "));
        }
        s.push('\n');
    }
    s
}

fn run_cmd(args: RunArgs, profiles: &Profiles) -> Result<u8> {
    let mut model = args.model.unwrap_or_else(|| edgehil_onnx::fixtures::dir().join("block.onnx"));
    if model.is_dir() {
        model = model.join("model.onnx");
    }
    if !model.is_file() {
        bail!("model {} does not exist", model.display());
    }
    let (names, boards) = args.board.options()?;
    let mut reports = Vec::new();
    for board in boards {
        let opts = RunOptions {
            model: model.clone(),
            reference: args.reference.clone(),
            board,
            runs: args.runs,
            warmup: args.warmup,
            inputs: args.inputs.clone(),
            seed: args.seed,
            sequence: args.prompt_tokens,
            outputs: args.outputs,
        };
        for name in &names {
            let report = run::run(&opts, profiles.get(name)?)?;
            outln!("{}", report.table());
            reports.push((report.status, report));
        }
    }
    finish(reports, args.json.as_deref())
}

fn generate_cmd(args: GenerateArgs, profiles: &Profiles) -> Result<u8> {
    let (names, boards) = args.board.options()?;
    let tokenizer = TextTokenizer::load(&args.model)?;
    let mut reports = Vec::new();
    for board in boards {
        let opts = GenerateOptions {
            model: args.model.clone(),
            reference: args.reference.clone(),
            prompt: args.prompt.clone(),
            params: args.sampling.params(),
            stop_at_eos: !args.ignore_eos,
            tokenize_on_board: args.tokenize_on_board,
            reps: args.reps,
            board,
        };
        for name in &names {
            let profile = profiles.get(name)?;
            outln!("{} ({}): {}", profile.name, opts.board.engine.name(), opts.prompt);
            let mut streamer = Streamer::new(&tokenizer, std::io::stdout());
            let report = edgehil::generate::generate(&opts, profile, |id| streamer.push(id))?;
            outln!("\n\n{}", report.table());
            reports.push((report.status, report));
        }
    }
    finish(reports, args.json.as_deref())
}

fn eval_cmd(args: EvalArgs, profiles: &Profiles) -> Result<u8> {
    use edgehil::eval::{eval, EvalOptions};
    let (names, boards) = args.board.options()?;
    let mut reports = Vec::new();
    for board in boards {
        let opts = EvalOptions {
            task: args.task.clone(),
            method: args.method,
            model: args.model.clone(),
            embedder: args.embedder.clone(),
            params: args.sampling.params(),
            stop_at_eos: true,
            board,
            journal: args.journal.clone(),
        };
        for name in &names {
            let report = eval(&opts, profiles.get(name)?)?;
            outln!("{}", report.table());
            reports.push((report.status, report));
        }
    }
    finish(reports, args.json.as_deref())
}

fn sweep_cmd(args: SweepArgs, profiles: &Profiles) -> Result<u8> {
    use edgehil::sweep::{render, sweep};
    let (names, boards) = args.board.options()?;
    let mut rows = Vec::new();
    for board in &boards {
        for name in &names {
            let profile = profiles.get(name)?;
            for model in &args.models {
                errln!("{} on {} with {}…", model.display(), profile.name, board.engine.name());
                rows.extend(sweep(model, profile, board, &args.tests, args.reps)?);
            }
        }
    }
    let table = render(&rows, args.format);
    out!("{table}");
    if let Some(path) = &args.out {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(rows.iter().map(|r| r.status).fold(0, worse))
}

/// The exit code of a status folded into the worst so far.
fn worse(code: u8, status: Status) -> u8 {
    match status {
        Status::Ok | Status::Skipped => code,
        Status::DoesNotFit => code.max(EXIT_DOES_NOT_FIT),
        Status::Failed => code.max(EXIT_BOARD_FAILED),
    }
}

/// Writes the reports as JSON if asked; the exit code of the worst status.
fn finish<R: serde::Serialize>(reports: Vec<(Status, R)>, json: Option<&Path>) -> Result<u8> {
    if let Some(path) = json {
        let all: Vec<&R> = reports.iter().map(|(_, r)| r).collect();
        let text = serde_json::to_string_pretty(&all).context("encoding the reports")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(reports.iter().map(|(s, _)| *s).fold(0, worse))
}

fn calibrate_cmd(
    profile: &edgehil::profile::Profile,
    measured: &Path,
    out: Option<PathBuf>,
    engine: Option<EngineKind>,
    target: Option<&str>,
    bandwidth: Option<f64>,
) -> Result<u8> {
    use edgehil::calibrate::{calibrate, default_out, read, Filter};
    let cases = read(measured, &Filter { profile: &profile.name, engine, target })?;
    outln!("{}", cases.summary());
    let out = out.unwrap_or_else(|| default_out(&profile.name));
    let calibrated = calibrate(&cases, profile, &out, bandwidth)
        .with_context(|| format!("calibrating {} with {}", profile.name, measured.display()))?;
    out!("{}", calibrated.fit.table());
    std::fs::write(&out, &calibrated.toml).with_context(|| format!("writing {}", out.display()))?;
    outln!(
        "wrote {} to {}; use it with --profiles-dir {}",
        calibrated.profile.name,
        out.display(),
        out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).display()
    );
    Ok(0)
}
