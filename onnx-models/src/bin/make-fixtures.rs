//! Writes the fixture models into onnx-models/fixtures (or the folder given).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os().nth(1).map_or_else(edgehil_onnx::fixtures::dir, PathBuf::from);
    for path in edgehil_onnx::fixtures::write_all(&dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
