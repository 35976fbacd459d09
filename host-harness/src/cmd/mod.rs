//! One module per subcommand: each runs its arguments through the library,
//! prints, and gives the exit code.

pub mod board;
pub mod calibrate;
pub mod compare;
pub mod eval;
pub mod export;
pub mod generate;
pub mod micro;
pub mod models;
pub mod plan;
pub mod profiles;
pub mod run;
pub mod split;
pub mod suite;
pub mod sweep;

use std::path::Path;

use anyhow::{Context, Result};

use edgehil::profile::{Profile, Profiles};
use edgehil::report::Status;
use edgehil::run::BoardOptions;

/// Exit codes: 0 all fit and ran; 1 host error; 2 usage; 3 a model did not fit; 4 a board failed;
/// 5 something regressed against the baseline.
pub const EXIT_DOES_NOT_FIT: u8 = 3;
pub const EXIT_BOARD_FAILED: u8 = 4;
pub const EXIT_REGRESSED: u8 = 5;

/// The boards a command runs on: the board of each engine, on each profile.
pub struct Boards {
    pub profiles: Vec<String>,
    pub boards: Vec<BoardOptions>,
}

impl Boards {
    /// `f` on each engine's board with each profile in turn (engines outer),
    /// as `run`, `generate`, `eval` and `sweep` go through them.
    pub fn each<T>(
        &self,
        profiles: &Profiles,
        mut f: impl FnMut(&BoardOptions, &Profile) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for board in &self.boards {
            for name in &self.profiles {
                out.push(f(board, profiles.get(name)?)?);
            }
        }
        Ok(out)
    }
}

/// The exit code of a status folded into the worst so far.
pub fn worse(code: u8, status: Status) -> u8 {
    match status {
        Status::Ok | Status::Skipped => code,
        Status::DoesNotFit => code.max(EXIT_DOES_NOT_FIT),
        Status::Failed => code.max(EXIT_BOARD_FAILED),
    }
}

/// Writes the reports as JSON if asked; the exit code of the worst status.
pub fn finish<R: serde::Serialize>(reports: Vec<(Status, R)>, json: Option<&Path>) -> Result<u8> {
    if let Some(path) = json {
        let all: Vec<&R> = reports.iter().map(|(_, r)| r).collect();
        let text = serde_json::to_string_pretty(&all).context("encoding the reports")?;
        write(path, text)?;
    }
    Ok(reports.iter().map(|(s, _)| *s).fold(0, worse))
}

/// Writes a file the user asked for, naming it in the error.
pub fn write(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
