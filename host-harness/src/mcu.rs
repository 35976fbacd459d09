//! A run on a microcontroller board: the ONNX model compiled to a
//! micro-model for its flash, the firmware found, their flash bytes counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use edgehil_hil::MODEL_MAX_BYTES;
use edgehil_onnx::micro::compile_file;

use crate::run::RunError;
use crate::units::human_bytes;

/// The micro-model written for QEMU's loader; removed when dropped.
pub struct FlashImage {
    path: PathBuf,
    pub bytes: u64,
}

impl FlashImage {
    /// Compiles `model` to a micro-model in a file of its own.
    pub fn compile(model: &Path) -> Result<Self, RunError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let compiled = compile_file(model)?;
        let bytes = compiled.bytes.len() as u64;
        if bytes > MODEL_MAX_BYTES {
            return Err(RunError::Setup(format!(
                "the micro-model of {} takes {} of flash; the firmware's models region holds {}",
                model.display(),
                human_bytes(bytes as f64),
                human_bytes(MODEL_MAX_BYTES as f64)
            )));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("edgehil-{}-{n}.micro", std::process::id()));
        std::fs::write(&path, &compiled.bytes)
            .map_err(|e| RunError::Setup(format!("cannot write the micro-model {}: {e}", path.display())))?;
        Ok(FlashImage { path, bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FlashImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The firmware ELF: $EDGEHIL_FIRMWARE, or where scripts/firmware.sh puts it
/// (target/thumb, beside this executable's target/debug or target/release).
pub fn find_firmware() -> Result<PathBuf, RunError> {
    if let Some(p) = std::env::var_os("EDGEHIL_FIRMWARE") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| RunError::Setup(format!("cannot locate this executable: {e}")))?;
    let built = Path::new("thumb/thumbv7em-none-eabihf/release/edgehil-firmware");
    exe.ancestors().skip(2).take(2).map(|dir| dir.join(built)).find(|p| p.is_file()).ok_or_else(|| {
        RunError::Setup(format!(
            "cannot find the firmware near {}; build it with scripts/firmware.sh or set EDGEHIL_FIRMWARE",
            exe.display()
        ))
    })
}

/// Bytes of flash an ELF image takes: its loadable segments' file bytes
/// (code, read-only data and .data's initial values; .bss and the heap take none).
pub fn flash_bytes(elf: &Path) -> Result<u64, RunError> {
    let bad = |why: &str| RunError::Setup(format!("firmware {}: {why}", elf.display()));
    let bytes = std::fs::read(elf).map_err(|e| bad(&e.to_string()))?;
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    // A 32-bit little-endian ELF, as every Cortex-M image is.
    if bytes.get(..6) != Some(b"\x7fELF\x01\x01".as_slice()) {
        return Err(bad("not a 32-bit little-endian ELF file"));
    }
    let truncated = || bad("truncated program headers");
    let (phoff, phentsize, phnum) = (
        u32_at(0x1C).ok_or_else(truncated)? as usize,
        u16_at(0x2A).ok_or_else(truncated)?,
        u16_at(0x2C).ok_or_else(truncated)?,
    );
    (0..phnum).try_fold(0u64, |sum, i| {
        let at = phoff + i * phentsize;
        let (kind, filesz) = (u32_at(at).ok_or_else(truncated)?, u32_at(at + 16).ok_or_else(truncated)?);
        const PT_LOAD: u32 = 1;
        Ok(sum + if kind == PT_LOAD { u64::from(filesz) } else { 0 })
    })
}
