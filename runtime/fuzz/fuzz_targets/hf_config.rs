//! Arbitrary bytes as a Hugging Face `config.json`: reading must give a
//! config whose sizes export can use, or an error, never a panic.
#![no_main]

use edgehil_onnx::hf::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `Config::read` takes a path, as export does with a model folder.
    let path = std::env::temp_dir().join(format!("edgehil-fuzz-{}-config.json", std::process::id()));
    std::fs::write(&path, data).expect("scratch config file");
    if let Ok(config) = Config::read(&path) {
        let _ = (config.head_dim(), config.rotary_dims(), config.layer_prefix());
        // The per-layer tensor list is what export holds against the weights.
        let _ = config.layer_tensors(0);
    }
});
