//! Arbitrary bytes as a model file, through the checks every engine's load
//! runs first (`engine::onnx::read`, then the id bounds): they must never
//! panic, whatever the protobuf holds.
#![no_main]

use edgehil_runtime::engine::onnx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A file of this process's own: `read` takes a path, as a board's load does.
    let path = std::env::temp_dir().join(format!("edgehil-fuzz-{}.onnx", std::process::id()));
    std::fs::write(&path, data).expect("scratch model file");
    if let Ok(proto) = onnx::read(&path) {
        let _ = onnx::index_bounds(&proto.graph.unwrap_or_default());
    }
});
