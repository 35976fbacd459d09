//! Arbitrary text as a suite file: parse gives a suite or an error naming the
//! file and key, never a panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use edgehil::profile::Profiles;
use edgehil::suite::file::Suite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    static PROFILES: OnceLock<Profiles> = OnceLock::new();
    let profiles = PROFILES.get_or_init(|| Profiles::builtin().expect("built-in profiles"));
    let _ = Suite::parse(text, Path::new("fuzz.toml"), profiles);
});
