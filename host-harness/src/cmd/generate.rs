//! `edgehil generate`: streamed text on each board, then its table.

use anyhow::Result;

use edgehil::generate::{generate as run_generate, GenerateOptions, Streamer, TextTokenizer};
use edgehil::profile::Profiles;

use crate::cli::GenerateArgs;

pub fn generate(args: GenerateArgs, profiles: &Profiles) -> Result<u8> {
    let boards = args.board.options()?;
    let tokenizer = TextTokenizer::load(&args.model)?;
    let prompt = if args.chat { tokenizer.chat_prompt(&args.prompt)? } else { args.prompt.clone() };
    let reports = boards.each(profiles, |board, profile| {
        let opts = GenerateOptions {
            model: args.model.clone(),
            reference: args.reference.clone(),
            text: args.text.clone(),
            prompt: prompt.clone(),
            params: args.sampling.params(),
            stop_at_eos: !args.ignore_eos,
            tokenize_on_board: args.tokenize_on_board,
            reps: args.reps,
            board: board.clone(),
        };
        outln!("{} ({}): {}", profile.name, opts.board.engine.name(), opts.prompt);
        let mut streamer = Streamer::new(&tokenizer, std::io::stdout());
        let report = run_generate(&opts, profile, |id| streamer.push(id))?;
        outln!("\n\n{}", report.table());
        Ok((report.status, report))
    })?;
    super::finish(reports, args.json.as_deref())
}
