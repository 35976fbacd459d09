//! Embeds the repository's device profiles, so `edgehil` knows the study's
//! boards wherever the binary is run from.
use std::fmt::Write;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("device-profiles/ beside host-harness/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut code = String::from("pub const BUILTIN: &[(&str, &str)] = &[\n");
    for f in files {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        writeln!(code, "    ({stem:?}, include_str!({:?})),", f.canonicalize().unwrap().display().to_string()).unwrap();
    }
    code.push_str("];\n");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_profiles.rs");
    std::fs::write(out, code).unwrap();
}
