//! `edgehil run`: a model on each board, a table each.

use anyhow::{bail, Result};

use edgehil::profile::Profiles;
use edgehil::run::{self, RunOptions};

use crate::cli::RunArgs;

pub fn run(args: RunArgs, profiles: &Profiles) -> Result<u8> {
    let mut model = args.model.unwrap_or_else(|| edgehil_onnx::fixtures::dir().join("block.onnx"));
    if model.is_dir() {
        model = model.join("model.onnx");
    }
    if !model.is_file() {
        bail!("model {} does not exist", model.display());
    }
    let reports = args.board.options()?.each(profiles, |board, profile| {
        let opts = RunOptions {
            model: model.clone(),
            reference: args.reference.clone(),
            board: board.clone(),
            runs: args.runs,
            warmup: args.warmup,
            inputs: args.inputs.clone(),
            seed: args.seed,
            sequence: args.prompt_tokens,
            outputs: args.outputs,
        };
        let report = run::run(&opts, profile)?;
        outln!("{}", report.table());
        Ok((report.status, report))
    })?;
    super::finish(reports, args.json.as_deref())
}
