//! Hugging Face folders: a written folder reads back; damaged ones are
//! errors naming the file and the tensor.

use std::path::PathBuf;

use edgehil_onnx::hf::{write_random, Arch, Config, HfError, HfModel};

fn tiny(arch: Arch) -> Config {
    let kv_heads = if arch == Arch::Llama { 2 } else { 4 };
    Config::new(arch, 32, 2, 4, kv_heads, 64, 50, 16, arch != Arch::GptNeox)
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn every_architecture_round_trips() {
    for arch in [Arch::Gpt2, Arch::GptNeox, Arch::Llama, Arch::Opt] {
        let d = dir(arch.name());
        let bytes = write_random(&tiny(arch), &d, 1).unwrap();
        let m = HfModel::open(&d).unwrap();
        assert_eq!(m.config, tiny(arch), "config.json reads back as written");
        m.check().unwrap();
        let st = m.tensors().unwrap();
        assert_eq!(st.len(), tiny(arch).tensors().len());
        assert_eq!(bytes, st.tensors().iter().map(|(_, t)| t.data().len() as u64).sum::<u64>());
    }
}

#[test]
fn damaged_folders_name_the_file_and_tensor() {
    let d = dir("damaged");
    write_random(&tiny(Arch::Llama), &d, 1).unwrap();
    let weights = d.join("model.safetensors");
    let config = d.join("config.json");
    let original = std::fs::read_to_string(&config).unwrap();

    // More layers in the config than in the weights: a missing tensor.
    std::fs::write(&config, original.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3")).unwrap();
    let e = HfModel::open(&d).unwrap().check().unwrap_err();
    assert!(matches!(e, HfError::MissingTensor { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: tensor `model.layers.2.input_layernorm.weight` is missing (llama with 3 layers needs it)",
            weights.display()
        )
    );

    // Fewer KV heads in the config: k_proj has the wrong shape.
    std::fs::write(&config, original.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 1")).unwrap();
    let e = HfModel::open(&d).unwrap().check().unwrap_err().to_string();
    assert!(e.contains("tensor `model.layers.0.self_attn.k_proj.weight` has shape [16, 32], expected [8, 32]"), "{e}");

    // Llama unties its embeddings unless the config says otherwise.
    std::fs::write(&config, original.replace("\"tie_word_embeddings\": true,", "")).unwrap();
    assert!(!Config::read(&config).unwrap().tied_embeddings);

    std::fs::write(&config, original.replace("\"llama\"", "\"mamba\"")).unwrap();
    let e = HfModel::open(&d).err().unwrap().to_string();
    assert!(e.contains("config.json: field `model_type`: `mamba` is not supported"), "{e}");

    std::fs::write(&config, original.replace("\"vocab_size\"", "\"vocab\"")).unwrap();
    let e = HfModel::open(&d).err().unwrap().to_string();
    assert!(e.contains("field `vocab_size` is missing"), "{e}");

    std::fs::write(&config, &original).unwrap();
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&weights).unwrap().set_len(len - 100).unwrap();
    let e = HfModel::open(&d).err().unwrap().to_string();
    assert!(e.starts_with(&format!("{}: not a valid safetensors file", weights.display())), "{e}");
}
