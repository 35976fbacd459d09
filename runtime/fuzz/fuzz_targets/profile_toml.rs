//! Arbitrary text as a device profile: parse gives a profile or an error
//! naming the file and field, and a parsed profile writes TOML that parses
//! back and writes the same text again (figures keep twelve significant
//! digits, so the first write may round; none after it may change).
#![no_main]

use std::path::PathBuf;

use edgehil::profile::Profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // A profile's `name` must match its file name: take the file name from the
    // text, so the fuzzer reaches the checks after that one.
    let stem = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("name").and_then(|n| n.as_str().map(str::to_owned)))
        .filter(|n| !n.is_empty() && !n.contains(['/', '.']))
        .unwrap_or_else(|| "fuzz".into());
    let path = PathBuf::from(format!("device-profiles/{stem}.toml"));
    if let Ok(profile) = Profile::parse(text, &path) {
        let _ = profile.describe();
        let again = profile.to_toml().expect("a parsed profile encodes");
        let back = Profile::parse(&again, &path).expect("an encoded profile parses");
        assert_eq!(back.to_toml().expect("a parsed profile encodes"), again, "writing changed the profile again");
    }
});
