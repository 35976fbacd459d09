//! `edgehil eval`: task accuracy on each board.

use anyhow::Result;

use edgehil::eval::{eval as run_eval, EvalOptions};
use edgehil::profile::Profiles;

use crate::cli::EvalArgs;

pub fn eval(args: EvalArgs, profiles: &Profiles) -> Result<u8> {
    let reports = args.board.options()?.each(profiles, |board, profile| {
        let opts = EvalOptions {
            task: args.task.clone(),
            method: args.method,
            model: args.model.clone(),
            embedder: args.embedder.clone(),
            params: args.sampling.params(),
            history_fraction: args.history_fraction,
            chat: args.chat,
            stop_at_eos: true,
            board: board.clone(),
            journal: args.journal.clone(),
        };
        let report = run_eval(&opts, profile)?;
        outln!("{}", report.table());
        Ok((report.status, report))
    })?;
    super::finish(reports, args.json.as_deref())
}
