//! QEMU board images and booting them for a run.
//!
//! An image is Debian's cloud kernel and a busybox initramfs holding the
//! agent, ONNX Runtime and their shared libraries, built and cached by
//! `scripts/board-image.sh` (downloading packages, cross-building the aarch64
//! agent and packing the cpio are a shell's work; the VM itself is
//! `edgehil_hil::QemuBoard`). Images, kernels and console logs live under
//! the board cache: $EDGEHIL_BOARD_CACHE, or the repository's
//! `target/edgehil-boards`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgehil_hil::{HilError, QemuArch, QemuBoard, QemuConfig};

use crate::profile::Profile;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// the image script could not be started
    #[error("cannot run {script}: {cause}")]
    Spawn { script: PathBuf, cause: std::io::Error },
    /// the image script failed
    #[error("building the {arch} board image failed ({script} exited with {status}): {said}")]
    Script { arch: QemuArch, script: PathBuf, status: std::process::ExitStatus, said: String },
    /// the image folder lacks a file or a field of image.txt
    #[error("board image {dir}: {what}")]
    Image { dir: PathBuf, what: String },
}

/// A built image: `vmlinuz`, `initrd.gz` and `image.txt` in one folder.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardImage {
    pub arch: QemuArch,
    pub dir: PathBuf,
    /// The Debian package the kernel came from.
    pub kernel_package: String,
    pub initrd_bytes: u64,
    /// The ONNX Runtime version inside, if its wheel exists for the arch.
    pub ort: Option<String>,
}

impl BoardImage {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.gz")
    }

    fn read(arch: QemuArch, dir: PathBuf) -> Result<Self, BoardError> {
        let bad = |what: String| BoardError::Image { dir: dir.clone(), what };
        let manifest = std::fs::read_to_string(dir.join("image.txt")).map_err(|e| bad(format!("image.txt: {e}")))?;
        let field = |key: &str| {
            manifest
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| bad(format!("image.txt has no {key}=")))
        };
        let initrd_bytes =
            field("initrd_bytes")?.parse().map_err(|_| bad("image.txt: initrd_bytes is not a number".into()))?;
        let ort = Some(field("ort")?).filter(|v| v != "none");
        let image = BoardImage { arch, kernel_package: field("kernel")?, initrd_bytes, ort, dir: dir.clone() };
        for file in [image.kernel(), image.initrd()] {
            if !file.is_file() {
                return Err(bad(format!("{} is missing", file.display())));
            }
        }
        Ok(image)
    }
}

/// The repository this binary was built from: the image script and the cross build live there.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// Where images, kernels and console logs are kept.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("EDGEHIL_BOARD_CACHE").map_or_else(|| repo().join("target/edgehil-boards"), PathBuf::from)
}

/// Builds the image of `arch` (or finds it cached). `agent` is the x86_64
/// agent to put in; the aarch64 agent is cross-built by the script.
pub fn build(arch: QemuArch, agent: Option<&Path>) -> Result<BoardImage, BoardError> {
    let script = repo().join("scripts/board-image.sh");
    let mut cmd = Command::new(&script);
    cmd.arg(arch.name()).env("EDGEHIL_BOARD_CACHE", cache_dir());
    if let (QemuArch::X86_64, Some(agent)) = (arch, agent) {
        cmd.arg(agent);
    }
    let out = cmd.output().map_err(|cause| BoardError::Spawn { script: script.clone(), cause })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stderr.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
        return Err(BoardError::Script { arch, script, status: out.status, said });
    }
    let dir = stdout.lines().last().unwrap_or_default().trim();
    BoardImage::read(arch, PathBuf::from(dir))
}

/// Boots `image` as `profile`'s board: its total RAM, its cores; the agent
/// capped at `cap` with `threads` threads. The console log is a new file
/// under the cache's `logs/`.
pub fn boot(image: &BoardImage, profile: &Profile, cap: u64, threads: usize) -> Result<QemuBoard, HilError> {
    let logs = cache_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let console_log = logs.join(format!("{}-{}-{stamp}-{}.log", image.arch, profile.name, std::process::id()));
    let config = QemuConfig {
        arch: image.arch,
        kernel: image.kernel(),
        initrd: image.initrd(),
        ram_bytes: profile.ram_total.value.0,
        cores: profile.cores.value,
        agent_cap: cap,
        agent_threads: threads,
        console_log,
        boot_timeout: BOOT_TIMEOUT,
    };
    QemuBoard::boot(&config)
}

/// TCG boots Debian's cloud kernel in 5–10 s here when idle; a loaded
/// machine (four sessions on two cores) takes several times longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
