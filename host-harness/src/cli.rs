//! The command line's arguments (clap); `cmd` runs them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use edgehil::run;
use edgehil::suite::file::Tolerances;
use edgehil::units::{BitRate, ByteRate, Bytes, Seconds};
use edgehil_hil::{QemuArch, Target, Timeouts};
use edgehil_runtime::wire::{EngineKind, GenParams, OptLevel, OutputMode};

use crate::cmd::Boards;

#[derive(Parser)]
#[command(version, about = "Does this model, compressed this way, fit this board, how fast, and is it still right?")]
pub struct Cli {
    /// A folder of a team's own device profiles (added to the built-in ones).
    #[arg(long, global = true, env = "EDGEHIL_PROFILES_DIR")]
    pub profiles_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a model on a board (default: the shipped transformer block on the emulated Jetson Orin Nano).
    Run(RunArgs),
    /// The study's models: parameters, weight bytes per precision, and fit on a profile.
    Models {
        #[command(subcommand)]
        command: ModelsCmd,
    },
    /// Recommend model, customization (LoRA or RAG) and compression for a board, from the study's guidelines.
    Plan(PlanArgs),
    /// Generate text with an exported language model on a board: streamed tokens, speed, RAM, agreement with the host.
    Generate(GenerateArgs),
    /// Task accuracy on LaMP-format data (zero-shot, RAG with MiniLM on the board, or a LoRA-merged export).
    Eval(EvalArgs),
    /// llama-bench's speed table (ppN prompt, tgN generation tok/s) per model, profile and engine.
    Sweep(SweepArgs),
    /// Export a Hugging Face folder (gpt2, gpt_neox, llama, opt, bert) or a GGUF file (llama) to an ONNX model folder.
    Export(ExportArgs),
    /// Compile an ONNX model to a micro-model for the no_std engine of microcontroller boards: flash and RAM bytes.
    Micro(MicroArgs),
    /// Nightly suites: a matrix from one TOML file, a journal that loses nothing, reports, baselines.
    Suite {
        #[command(subcommand)]
        command: SuiteCmd,
    },
    /// Pair the cases of two journals by everything but the target (e.g. emulated against real).
    Compare(CompareArgs),
    /// Device profiles.
    Profiles {
        #[command(subcommand)]
        command: ProfilesCmd,
    },
    /// Fit a profile's latency model (compute, bandwidth, call, op and token overheads) to measured runs.
    Calibrate(CalibrateArgs),
    /// QEMU board images (Debian kernel + busybox initramfs with the agent) for the qemu: targets.
    Board {
        #[command(subcommand)]
        command: BoardCmd,
    },
    /// Cloud/device split inference (SPA): the board's part under its cap, the cloud's on a second agent, over an emulated network.
    Split(SplitArgs),
}

#[derive(Parser)]
pub struct SplitArgs {
    /// A Hugging Face decoder folder (gpt2, gpt_neox, llama, opt).
    #[arg(long)]
    pub model: PathBuf,
    /// The cloud's device profile (its cap and its predicted compute).
    #[arg(long)]
    pub cloud_profile: String,
    /// Round trip of one exchange (SPA's τ), e.g. 20ms.
    #[arg(long, default_value = "20ms", value_parser = parse_rtt)]
    pub rtt: Duration,
    /// The link's rate, e.g. 10Mbit/s.
    #[arg(long, default_value = "10Mbit/s", value_parser = parse_bit_rate)]
    pub bandwidth: f64,
    /// board, cloud, layer (the first K layers on the board), adapter (an adapter per layer on the board)
    /// or lst (a ladder side network on the board fed by every layer).
    #[arg(long, value_enum, default_value = "layer")]
    pub mode: edgehil::split::Mode,
    /// The adapters' rank in adapter mode (their weights are seeded: the mode is about where they run).
    #[arg(long, default_value_t = 8)]
    pub rank: u64,
    /// The side network's width divisor r in lst mode (width hidden / r; seeded weights).
    #[arg(long, default_value_t = 8)]
    pub reduction: u64,
    /// Layers on the board in layer mode (default: half); implies --mode layer.
    #[arg(long, conflicts_with = "mode")]
    pub layers_on_board: Option<u64>,
    /// Run every placement and give the best per network over a grid of round trips and bandwidths.
    #[arg(long)]
    pub sweep: bool,
    /// Prompt tokens (seeded), prefilled before the timed tokens.
    #[arg(long, default_value_t = 8)]
    pub prompt_tokens: u64,
    /// Tokens generated (greedy); the per-token figures are their mean.
    #[arg(long, default_value_t = 8)]
    pub tokens: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the parts are exported (default: a folder under the system's temporary folder).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Write the sweep's HTML page (table and chart) here.
    #[arg(long, requires = "sweep")]
    pub html: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub board: BoardArgs,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[arg(long)]
    pub profile: String,
    /// LaMP-1 … LaMP-7 (the study's scores decide), or classification / generation (its guidelines do).
    #[arg(long)]
    pub task: edgehil::plan::TaskChoice,
    /// For classification / generation; a LaMP task's comes from the study's Table 4.
    #[arg(long, value_enum, default_value = "unknown")]
    pub difficulty: edgehil::plan::Difficulty,
    /// RAM to plan for instead of the profile's usable RAM, e.g. "4 GB" for the study's tiers.
    #[arg(long, value_parser = parse_bytes)]
    pub cap: Option<u64>,
    /// Prompt length in tokens (generation adds the study's 100 new tokens).
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: u64,
    /// Also write the plan as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Journal or report.json of A (e.g. the emulated run); alone, a journal of a suite with two targets,
    /// whose first target is A and second B.
    pub a: PathBuf,
    /// Journal or report.json of B (e.g. the real board's run).
    pub b: Option<PathBuf>,
    /// Also write the pairs as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Give latency ratios for QEMU targets too: under TCG they measure the
    /// emulator, so by default the pair shows each side's timing kind instead.
    #[arg(long)]
    pub emulated_timings_as_real: bool,
}

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// A suite journal (JSON lines), or the JSON array `edgehil run --json` writes.
    #[arg(long)]
    pub measured: PathBuf,
    /// The profile the runs were made with: only its cases are used.
    #[arg(long)]
    pub profile: String,
    /// The calibrated profile to write (default PROFILE-calibrated.toml); the file stem is its name.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only the cases of this engine (tract or ort).
    #[arg(long, value_parser = parse_engine)]
    pub engine: Option<EngineKind>,
    /// Only the cases on this target (emu, serial:PORT, labgrid:PLACE).
    #[arg(long)]
    pub target: Option<Target>,
    /// The board's memory bandwidth as measured there (e.g. a STREAM copy: "20 GB/s"),
    /// kept instead of fitted: one model's runs barely tell it from a fixed overhead.
    #[arg(long, value_parser = parse_byte_rate)]
    pub bandwidth: Option<f64>,
    /// Fit runs on QEMU targets too: under TCG their latencies measure the
    /// emulator, so they are left out unless this says they stand for the device.
    #[arg(long)]
    pub emulated_timings_as_real: bool,
}

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// Every catalog model; with --profile, whether each precision fits its usable RAM.
    List {
        #[arg(long)]
        profile: Option<String>,
        /// RAM to fit in instead of the profile's usable RAM, e.g. "4 GB" for the study's tiers.
        #[arg(long, value_parser = parse_bytes, requires = "profile")]
        cap: Option<u64>,
        /// Context length for the KV cache and activations.
        #[arg(long, default_value_t = 512)]
        context: u64,
    },
    /// LoRA fine-tuning cost (q, k, v adapters, AdamW) fitted to the study's Table 3; with --profile,
    /// every catalog model's training peak RAM, fit and samples per hour on that board.
    TrainCost {
        #[arg(long)]
        profile: Option<String>,
        /// LoRA rank (the study: 8 to 256).
        #[arg(long, default_value_t = 8)]
        rank: u64,
        /// Tokens of one training sample.
        #[arg(long, default_value_t = 256)]
        tokens: u64,
        /// Keep only each layer's input for the backward pass and recompute the rest.
        #[arg(long)]
        checkpointing: bool,
        /// Hours of training a night (the study: 3 to 4 suffice).
        #[arg(long, default_value_t = 3.5)]
        night_hours: f64,
    },
    /// Run LoRA training steps (q, k, v; AdamW) of a Llama-family Hugging Face folder on the
    /// emulated board under the profile's cap: measured peak heap and step time beside train-cost's estimate.
    TrainStep {
        /// A Llama-family Hugging Face folder with fp32 weights, e.g. onnx-models/reference/llama-gqa.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        profile: String,
        /// RAM cap instead of the profile's usable RAM, e.g. "4 GB".
        #[arg(long, value_parser = parse_bytes)]
        cap: Option<u64>,
        /// LoRA rank (alpha twice the rank).
        #[arg(long, default_value_t = 8)]
        rank: u64,
        /// Tokens of the training sample (at most the model's positions).
        #[arg(long, default_value_t = 64)]
        tokens: u64,
        /// Steps to run; the median step's time is reported.
        #[arg(long, default_value_t = 3)]
        steps: usize,
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
pub struct ExportArgs {
    /// Hugging Face folder (config.json, model.safetensors, tokenizer.json), or a GGUF file (llama; tensors
    /// F32/F16/BF16/Q8_0/Q4_0/Q4_1, dequantized to fp32 first: --quant none keeps the file's values exactly,
    /// and so does --quant int4 for Q4_0 tensors). A GPTQ folder (4-bit qweight/qzeros/scales/g_idx) keeps
    /// its layers' codes as int4 exactly; --quant applies to the tensors it holds unquantized.
    pub hf_dir: PathBuf,
    /// Output folder: model.onnx, model.onnx.data, tokenizer.json, edgehil.json. An earlier export there is
    /// replaced; any other non-empty folder only with --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out even if it is a non-empty folder that is not an earlier export (never the source folder
    /// or a folder containing it).
    #[arg(long)]
    pub force: bool,
    /// Weight precision: none (fp32), int8 (per channel) or int4 (blocks, MatMulNBits).
    #[arg(long, default_value = "none")]
    pub quant: edgehil_onnx::export::Quant,
    /// Block size of int4.
    #[arg(long, default_value_t = 32)]
    pub block: usize,
    /// magnitude:FRACTION, heads:N or mlp:FRACTION.
    #[arg(long)]
    pub prune: Option<edgehil_onnx::export::Prune>,
    /// A PEFT LoRA adapter folder to merge before quantization.
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// int4: let ONNX Runtime quantize activations to int8 (MatMulNBits accuracy_level 4) instead of
    /// keeping them fp32 (level 0, the default): about twice the speed, about 1.3× the RAM of the weights.
    #[arg(long)]
    pub ort_int8_activations: bool,
}

#[derive(clap::Args)]
pub struct MicroArgs {
    /// The ONNX model (self-contained; ops: see `edgehil_onnx::micro::OPS`).
    pub model: PathBuf,
    /// The micro-model file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the flash and RAM figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum SuiteCmd {
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
        /// Instead of the suite's targets: emu, serial:PORT[@BAUD] or labgrid:PLACE (repeat for several).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Instead of the suite's engines, comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = parse_engine)]
        engine: Vec<EngineKind>,
        /// Cases on this many distinct boards at once (one case at a time per board).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        jobs: u32,
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
pub enum ReportFormat {
    Json,
    Junit,
    Md,
    /// lava-test-case calls for a LAVA test definition.
    Lava,
}

#[derive(Subcommand)]
pub enum ProfilesCmd {
    /// A table of every known profile.
    List,
    /// One profile with every figure and its source.
    Show { name: String },
}

#[derive(Subcommand)]
pub enum BoardCmd {
    /// Build (or find cached) the image a qemu: target boots; prints its folder.
    Build {
        /// aarch64 (the agent is cross-built) or x86_64.
        #[arg(long, value_parser = parse_qemu_arch)]
        arch: QemuArch,
        /// The x86_64 agent to put in (default: beside edgehil, or $EDGEHIL_AGENT).
        #[arg(long)]
        agent: Option<PathBuf>,
    },
}

fn parse_qemu_arch(s: &str) -> Result<QemuArch, String> {
    s.parse().map_err(|_| format!("`{s}`: expected aarch64 or x86_64"))
}

/// Where and how a model runs: shared by `run`, `generate` and `sweep`.
#[derive(clap::Args)]
pub struct BoardArgs {
    /// Device profile; repeat to run on several boards in turn.
    #[arg(long = "profile", default_values_t = ["jetson-orin-nano".to_string()])]
    pub profiles: Vec<String>,
    /// emu, serial:PORT[@BAUD], labgrid:PLACE (coordinator: $LG_COORDINATOR, as labgrid-client),
    /// qemu:aarch64 or qemu:x86_64 (a Linux VM), qemu:mps2-an386 or qemu:mps2-an500 (the microcontroller
    /// firmware on QEMU's Cortex-M4 / M7; engine micro).
    #[arg(long, default_value = "emu")]
    pub target: String,
    /// tract or ort; several, comma-separated, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "tract", value_parser = parse_engine)]
    pub engine: Vec<EngineKind>,
    /// Graph optimisation level for ort: disabled, basic, extended, all.
    #[arg(long, default_value = "all", value_parser = parse_opt_level)]
    pub opt_level: OptLevel,
    /// RAM cap instead of the profile's usable RAM, e.g. "64 MiB".
    #[arg(long, value_parser = parse_bytes)]
    pub cap: Option<u64>,
    /// Seconds of silence from the board before a request is sent again (eight unanswered sends in a row at most, each waiting longer).
    #[arg(long, default_value_t = 1.5)]
    pub resend_after: f64,
    /// Longest one request may take, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// The edgehil-agent binary for the emulated board (default: beside edgehil, or $EDGEHIL_AGENT); on a qemu:mps2-* target, the firmware ELF (default: scripts/firmware.sh's, or $EDGEHIL_FIRMWARE).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// libonnxruntime.so for --engine ort (default: $EDGEHIL_ORT_LIBRARY, or the pip package's).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Send the board the model and the files its agent reads beside it (tokenizer.json, external data,
    /// the embedder), skipping those it holds already by SHA-256: auto (every board but emu, which reads
    /// this machine's files), always, or never (the model paths given are paths on the board).
    #[arg(long, value_enum, default_value = "auto")]
    pub upload: run::Upload,
}

impl BoardArgs {
    /// The profiles, and the board options for each engine.
    pub fn options(self) -> Result<Boards> {
        let target: Target = self.target.parse()?;
        let ort_library = match self.engine.contains(&EngineKind::Ort) {
            true => Some(run::find_ort_library(self.ort_library.as_deref())?),
            false => self.ort_library,
        };
        let agent = match self.agent {
            Some(a) => a,
            None => run::agent_for(&target)?,
        };
        let qemu_image = run::board_image(&target, &agent)?;
        // A microcontroller has one engine, whatever --engine says.
        let engines = target.only_engine().map_or(self.engine, |e| vec![e]);
        let boards = engines
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
                qemu_image: qemu_image.clone(),
                upload: self.upload,
            })
            .collect();
        Ok(Boards { profiles: self.profiles, boards })
    }
}

/// How new tokens are picked: the study's settings by default.
#[derive(clap::Args)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = GenParams::STUDY.max_new)]
    pub max_new: u32,
    /// 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = GenParams::STUDY.temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = GenParams::STUDY.top_p)]
    pub top_p: f32,
    /// 0 keeps every token.
    #[arg(long, default_value_t = GenParams::STUDY.top_k)]
    pub top_k: u32,
    #[arg(long, default_value_t = GenParams::STUDY.seed)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> GenParams {
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
pub struct GenerateArgs {
    /// A folder written by `edgehil export` (model.onnx, tokenizer.json, edgehil.json).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// Put the prompt in the model's chat format (its chat template, as a user message) before tokenizing.
    #[arg(long)]
    pub chat: bool,
    /// The fp32 export of the same model: report teacher-forced top-1 agreement with it.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// A text to feed both this model and --reference, teacher-forced: top-1 agreement and both perplexities
    /// (e.g. eval/text/alice.txt).
    #[arg(long, requires = "reference")]
    pub text: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep going past the end-of-sequence token (fixed-length timing).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Also tokenize the prompt and decode the output on the board (agents with std), checked against the host.
    #[arg(long)]
    pub tokenize_on_board: bool,
    /// Repetitions for the speed figures (mean ± sd).
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Write the reports as a JSON array here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub board: BoardArgs,
}

#[derive(Parser)]
pub struct EvalArgs {
    /// A LaMP-format task folder: questions.json, outputs.json [, task.json] (e.g. eval/lamp-sample/classification).
    #[arg(long)]
    pub task: PathBuf,
    #[arg(long, value_enum, default_value = "zero-shot")]
    pub method: edgehil::eval::Method,
    /// The language model: a folder written by `edgehil export` (LoRA-merged for --method lora).
    #[arg(long)]
    pub model: PathBuf,
    /// MiniLM exported with `edgehil export`, for --method rag.
    #[arg(long)]
    pub embedder: Option<PathBuf>,
    /// RAG over a random share (0.0 to 1.0, drawn with --seed) of each user's history, as the study's Figure 7.
    #[arg(long, default_value_t = 1.0)]
    pub history_fraction: f64,
    /// Put each prompt in the model's chat format (its chat template, as a user message) before tokenizing.
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Append each item's result here (JSON lines) as it completes.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Write the reports as a JSON array here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub board: BoardArgs,
}

#[derive(Parser)]
pub struct SweepArgs {
    /// Folders written by `edgehil export`; repeat for several.
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// Tests, comma-separated: ppN (prefill of N tokens), tgN (N generated tokens).
    #[arg(long, value_delimiter = ',', default_value = "pp128,pp512,tg128")]
    pub tests: Vec<edgehil::sweep::Test>,
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    #[arg(long, value_enum, default_value = "md")]
    pub format: edgehil::sweep::Format,
    /// Write the table here as well as to the terminal.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub board: BoardArgs,
}

#[derive(Parser)]
pub struct RunArgs {
    /// ONNX model, or a folder written by `edgehil export` (default: onnx-models/fixtures/block.onnx).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub board: BoardArgs,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    pub runs: u32,
    /// Untimed warm-up runs before them.
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// Inputs as JSON: {"NAME": {"shape": [..], "values": [..]}}; default: seeded random.
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prompt tokens in the seeded inputs of a language model (a prefill on an empty cache).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: u64,
    /// Model whose host outputs are the reference (e.g. the fp32 model of an int8 one); default: --model.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// What the board sends back: full, topk:K, digest.
    #[arg(long, default_value = "full", value_parser = parse_outputs)]
    pub outputs: OutputMode,
    /// Write the reports as a JSON array here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn parse_engine(s: &str) -> Result<EngineKind, String> {
    EngineKind::ALL.into_iter().find(|e| e.name() == s).ok_or_else(|| format!("`{s}`: expected tract or ort"))
}

pub fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    OptLevel::ALL
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| format!("`{s}`: expected disabled, basic, extended or all"))
}

pub fn parse_outputs(s: &str) -> Result<OutputMode, String> {
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

pub fn parse_byte_rate(s: &str) -> Result<f64, String> {
    ByteRate::try_from(s.to_string()).map(|b| b.0)
}

/// "20ms" or "20 ms".
pub fn parse_rtt(s: &str) -> Result<Duration, String> {
    Seconds::try_from(spaced(s)).map(|v| Duration::from_secs_f64(v.0))
}

/// "10Mbit/s" or "10 Mbit/s".
pub fn parse_bit_rate(s: &str) -> Result<f64, String> {
    let rate = BitRate::try_from(spaced(s))?.0;
    match rate > 0.0 {
        true => Ok(rate),
        false => Err(format!("`{s}`: a link's rate must be above zero")),
    }
}

/// A space between the number and its unit, where there is none.
fn spaced(s: &str) -> String {
    let s = s.trim();
    match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) if !s[..i].ends_with(' ') => format!("{} {}", &s[..i], &s[i..]),
        _ => s.to_string(),
    }
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.parse::<u64>().or_else(|_| Bytes::try_from(s.to_string()).map(|b| b.0))
}
