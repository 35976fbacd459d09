//! `edgehil`: the command line. Everything it does lives in the library;
//! `cli` holds the arguments, `cmd` one module per subcommand, and this file
//! parses, dispatches and maps outcomes to exit codes.

#[macro_use]
mod output;
mod cli;
mod cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use edgehil::profile::Profiles;

use cli::{Cli, Cmd, RunArgs, SuiteCmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("edgehil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    let profiles = Profiles::load(cli.profiles_dir.as_deref())?;
    // A suite's workers load the same folder: the suite has said it once.
    let worker = matches!(&cli.command, Some(Cmd::Suite { command: SuiteCmd::Worker { .. } }));
    for (name, file) in profiles.replaced().filter(|_| !worker) {
        errln!("edgehil: warning: {} replaces the built-in profile `{name}`", file.display());
    }
    match cli.command.unwrap_or(Cmd::Run(RunArgs::parse_from(["run"]))) {
        Cmd::Run(args) => cmd::run::run(args, &profiles),
        Cmd::Models { command } => cmd::models::models(command, &profiles),
        Cmd::Plan(args) => cmd::plan::plan(args, &profiles),
        Cmd::Generate(args) => cmd::generate::generate(args, &profiles),
        Cmd::Eval(args) => cmd::eval::eval(args, &profiles),
        Cmd::Sweep(args) => cmd::sweep::sweep(args, &profiles),
        Cmd::Export(args) => cmd::export::export(args),
        Cmd::Micro(args) => cmd::micro::micro(args),
        Cmd::Suite { command } => cmd::suite::suite(command, &profiles, cli.profiles_dir.as_deref()),
        Cmd::Compare(args) => cmd::compare::compare(args),
        Cmd::Profiles { command } => cmd::profiles::profiles(command, &profiles),
        Cmd::Calibrate(args) => cmd::calibrate::calibrate(args, &profiles),
        Cmd::Board { command } => cmd::board::board(command),
        Cmd::Split(args) => cmd::split::split(args, &profiles),
    }
}
