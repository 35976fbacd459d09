//! `edgehil profiles list|show`.

use anyhow::Result;

use edgehil::listing::profiles_table;
use edgehil::profile::Profiles;

use crate::cli::ProfilesCmd;

pub fn profiles(command: ProfilesCmd, profiles: &Profiles) -> Result<u8> {
    match command {
        ProfilesCmd::List => out!("{}", profiles_table(profiles)),
        ProfilesCmd::Show { name } => out!("{}", profiles.get(&name)?.describe()),
    }
    Ok(0)
}
