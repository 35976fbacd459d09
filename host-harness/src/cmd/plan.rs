//! `edgehil plan`.

use anyhow::Result;

use edgehil::plan::{self as planner, TaskChoice};
use edgehil::profile::Profiles;

use crate::cli::PlanArgs;

pub fn plan(args: PlanArgs, profiles: &Profiles) -> Result<u8> {
    let profile = profiles.get(&args.profile)?.with_cap(args.cap);
    let p = match args.task {
        TaskChoice::Lamp(task) => planner::plan_lamp(&profile, task, args.prompt_tokens)?,
        TaskChoice::Kind(task) => planner::plan(&profile, task, args.difficulty, args.prompt_tokens)?,
    };
    out!("{}", p.text());
    if let Some(path) = args.json {
        super::write(&path, serde_json::to_string_pretty(&p)?)?;
    }
    Ok(0)
}
