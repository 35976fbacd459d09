//! `edgehil sweep`: llama-bench's table over models, boards and tests.

use anyhow::Result;

use edgehil::profile::Profiles;
use edgehil::sweep::{render, sweep as run_sweep};

use crate::cli::SweepArgs;

pub fn sweep(args: SweepArgs, profiles: &Profiles) -> Result<u8> {
    let per_board = args.board.options()?.each(profiles, |board, profile| {
        let mut rows = Vec::new();
        for model in &args.models {
            errln!("{} on {} with {}…", model.display(), profile.name, board.engine.name());
            rows.extend(run_sweep(model, profile, board, &args.tests, args.reps)?);
        }
        Ok(rows)
    })?;
    let rows: Vec<_> = per_board.into_iter().flatten().collect();
    let table = render(&rows, args.format);
    out!("{table}");
    if let Some(path) = &args.out {
        super::write(path, &table)?;
    }
    Ok(rows.iter().map(|r| r.status).fold(0, super::worse))
}
