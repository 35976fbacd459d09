//! `edgehil plan`.

use anyhow::Result;

use edgehil::profile::Profiles;

use crate::cli::PlanArgs;

pub fn plan(args: PlanArgs, profiles: &Profiles) -> Result<u8> {
    let p = edgehil::plan::plan(profiles.get(&args.profile)?, args.task, args.difficulty, args.prompt_tokens)?;
    out!("{}", p.text());
    if let Some(path) = args.json {
        super::write(&path, serde_json::to_string_pretty(&p)?)?;
    }
    Ok(0)
}
