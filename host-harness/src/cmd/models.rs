//! `edgehil models list|train-cost|train-step|synth`.

use anyhow::{bail, Result};

use edgehil::catalog::CATALOG;
use edgehil::listing::models_table;
use edgehil::profile::Profiles;
use edgehil::run::find_agent;
use edgehil::train::{self, Calibration, LoraSetting};
use edgehil::units::human_bytes;

use crate::cli::ModelsCmd;

pub fn models(command: ModelsCmd, profiles: &Profiles) -> Result<u8> {
    match command {
        ModelsCmd::List { profile, cap, context } => {
            let profile = profile.map(|p| profiles.get(&p).map(|p| p.with_cap(cap))).transpose()?;
            out!("{}", models_table(profile.as_ref(), context));
        }
        ModelsCmd::TrainCost { profile, rank, tokens, checkpointing, night_hours } => {
            let calibration = Calibration::study(LoraSetting { rank, tokens, checkpointing });
            match profile {
                None => out!("{}", calibration.table()),
                Some(p) => out!("{}", train::profile_table(profiles.get(&p)?, &calibration, night_hours)),
            }
        }
        ModelsCmd::TrainStep { model, profile, cap, rank, tokens, steps } => {
            let profile = profiles.get(&profile)?;
            let setting = LoraSetting { rank, tokens, checkpointing: false };
            let constants = Calibration::study(setting).constants;
            let cap = cap.unwrap_or(profile.ram_usable.value.0);
            let step = train::measure_step(&find_agent()?, &model, profile, cap, &setting, steps, &constants)?;
            out!("{}", step.table());
        }
        ModelsCmd::Synth { name, out, seed } => {
            let Some(model) = CATALOG.iter().find(|m| m.name == name) else {
                bail!("no catalog model `{name}`; see `edgehil models list`");
            };
            let Some(config) = model.to_hf() else {
                let decoders: Vec<_> =
                    edgehil_onnx::arch::families().filter(|f| f.is_decoder()).map(|f| f.name()).collect();
                bail!("`{name}` is a {:?} model; synth writes {}", model.arch, decoders.join(", "));
            };
            let bytes = edgehil_onnx::hf::write_random(&config, &out, seed)?;
            outln!(
                "{}: {} parameters, {} of fp32 weights in {}",
                name,
                model.parameters(),
                human_bytes(bytes as f64),
                out.display()
            );
        }
    }
    Ok(0)
}
