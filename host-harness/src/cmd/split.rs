//! `edgehil split`: cloud/device split inference over an emulated network.

use anyhow::{Context, Result};

use edgehil::profile::Profiles;
use edgehil::split::net::NetParams;
use edgehil::split::{html, split as run_split, sweep, Mode, SplitOptions};

use crate::cli::SplitArgs;

pub fn split(args: SplitArgs, profiles: &Profiles) -> Result<u8> {
    let cloud = profiles.get(&args.cloud_profile)?.clone();
    let work =
        args.work.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("edgehil-split-{}", std::process::id())));
    let mode = if args.layers_on_board.is_some() { Mode::Layer } else { args.mode };
    let net = NetParams { rtt: args.rtt, bits_per_s: args.bandwidth };
    let mut json = Vec::new();
    args.board.options()?.each(profiles, |board, profile| {
        let opts = SplitOptions {
            model: args.model.clone(),
            work: work.join(&profile.name),
            board: board.clone(),
            mode,
            k: args.layers_on_board,
            rank: args.rank,
            reduction: args.reduction,
            net,
            prompt: args.prompt_tokens,
            tokens: args.tokens,
            seed: args.seed,
        };
        if args.sweep {
            let report =
                sweep::sweep(&opts, profile, &cloud).with_context(|| format!("split sweep on {}", profile.name))?;
            out!("{}", report.table());
            if let Some(path) = &args.html {
                super::write(path, html::html(&args.model.display().to_string(), &report))?;
            }
            json.push(serde_json::to_value(&report)?);
        } else {
            let report = run_split(&opts, profile, &cloud).with_context(|| format!("split on {}", profile.name))?;
            out!("{}", report.table());
            json.push(serde_json::to_value(&report)?);
        }
        Ok(())
    })?;
    if args.work.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    if let Some(path) = &args.json {
        super::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(0)
}
