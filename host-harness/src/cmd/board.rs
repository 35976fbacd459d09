//! `edgehil board build`: the image a qemu: target boots.

use std::time::Instant;

use anyhow::Result;

use edgehil::board;
use edgehil::run;
use edgehil::units::human_bytes;
use edgehil_hil::{QemuArch, Target};

use crate::cli::BoardCmd;

pub fn board(command: BoardCmd) -> Result<u8> {
    match command {
        BoardCmd::Build { arch, agent } => {
            let agent = match (arch, agent) {
                (QemuArch::X86_64, None) => Some(run::agent_for(&Target::Qemu { arch })?),
                (_, agent) => agent,
            };
            let started = Instant::now();
            let image = board::build(arch, agent.as_deref())?;
            outln!(
                "{} image {} ({}, initramfs {}, ONNX Runtime {}) in {:.1} s",
                arch,
                image.dir.display(),
                image.kernel_package,
                human_bytes(image.initrd_bytes as f64),
                image.ort.as_deref().unwrap_or("absent"),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(0)
}
