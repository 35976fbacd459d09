//! `edgehil split`: cloud/device split inference as SPA models it. The board
//! runs its part under its profile's cap, the host runs the cloud's part as
//! a second agent under the cloud profile's, and what crosses between them
//! goes over an emulated network ([`net`]). Per generated token the report
//! gives T_dev, T_cloud, T_net, M and the bytes of an exchange, measured and
//! as SPA's formula predicts them: T = T_dev + T_cloud + M × (τ + T_data),
//! T_data = bytes / bandwidth.

pub mod html;
pub mod net;
pub mod sweep;

use std::path::{Path, PathBuf};

use edgehil_hil::{HilError, Session, Target};
use edgehil_onnx::export::ExportError;
use edgehil_onnx::split::{export_part, Part};
use edgehil_runtime::engine::{self, EngineError, LoadOptions};
use edgehil_runtime::wire::{EngineKind, OptLevel, OutputMode, Tensor, TensorInfo, Values};
use serde::Serialize;

use crate::estimate::{self, EstimateError};
use crate::profile::Profile;
use crate::run::{BoardOptions, BoardRun};
use net::{EmulatedNet, NetParams};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    #[error(transparent)]
    Export(#[from] ExportError),
    /// an agent (board or cloud) failed
    #[error("{side} agent ({model}): {cause}")]
    Agent { side: Side, model: PathBuf, cause: HilError },
    /// the host reference (the unsplit model, tract) failed
    #[error("host reference {model}: {cause}")]
    Reference { model: PathBuf, cause: EngineError },
    /// the emulated network failed
    #[error("emulated network: {0}")]
    Net(std::io::Error),
    #[error(transparent)]
    Estimate(#[from] EstimateError),
    /// a model's interface is not the decoder's (ids or hidden state, mask, positions, cache)
    #[error("{model}: {message}")]
    Interface { model: PathBuf, message: String },
    /// an option is out of range
    #[error("{0}")]
    Option(String),
}

/// Where a part runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Board,
    Cloud,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Board => "board",
            Side::Cloud => "cloud",
        })
    }
}

/// How the model is divided (SPA's Table 2 for the modes landed so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything on the board: no exchange.
    Board,
    /// Everything in the cloud: the token id goes up, the next comes back (M = 1).
    Cloud,
    /// The first K layers on the board, the rest and the head in the cloud (M = 1).
    Layer,
    /// The frozen layers in the cloud, an adapter after each on the board (M = L):
    /// each layer's hidden state comes down and goes back up with the adapter's output.
    Adapter,
    /// Ladder side tuning: the frozen model in the cloud, a side network of
    /// width d/r on the board fed by every layer's downsampled state (M = 1).
    Lst,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Board => "board",
            Mode::Cloud => "cloud",
            Mode::Layer => "layer",
            Mode::Adapter => "adapter",
            Mode::Lst => "lst",
        }
    }
}

/// What `split` runs.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// A Hugging Face decoder folder.
    pub model: PathBuf,
    /// Where the parts are exported.
    pub work: PathBuf,
    /// The board: target, engine, agent.
    pub board: BoardOptions,
    pub mode: Mode,
    /// Layers on the board in `layer` mode (default: half).
    pub k: Option<u64>,
    /// The adapters' rank in `adapter` mode.
    pub rank: u64,
    /// The side network's width divisor r (width d/r) in `lst` mode.
    pub reduction: u64,
    pub net: NetParams,
    /// Prompt tokens (prefilled first, not counted per token).
    pub prompt: u64,
    /// Tokens generated, greedily; each is one step of the per-token figures.
    pub tokens: u32,
    pub seed: u64,
}

/// One part as it runs: its model and where.
#[derive(Debug, Clone, PartialEq)]
struct Placed {
    side: Side,
    model: PathBuf,
}

/// Per-token milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Times {
    pub dev_ms: f64,
    pub cloud_ms: f64,
    pub net_ms: f64,
}

impl Times {
    pub fn total_ms(&self) -> f64 {
        self.dev_ms + self.cloud_ms + self.net_ms
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub mode: Mode,
    /// Layers on the board (the model's layers in `board` mode, 0 in `cloud`).
    pub k: u64,
    pub layers: u64,
    /// The adapters' rank (adapter mode).
    pub rank: u64,
    /// The side network's width divisor (lst mode).
    pub reduction: u64,
    pub board_profile: String,
    pub cloud_profile: String,
    pub rtt_ms: f64,
    pub bandwidth_bit_s: f64,
    /// Exchanges per token.
    pub m: u32,
    /// Bytes a generated token sends over all its exchanges: up (to the cloud) and down.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Mean over the generated tokens: the agents' own timings (this
    /// machine's CPU for an emulated board) and the network's wall time.
    pub measured: Times,
    /// The least T_net of the generated tokens: what the link itself takes,
    /// without the late wake-ups of a busy machine that the mean keeps.
    pub net_min_ms: f64,
    /// SPA's formula with the measured compute: M × (τ + T_data) for T_net.
    pub formula: Times,
    /// SPA's formula with the compute the profiles predict (the roofline of `run`).
    pub predicted: Times,
    /// Peak heap of each side's agent, and its cap.
    pub board_peak_heap: Option<u64>,
    pub board_cap: u64,
    pub cloud_peak_heap: Option<u64>,
    pub cloud_cap: u64,
    /// Largest |logit difference| against the unsplit model on the host (tract), over every step.
    pub max_abs_logit_diff: f32,
    /// The prompt, then the generated tokens.
    pub prompt: Vec<u32>,
    pub generated: Vec<u32>,
    /// How the network was emulated.
    pub network: String,
}

/// Exports the parts `opts.mode` needs (under `opts.work`) and runs them.
pub fn split(opts: &SplitOptions, board: &Profile, cloud: &Profile) -> Result<SplitReport, SplitError> {
    let layers = edgehil_onnx::hf::HfModel::open(&opts.model).map_err(ExportError::from)?.config.layers;
    let k = match opts.mode {
        Mode::Board => layers,
        Mode::Cloud | Mode::Adapter | Mode::Lst => 0,
        Mode::Layer => opts.k.unwrap_or(layers / 2),
    };
    let (parts, reference) = place(opts, layers, k)?;
    let network = match net::netem_probe() {
        Ok(()) => "shaper in edgehil's transport (TCP on loopback, delay rtt/2 each way + rate); Linux netem is available here but not used".into(),
        Err(why) => format!("shaper in edgehil's transport (TCP on loopback, delay rtt/2 each way + rate): Linux netem is not available here: {why}"),
    };
    let mut report = run_parts(opts, &parts, &reference, board, cloud)?;
    report.k = k;
    report.layers = layers;
    report.network = network;
    Ok(report)
}

/// The parts of `opts.mode` in the order a token goes through them, and
/// the unsplit graph they are checked against, exported under `opts.work`.
fn place(opts: &SplitOptions, layers: u64, k: u64) -> Result<(Vec<Placed>, PathBuf), SplitError> {
    let export = |name: String, part: Part| -> Result<PathBuf, SplitError> {
        let dir = opts.work.join(name);
        export_part(&opts.model, &dir, part)?;
        Ok(dir.join("model.onnx"))
    };
    let on = |side: Side, model: PathBuf| Placed { side, model };
    let rank = opts.rank;
    Ok(match opts.mode {
        Mode::Board | Mode::Cloud => {
            let whole = export("whole".into(), Part::Whole)?;
            let side = if opts.mode == Mode::Board { Side::Board } else { Side::Cloud };
            (vec![on(side, whole.clone())], whole)
        }
        Mode::Layer => (
            vec![
                on(Side::Board, export(format!("board-{k}"), Part::Board(k))?),
                on(Side::Cloud, export(format!("cloud-{k}"), Part::Cloud(k))?),
            ],
            export("whole".into(), Part::Whole)?,
        ),
        Mode::Adapter => {
            let mut parts = Vec::new();
            for layer in 0..layers {
                parts.push(on(Side::Cloud, export(format!("adapter-cloud-{layer}"), Part::AdapterCloud { layer })?));
                let board = Part::AdapterBoard { layer, rank };
                parts.push(on(Side::Board, export(format!("adapter-board-{layer}-r{rank}"), board)?));
            }
            (parts, export(format!("adapter-whole-r{rank}"), Part::AdapterWhole { rank })?)
        }
        Mode::Lst => {
            let reduction = opts.reduction;
            (
                vec![
                    on(Side::Cloud, export(format!("lst-cloud-r{reduction}"), Part::LstCloud { reduction })?),
                    on(Side::Board, export(format!("lst-board-r{reduction}"), Part::LstBoard { reduction })?),
                ],
                export(format!("lst-whole-r{reduction}"), Part::LstWhole { reduction })?,
            )
        }
    })
}

/// A decoder part's inputs for one step: `first` (ids or hidden state,
/// `[1, t, …]`), the mask and positions after `past` positions, and the cache.
pub fn step_inputs(first: Tensor, past: u64, cache: Vec<Tensor>) -> Vec<Tensor> {
    let t = first.shape[1];
    let mask = Tensor {
        name: "attention_mask".into(),
        shape: vec![1, past + t],
        values: Values::I64(vec![1; (past + t) as usize]),
    };
    let positions = Tensor {
        name: "position_ids".into(),
        shape: vec![1, t],
        values: Values::I64((past..past + t).map(|p| p as i64).collect()),
    };
    [first, mask, positions].into_iter().chain(cache).collect()
}

/// The empty cache of a part with `inputs` (batch 1, no past positions).
pub fn empty_cache(inputs: &[TensorInfo]) -> Vec<Tensor> {
    inputs
        .iter()
        .skip(3)
        .map(|info| {
            let shape = info.shape.iter().enumerate().map(|(i, d)| if i == 2 { 0 } else { d.unwrap_or(1) }).collect();
            Tensor { name: info.name.clone(), shape, values: Values::F32(Vec::new()) }
        })
        .collect()
}

/// A step's presents as the next step's cache, under the inputs' names.
pub fn as_past(mut presents: Vec<Tensor>, inputs: &[TensorInfo]) -> Vec<Tensor> {
    for (t, info) in presents.iter_mut().zip(inputs.iter().skip(3)) {
        t.name.clone_from(&info.name);
    }
    presents
}

/// Runs one part: an agent, or the host's tract for the reference.
enum Runner {
    Agent(Box<Session>),
    Host(Box<dyn engine::Engine>),
}

/// A decoder part with the key/value cache of its layers, held by the host
/// between steps (each step sends it to the agent and takes the new one back).
struct Stage {
    placed: Placed,
    runner: Runner,
    inputs: Vec<TensorInfo>,
    cache: Vec<Tensor>,
    /// The inputs of the last step (the prediction costs the graph with them).
    last: Vec<Tensor>,
    peak_heap: Option<u64>,
}

impl Stage {
    fn agent(board: &BoardOptions, profile: &Profile, placed: Placed) -> Result<Self, SplitError> {
        let agent_err = |cause| SplitError::Agent { side: placed.side, model: placed.model.clone(), cause };
        let mut got = BoardRun::default();
        let session = board.connect(profile, &placed.model, &mut got).map_err(|(e, _)| agent_err(e))?;
        let inputs = got.load.map(|l| l.inputs).unwrap_or_default();
        Self::new(placed, Runner::Agent(Box::new(session)), inputs)
    }

    fn host(placed: Placed) -> Result<Self, SplitError> {
        let host_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let opts = LoadOptions {
            engine: EngineKind::Tract,
            opt_level: OptLevel::All,
            threads: host_threads,
            ort_library: None,
        };
        let engine = engine::load(&placed.model, &opts)
            .map_err(|cause| SplitError::Reference { model: placed.model.clone(), cause })?;
        let inputs = engine.info().inputs.clone();
        Self::new(placed, Runner::Host(engine), inputs)
    }

    fn new(placed: Placed, runner: Runner, inputs: Vec<TensorInfo>) -> Result<Self, SplitError> {
        let bad = |message: String| SplitError::Interface { model: placed.model.clone(), message };
        if inputs.len() < 3 || inputs[1].name != "attention_mask" || inputs[2].name != "position_ids" {
            let names: Vec<_> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(bad(format!(
                "inputs {names:?}: expected ids or hidden state, attention_mask, position_ids, then the cache"
            )));
        }
        let cache = empty_cache(&inputs);
        Ok(Self { placed, runner, inputs, cache, last: Vec::new(), peak_heap: None })
    }

    /// One step over `first` (ids or hidden state, `[1, t, …]`) after `past`
    /// positions: the part's first output and the part's own time in ns.
    fn step(&mut self, first: &Tensor, past: u64) -> Result<(Tensor, u64), SplitError> {
        let first = Tensor { name: self.inputs[0].name.clone(), ..first.clone() };
        let inputs = step_inputs(first, past, std::mem::take(&mut self.cache));
        let model = self.placed.model.clone();
        let (mut outputs, nanos) = match &mut self.runner {
            Runner::Agent(session) => {
                let agent_err = |cause| SplitError::Agent { side: self.placed.side, model: model.clone(), cause };
                session.set_inputs(&inputs).map_err(agent_err)?;
                let result = session.infer(1, 0, OutputMode::Full, |_, _| {}).map_err(agent_err)?;
                self.peak_heap = Some(result.report.peak_heap.max(self.peak_heap.unwrap_or(0)));
                let outputs = result
                    .outputs
                    .into_iter()
                    .map(|o| match o {
                        edgehil_hil::OutputData::Full(t) => Ok(t),
                        other => Err(SplitError::Interface {
                            model: model.clone(),
                            message: format!("output `{}` came back partial", other.name()),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (outputs, result.latencies_ns.first().copied().unwrap_or(0))
            }
            Runner::Host(engine) => {
                let host_err = |cause| SplitError::Reference { model: model.clone(), cause };
                let started = std::time::Instant::now();
                engine.set_inputs(&inputs).map_err(host_err)?;
                engine.run().map_err(host_err)?;
                let outputs = engine.take_outputs().map_err(host_err)?;
                (outputs, started.elapsed().as_nanos() as u64)
            }
        };
        if outputs.len() != inputs.len() - 2 {
            return Err(SplitError::Interface {
                model,
                message: format!("{} outputs for {} cache inputs: expected one more", outputs.len(), inputs.len() - 3),
            });
        }
        self.cache = as_past(outputs.split_off(1), &self.inputs);
        self.last = inputs;
        Ok((outputs.remove(0), nanos))
    }

    fn shutdown(self) {
        if let Runner::Agent(mut session) = self.runner {
            let _ = session.shutdown();
        }
    }
}

/// The last row of `[1, t, V]` logits.
fn last_row(logits: &Tensor) -> &[f32] {
    let v = *logits.shape.last().unwrap_or(&0) as usize;
    match &logits.values {
        Values::F32(x) if v > 0 && x.len() >= v => &x[x.len() - v..],
        _ => &[],
    }
}

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0 as u32
}

fn le_bytes(t: &Tensor) -> Vec<u8> {
    match &t.values {
        Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn ids(tokens: &[u32]) -> Tensor {
    Tensor {
        name: "input_ids".into(),
        shape: vec![1, tokens.len() as u64],
        values: Values::I64(tokens.iter().map(|&t| i64::from(t)).collect()),
    }
}

/// Runs `parts` token by token: the prompt as one step, then `opts.tokens`
/// generated greedily, each through every part in turn; the unsplit model
/// runs on the host beside them as the reference.
fn run_parts(
    opts: &SplitOptions,
    parts: &[Placed],
    reference: &Path,
    board: &Profile,
    cloud: &Profile,
) -> Result<SplitReport, SplitError> {
    let folder = reference.parent().unwrap_or(Path::new("."));
    let facts = crate::generate::model_manifest(folder)
        .map_err(|e| SplitError::Option(format!("{}: {e}", folder.display())))?;
    if opts.prompt == 0 || opts.prompt + u64::from(opts.tokens) > facts.context {
        return Err(SplitError::Option(format!(
            "--prompt-tokens {} + --tokens {}: the model attends to {} positions, and the prompt needs one",
            opts.prompt, opts.tokens, facts.context
        )));
    }
    let cloud_board = cloud_options(&opts.board);
    let mut stages = Vec::new();
    for p in parts {
        let stage = match p.side {
            Side::Board => Stage::agent(&opts.board, board, p.clone()),
            Side::Cloud => Stage::agent(&cloud_board, cloud, p.clone()),
        };
        match stage {
            Ok(s) => stages.push(s),
            Err(e) => {
                stages.into_iter().for_each(Stage::shutdown);
                return Err(e);
            }
        }
    }
    let result = generate(opts, &mut stages, reference, facts.vocab, board, cloud);
    let peaks: Vec<(Side, Option<u64>)> = stages.iter().map(|s| (s.placed.side, s.peak_heap)).collect();
    stages.into_iter().for_each(Stage::shutdown);
    let mut report = result?;
    for (side, peak) in peaks {
        match side {
            Side::Board => report.board_peak_heap = peak,
            Side::Cloud => report.cloud_peak_heap = peak,
        }
    }
    report.board_cap = opts.board.cap_on(board);
    report.cloud_cap = cloud_board.cap_on(cloud);
    Ok(report)
}

/// The cloud's agent: an emulated board on this machine, whatever the board's target.
fn cloud_options(board: &BoardOptions) -> BoardOptions {
    BoardOptions {
        target: Target::Emulated,
        cap: None,
        agent: crate::run::find_agent().unwrap_or_else(|_| board.agent.clone()),
        qemu_image: None,
        upload: crate::run::Upload::Auto,
        ..board.clone()
    }
}

fn generate(
    opts: &SplitOptions,
    stages: &mut [Stage],
    reference: &Path,
    vocab: u64,
    board: &Profile,
    cloud: &Profile,
) -> Result<SplitReport, SplitError> {
    let mut reference = Stage::host(Placed { side: Side::Cloud, model: reference.to_path_buf() })?;
    let mut net = EmulatedNet::start(opts.net).map_err(SplitError::Net)?;
    let mut rng = edgehil_onnx::rng::SplitMix64::new(opts.seed);
    let prompt: Vec<u32> = (0..opts.prompt).map(|_| (rng.next_u64() % vocab) as u32).collect();
    let mut generated = Vec::new();
    let mut sums = Times::default();
    let mut net_min_ms = f64::INFINITY;
    let (mut m, mut bytes_up, mut bytes_down) = (0u32, 0u64, 0u64);
    let mut max_diff = 0f32;
    let mut past = 0u64;
    let mut next = ids(&prompt);
    for step in 0..=opts.tokens {
        let mut times = Times::default();
        let (mut crossings, mut up, mut down) = (0u32, 0u64, 0u64);
        let mut x = next.clone();
        let mut side = Side::Board;
        for stage in stages.iter_mut() {
            if stage.placed.side != side {
                let bytes = le_bytes(&x);
                let took = match stage.placed.side {
                    Side::Cloud => {
                        crossings += 1;
                        up += bytes.len() as u64;
                        net.up(&bytes)
                    }
                    Side::Board => {
                        down += bytes.len() as u64;
                        net.down(&bytes)
                    }
                }
                .map_err(SplitError::Net)?;
                times.net_ms += took.as_secs_f64() * 1e3;
                side = stage.placed.side;
            }
            let (out, nanos) = stage.step(&x, past)?;
            match side {
                Side::Board => times.dev_ms += nanos as f64 / 1e6,
                Side::Cloud => times.cloud_ms += nanos as f64 / 1e6,
            }
            x = out;
        }
        let (want, _) = reference.step(&next, past)?;
        let row = last_row(&x);
        max_diff = last_row(&want).iter().zip(row).fold(max_diff, |d, (a, b)| d.max((a - b).abs()));
        let token = argmax(row);
        if side == Side::Cloud {
            // The token is the device's: it comes back down.
            let bytes = token.to_le_bytes();
            down += bytes.len() as u64;
            times.net_ms += net.down(&bytes).map_err(SplitError::Net)?.as_secs_f64() * 1e3;
        }
        past += next.shape[1];
        next = ids(&[token]);
        // The prompt's step is a prefill, not a token.
        if step > 0 {
            generated.push(token);
            sums.dev_ms += times.dev_ms;
            sums.cloud_ms += times.cloud_ms;
            sums.net_ms += times.net_ms;
            net_min_ms = net_min_ms.min(times.net_ms);
            (m, bytes_up, bytes_down) = (crossings, up, down);
        }
    }
    let n = f64::from(opts.tokens.max(1));
    let measured = Times { dev_ms: sums.dev_ms / n, cloud_ms: sums.cloud_ms / n, net_ms: sums.net_ms / n };
    let net_formula = opts.net.predicted(m, bytes_up + bytes_down).as_secs_f64() * 1e3;
    let mut predicted = Times { net_ms: net_formula, ..Times::default() };
    for stage in stages.iter() {
        let cost = estimate::graph_cost(&stage.placed.model, &stage.last)?;
        match stage.placed.side {
            Side::Board => {
                predicted.dev_ms +=
                    estimate::predict(&cost, 1, board, opts.board.engine, opts.board.opt_level).latency_ms
            }
            Side::Cloud => {
                predicted.cloud_ms +=
                    estimate::predict(&cost, 1, cloud, opts.board.engine, opts.board.opt_level).latency_ms
            }
        }
    }
    Ok(SplitReport {
        mode: opts.mode,
        k: 0,
        layers: 0,
        rank: opts.rank,
        reduction: opts.reduction,
        board_profile: board.name.clone(),
        cloud_profile: cloud.name.clone(),
        rtt_ms: opts.net.rtt.as_secs_f64() * 1e3,
        bandwidth_bit_s: opts.net.bits_per_s,
        m,
        bytes_up,
        bytes_down,
        measured,
        net_min_ms: if net_min_ms.is_finite() { net_min_ms } else { 0.0 },
        formula: Times { net_ms: net_formula, ..measured },
        predicted,
        board_peak_heap: None,
        board_cap: 0,
        cloud_peak_heap: None,
        cloud_cap: 0,
        max_abs_logit_diff: max_diff,
        prompt,
        generated,
        network: String::new(),
    })
}

impl SplitReport {
    /// The report as a table for the terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let k = match self.mode {
            Mode::Layer => format!(", K = {} of {} layers on the board", self.k, self.layers),
            Mode::Adapter => {
                format!(", an adapter of rank {} after each of {} layers on the board", self.rank, self.layers)
            }
            Mode::Lst => {
                format!(", a side network of width d/{} on the board fed by all {} layers", self.reduction, self.layers)
            }
            Mode::Board | Mode::Cloud => String::new(),
        };
        out += &format!(
            "split: mode {}{k}; board {} (cap {}), cloud {} (cap {})\n",
            self.mode.name(),
            self.board_profile,
            crate::units::human_bytes(self.board_cap as f64),
            self.cloud_profile,
            crate::units::human_bytes(self.cloud_cap as f64),
        );
        out += &format!(
            "network: rtt {:.1} ms, {}; {}\n",
            self.rtt_ms,
            crate::units::BitRate(self.bandwidth_bit_s),
            self.network
        );
        out += &format!(
            "per token: M = {} exchange(s), {} B up + {} B down in all\n",
            self.m, self.bytes_up, self.bytes_down
        );
        out += "| per token | T_dev ms | T_cloud ms | T_net ms | T ms |\n|---|---|---|---|---|\n";
        for (what, t) in [
            ("measured (agents' timing, network wall time)", self.measured),
            ("SPA formula, measured compute", self.formula),
            ("SPA formula, profiles' predicted compute", self.predicted),
        ] {
            out +=
                &format!("| {what} | {:.3} | {:.3} | {:.3} | {:.3} |\n", t.dev_ms, t.cloud_ms, t.net_ms, t.total_ms());
        }
        out += &format!("fastest token's T_net: {:.3} ms\n", self.net_min_ms);
        let heap = |p: Option<u64>| p.map_or("-".into(), |b| crate::units::human_bytes(b as f64));
        out += &format!(
            "peak heap: board {}, cloud {}; logits vs the unsplit model on the host: max |Δ| = {:e}\n",
            heap(self.board_peak_heap),
            heap(self.cloud_peak_heap),
            self.max_abs_logit_diff
        );
        out
    }
}
