//! Hugging Face folders: a written folder reads back; damaged ones are
//! errors naming the file and the tensor.

use std::path::PathBuf;

use edgehil_onnx::arch::ModelFamily;
use edgehil_onnx::hf::{write_random, Config, HfError, HfModel};

/// A tiny configuration of the family of `model_type`.
fn tiny(model_type: &str) -> Config {
    let family = ModelFamily::lookup(model_type).unwrap();
    let kv_heads = if model_type == "llama" { 2 } else { 4 };
    Config::new(family, 32, 2, 4, kv_heads, 64, 50, 16, model_type != "gpt_neox")
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn every_architecture_round_trips() {
    for arch in ["gpt2", "gpt_neox", "llama", "opt"] {
        let d = dir(arch);
        let bytes = write_random(&tiny(arch), &d, 1).unwrap();
        let m = HfModel::open(&d).unwrap();
        assert_eq!(m.config, tiny(arch), "config.json reads back as written");
        m.check().unwrap();
        let file = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        assert_eq!(st.len(), tiny(arch).tensors().len());
        assert_eq!(bytes, st.tensors().iter().map(|(_, t)| t.data().len() as u64).sum::<u64>());
    }
}

#[test]
fn damaged_folders_name_the_file_and_tensor() {
    let d = dir("damaged");
    write_random(&tiny("llama"), &d, 1).unwrap();
    let weights = d.join("model.safetensors");
    let config = d.join("config.json");
    let original = std::fs::read_to_string(&config).unwrap();

    // More layers in the config than in the weights: the layer count and the first missing tensor.
    std::fs::write(&config, original.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3")).unwrap();
    let e = HfModel::open(&d).err().unwrap();
    assert!(matches!(e, HfError::LayerCount { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: field `num_hidden_layers` = 3 does not match {}, which holds the tensors of 2 layers \
             (tensor `model.layers.2.input_layernorm.weight` is missing)",
            config.display(),
            weights.display()
        )
    );

    // A tensor missing inside a layer the weights hold.
    let st_bytes = std::fs::read(&weights).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = {
        let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
        st.tensors().into_iter().filter(|(n, _)| n != "model.layers.1.mlp.up_proj.weight").collect()
    };
    let partial = dir("damaged-partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("config.json"), &original).unwrap();
    safetensors::serialize_to_file(kept, None, &partial.join("model.safetensors")).unwrap();
    let e = HfModel::open(&partial).unwrap().check().unwrap_err();
    assert!(matches!(e, HfError::MissingTensor { .. }), "{e}");
    assert!(e.to_string().contains("tensor `model.layers.1.mlp.up_proj.weight` is missing"), "{e}");

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

/// A copy of the reference folder `name` (onnx-models/reference) with
/// config.json's `"key": value` replaced by `"key": to` (or added when absent).
fn reference_with(name: &str, key: &str, to: &str) -> PathBuf {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference").join(name);
    let tag: String = format!("{key}-{to}").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let d = dir(&format!("ref-{name}-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(from.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    json[key] = serde_json::from_str(to).unwrap();
    std::fs::write(d.join("config.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    d
}

#[test]
fn zero_or_inconsistent_sizes_are_errors_naming_the_file_and_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("gpt2", "n_head", "0", "field `n_head` = 0: expected a positive whole number"),
        ("gpt2", "n_embd", "0", "field `n_embd` = 0: expected a positive whole number"),
        ("gpt2", "n_layer", "0", "field `n_layer` = 0: expected a positive whole number"),
        ("gpt2", "n_inner", "0", "field `n_inner` = 0: expected a positive whole number"),
        ("gpt2", "n_positions", "0", "field `n_positions` = 0: expected a positive whole number"),
        ("gpt2", "vocab_size", "0", "field `vocab_size` = 0: expected a positive whole number"),
        ("gpt2", "n_head", "3", "field `n_head` = 3: expected a divisor of `n_embd` = 64"),
        ("gpt2", "n_head", "128", "field `n_head` = 128: expected a divisor of `n_embd` = 64"),
        ("gpt2", "num_key_value_heads", "2", "field `num_key_value_heads` = 2: expected `n_head` = 4"),
        ("gpt2", "n_embd", "4294967296", "field `n_embd` = 4294967296: expected at most 2147483647"),
        ("opt", "num_attention_heads", "0", "field `num_attention_heads` = 0: expected a positive whole number"),
        ("opt", "ffn_dim", "0", "field `ffn_dim` = 0: expected a positive whole number"),
        ("neox", "num_attention_heads", "5", "field `num_attention_heads` = 5: expected a divisor of `hidden_size`"),
        (
            "neox",
            "rope_parameters",
            r#"{"partial_rotary_factor": 0.0, "rope_type": "default"}"#,
            "field `rope_parameters.partial_rotary_factor` = 0: expected a share above 0 and at most 1",
        ),
        (
            "neox",
            "rope_parameters",
            r#"{"partial_rotary_factor": 0.1, "rope_type": "default"}"#,
            "field `rope_parameters.partial_rotary_factor` = 0.1 gives 1 rotary dimensions of each head's 16 \
             (`hidden_size` / `num_attention_heads`): expected an even number, at least 2",
        ),
        (
            "neox",
            "rope_parameters",
            r#"{"rope_theta": -5, "rope_type": "default"}"#,
            "field `rope_parameters.rope_theta` = -5: expected a positive number",
        ),
        ("llama-gqa", "num_key_value_heads", "0", "field `num_key_value_heads` = 0: expected a positive whole number"),
        (
            "llama-gqa",
            "num_key_value_heads",
            "3",
            "field `num_key_value_heads` = 3: expected a divisor of `num_attention_heads` = 4",
        ),
        (
            "llama-gqa",
            "num_attention_heads",
            "8",
            "field `head_dim` = 16: expected `hidden_size` / `num_attention_heads` = 8",
        ),
        ("llama-gqa", "head_dim", "8", "field `head_dim` = 8: expected `hidden_size` / `num_attention_heads` = 16"),
        ("llama-gqa", "intermediate_size", "0", "field `intermediate_size` = 0: expected a positive whole number"),
        (
            "llama-gqa",
            "max_position_embeddings",
            "1000000000000",
            "field `max_position_embeddings` = 1000000000000: expected at most 2147483647",
        ),
        (
            "llama-gqa",
            "max_position_embeddings",
            "1073741824",
            "field `max_position_embeddings` = 1073741824: expected at most 33554432",
        ),
        ("llama-gqa", "rms_norm_eps", "-1.0", "field `rms_norm_eps` = -1: expected a number of at least 0"),
    ];
    for (model, key, to, expected) in cases {
        let d = reference_with(model, key, to);
        let config = d.join("config.json");
        let e = Config::read(&config).err().unwrap_or_else(|| panic!("{model} {key} = {to} was accepted"));
        assert!(matches!(e, HfError::Config { .. }), "{e}");
        let e = e.to_string();
        assert!(e.starts_with(&format!("{}: ", config.display())), "{e}");
        assert!(e.contains(expected), "{model} {key} = {to}:\n{e}\nhas no `{expected}`");
        // Opening the folder gives the same error, not a panic.
        assert_eq!(HfModel::open(&d).err().unwrap().to_string(), e);
    }
    // The references themselves are fine.
    for model in ["gpt2", "neox", "opt", "llama-gqa", "llama-tied"] {
        let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference").join(model);
        HfModel::open(&from).unwrap().check().unwrap();
    }
}

#[test]
fn a_layer_count_the_weights_do_not_hold_fails_before_allocating() {
    let d = reference_with("gpt2", "n_layer", "1000000000");
    let started = std::time::Instant::now();
    let e = HfModel::open(&d).err().unwrap();
    assert!(matches!(e, HfError::LayerCount { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: field `n_layer` = 1000000000 does not match {}, which holds the tensors of 2 layers \
             (tensor `h.2.ln_1.weight` is missing)",
            d.join("config.json").display(),
            d.join("model.safetensors").display()
        )
    );
    // The export fails the same way, before anything in proportion to a billion layers.
    let out = dir("billion-layers-out");
    let e = edgehil_onnx::export::export(&d, &out, Default::default()).err().unwrap().to_string();
    assert!(e.contains("field `n_layer` = 1000000000 does not match"), "{e}");
    assert!(!out.exists());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());

    // Fewer layers in the config than in the weights: the first tensor past them.
    let d = reference_with("llama-gqa", "num_hidden_layers", "1");
    let e = HfModel::open(&d).err().unwrap().to_string();
    assert!(e.contains("field `num_hidden_layers` = 1 does not match"), "{e}");
    assert!(e.contains("which holds the tensors of 2 layers"), "{e}");
    assert!(e.contains("(tensor `model.layers.1.input_layernorm.weight` is past the last layer)"), "{e}");
}

#[test]
fn shape_products_do_not_wrap() {
    use edgehil_onnx::hf::elements;
    assert_eq!(elements(&[1 << 62, 4]), None);
    assert_eq!(elements(&[u64::MAX, 1]), Some(u64::MAX));
    assert_eq!(elements(&[3, 0, 1 << 63]), Some(0));
    assert_eq!(elements(&[]), Some(1));
}

/// A copy of the sharded reference folder with its index rewritten by `edit`.
fn sharded_with(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference").join("llama-sharded");
    let d = dir(&format!("sharded-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, d.join(path.file_name().unwrap())).unwrap();
    }
    let index = d.join("model.safetensors.index.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&index, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    d
}

#[test]
fn sharded_checkpoints_read_through_their_index_and_name_a_wrong_shard() {
    let d = sharded_with("as-saved", |_| {});
    let m = HfModel::open(&d).unwrap();
    m.check().unwrap();
    let shards = m.weight_files();
    assert_eq!(shards.len(), 4, "the index and three shards: {shards:?}");
    assert_eq!(m.read_f32("lm_head.weight").unwrap().len(), 512 * 32);

    // The index sends a tensor to a shard that does not hold it.
    let d = sharded_with("misplaced", |j| {
        j["weight_map"]["lm_head.weight"] = "model-00001-of-00003.safetensors".into();
    });
    let e = HfModel::open(&d).unwrap().check().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not a valid safetensors file: model.safetensors.index.json places tensor `lm_head.weight` in this shard, which does not hold it",
            d.join("model-00001-of-00003.safetensors").display()
        )
    );

    // A shard the index names is not in the folder.
    let d = sharded_with("missing", |j| {
        j["weight_map"]["lm_head.weight"] = "model-00004-of-00003.safetensors".into();
    });
    let e = HfModel::open(&d).err().unwrap();
    assert!(matches!(e, HfError::Io { .. }), "{e}");
    assert!(e.to_string().starts_with(&d.join("model-00004-of-00003.safetensors").display().to_string()), "{e}");

    // A tensor the index does not list is missing, named with the index.
    let d = sharded_with("unlisted", |j| {
        j["weight_map"].as_object_mut().unwrap().remove("model.norm.weight");
    });
    let e = HfModel::open(&d).unwrap().check().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: tensor `model.norm.weight` is missing (llama with 2 layers needs it)",
            d.join("model.safetensors.index.json").display()
        )
    );

    // A shard name that leaves the folder is refused before anything is opened.
    let d = sharded_with("escape", |j| {
        j["weight_map"]["lm_head.weight"] = "../model-00003-of-00003.safetensors".into();
    });
    let e = HfModel::open(&d).err().unwrap();
    assert!(e.to_string().contains("expected the file name of a shard in this folder"), "{e}");
}

#[test]
fn values_the_new_families_do_not_follow_are_refused_naming_the_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "gemma",
            "attention_bias",
            "true",
            "field `attention_bias`: true is not supported (attention without biases only)",
        ),
        (
            "phi",
            "qk_layernorm",
            "true",
            "field `qk_layernorm`: true is not supported (Phi without per-head q/k norms only)",
        ),
        (
            "stablelm",
            "qk_layernorm",
            "true",
            "field `qk_layernorm`: true is not supported (StableLM without per-head q/k norms only)",
        ),
        (
            "mistral",
            "sliding_window",
            "0",
            "field `sliding_window`: 0 is not supported (expected a positive window or null)",
        ),
    ];
    for (name, key, to, expected) in cases {
        let d = reference_with(name, key, to);
        let e = HfModel::open(&d).err().unwrap_or_else(|| panic!("{name} {key} = {to} is read"));
        assert_eq!(e.to_string(), format!("{}: {expected}", d.join("config.json").display()), "{name}");
    }
    // A null window is no window: Mistral v0.2 and later.
    let d = reference_with("mistral", "sliding_window", "null");
    assert_eq!(HfModel::open(&d).unwrap().config.sliding_window, None);
}
