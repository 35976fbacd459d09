//! The `edgehil` command as a user runs it.

use crate::common;

use std::process::{Command, Output};

use common::*;

fn edgehil(args: &[&str]) -> Output {
    Command::new(binary("edgehil")).args(args).env("EDGEHIL_AGENT", binary("edgehil-agent")).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn the_main_job_runs_on_defaults() {
    let o = edgehil(&[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("block.onnx on jetson-orin-nano (emu, tract, opt all)"), "{out}");
    for line in
        ["status     fits", "latency    min", "predicted  ", "memory     peak heap", "accuracy   output", "link       "]
    {
        assert!(out.contains(line), "no `{line}` in\n{out}");
    }
}

#[test]
fn a_board_too_small_exits_3_and_the_next_board_still_runs() {
    let dir = scratch_dir("cli-oom");
    let json = dir.join("reports.json");
    let block = fixture("block.onnx");
    let o = edgehil(&[
        "run",
        "--model",
        block.to_str().unwrap(),
        "--profile",
        "nrf52840-dk",
        "--profile",
        "raspberry-pi-5",
        "--runs",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(out.contains("does not fit: needed >= ") && out.contains("cap 200.0 KiB (heap cap)"), "{out}");
    let reports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(reports[0]["profile"], "nrf52840-dk");
    assert_eq!(reports[0]["status"], "does_not_fit");
    assert_eq!(reports[1]["profile"], "raspberry-pi-5");
    assert_eq!(reports[1]["status"], "ok");
    assert_eq!(reports[1]["latency_ms"]["runs"], 3);
}

#[test]
fn profiles_list() {
    let o = edgehil(&["profiles", "list"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!(text(&o).0);
}

#[test]
fn profiles_show_gives_every_figure_with_its_source() {
    let (out, _) = text(&edgehil(&["profiles", "show", "galaxy-s24-ultra"]));
    for field in ["cores", "clock", "ram_total", "ram_usable", "peak_fp32", "peak_int8", "bandwidth", "call_overhead"] {
        assert!(out.contains(&format!("\n{field}")), "no {field} in\n{out}");
    }
    assert_eq!(out.matches("source: ").count(), 8, "{out}");
    let (_, err) = text(&edgehil(&["profiles", "show", "pixel-9"]));
    assert!(err.contains("no device profile named `pixel-9`; known: esp32-s3-psram,"), "{err}");
}

/// Writes a team profile: the Jetson's with one line changed.
fn team_profile(name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let dir = scratch_dir(&format!("profiles-{name}"));
    let jetson = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles/jetson-orin-nano.toml"),
    )
    .unwrap();
    let text = edit(jetson.replace("name = \"jetson-orin-nano\"", &format!("name = \"{name}\"")));
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    dir
}

#[test]
fn a_teams_profiles_dir_adds_boards() {
    let dir = team_profile("lab-orin", |t| t);
    let (out, _) = text(&edgehil(&["--profiles-dir", dir.to_str().unwrap(), "profiles", "list"]));
    assert!(out.lines().any(|l| l.starts_with("lab-orin ")), "{out}");
}

#[test]
fn bad_profiles_are_errors_naming_file_and_field() {
    // A profile's name, the edit that breaks it, and what the error must say.
    type Case = (&'static str, fn(String) -> String, &'static [&'static str]);
    let cases: [Case; 4] = [
        (
            "typo",
            |t| t.replace("bandwidth =", "bandwith ="),
            &["typo.toml", "unknown field `bandwith`", "expected one of"],
        ),
        (
            "unit",
            |t| t.replace("\"68 GB/s\"", "\"68 GB\""),
            &["unit.toml", "bandwidth", "unit `GB` in `68 GB` is not a unit of bandwidth: expected one of MB/s, GB/s"],
        ),
        (
            "usable",
            |t| t.replace("\"6.5 GiB\"", "\"9 GiB\""),
            &["usable.toml", "field `ram_usable`", "is more than ram_total"],
        ),
        (
            "nosource",
            |t| t.replace(", source = \"estimate\", reasoning = \"fixed", ", reasoning = \"fixed"),
            &["nosource.toml", "missing field `source`"],
        ),
    ];
    for (name, edit, wanted) in cases {
        let dir = team_profile(name, edit);
        let o = edgehil(&["--profiles-dir", dir.to_str().unwrap(), "profiles", "list"]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{name}: no `{w}` in\n{err}");
        }
    }
}

#[test]
fn a_serial_port_that_is_not_there_fails_the_run_clearly() {
    let (out, _) = text(&edgehil(&["run", "--target", "serial:/dev/ttyEDGEHIL-none@115200", "--runs", "1"]));
    assert!(out.contains("status     failed") && out.contains("cannot open serial port /dev/ttyEDGEHIL-none"), "{out}");
    let o = edgehil(&["run", "--target", "usb0"]);
    assert!(text(&o).1.contains("bad target `usb0`"), "{:?}", text(&o));
}

#[test]
fn models_list_with_fit_on_a_profile() {
    let o = edgehil(&["models", "list", "--profile", "jetson-orin-nano", "--context", "1024"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!(text(&o).0);
}

#[test]
fn lora_training_cost_against_the_study_and_on_a_board() {
    let o = edgehil(&["models", "train-cost"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    insta::assert_snapshot!("train_cost_study_fit", text(&o).0);
    let o = edgehil(&["models", "train-cost", "--profile", "jetson-orin-nano", "--rank", "16", "--checkpointing"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    insta::assert_snapshot!("train_cost_on_jetson_orin_nano", text(&o).0);
}

#[test]
fn a_lora_training_step_on_the_emulated_board_beside_its_estimate() {
    use edgehil::train::{measure_step, Calibration, LoraSetting};
    let nano = profile("jetson-orin-nano");
    let setting = LoraSetting { rank: 8, tokens: 64, checkpointing: false };
    let constants = Calibration::study(setting).constants;
    let agent = binary("edgehil-agent");
    let dir = reference("llama-gqa");
    let step = measure_step(&agent, &dir, &nano, nano.ram_usable.value.0, &setting, 3, &constants).unwrap();
    let (m, e) = (&step.measured, &step.estimate);
    // A and B on q (64 → 64) and k, v (64 → 32) of 2 layers at rank 8.
    assert_eq!((m.trainable, e.trainable), (5120, 5120));
    // The frozen fp32 weights the agent holds are the estimate's, to the allocator's slack.
    assert!((m.base_bytes as f64 / e.weights as f64 - 1.0).abs() < 0.02, "{} vs {}", m.base_bytes, e.weights);
    // What the backward pass keeps a layer (x, h, q, k, v, h·Aᵀ, the attention
    // probabilities, the residual, gate and up, 1/rms twice) and the logits.
    let (t, d, heads, kv, hd, inter, vocab) = (64u64, 64, 4, 2, 16, 128, 512);
    let kept = 2 * (3 * t * d + 3 * t * 8 + t * heads * hd + 2 * t * kv * hd + heads * t * t + 2 * t * inter + 2 * t)
        + t * vocab;
    let activations = m.peak_heap - m.base_bytes - 16 * 5120;
    assert!((4 * kept..=4 * kept * 3 / 2).contains(&activations), "{activations} B against {} B kept", 4 * kept);
    // The estimate's constants are the study's PyTorch on an A10: above the agent's heap even without its runtime.
    assert!(m.peak_heap < e.peak - e.runtime && e.peak - e.runtime < 20 * m.peak_heap, "{m:?} {e:?}");
    assert!(m.step_seconds > 0.0 && m.step_seconds < e.seconds_per_sample, "{m:?} {e:?}");
    assert!(m.losses.windows(2).all(|w| w[1] < w[0]), "AdamW lowers the sample's loss: {:?}", m.losses);

    let o = edgehil(&["models", "train-step", "--model", dir.to_str().unwrap(), "--profile", "jetson-orin-nano"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    insta::with_settings!({filters => vec![
        // The measured column and the losses.
        (r"(?m)^(.{28}) ( *\d[\d.]*(?: \w+)?)( .{12})$", "$1   [measured]$3"),
        (r"loss over the steps: .*", "loss over the steps: [losses]"),
    ]}, {
        insta::assert_snapshot!(text(&o).0);
    });
    // A cap the step does not fit in is said as such.
    let o = edgehil(&[
        "models",
        "train-step",
        "--model",
        dir.to_str().unwrap(),
        "--profile",
        "jetson-orin-nano",
        "--cap",
        "1 MiB",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("out of memory: the training step needs more than the cap of 1.0 MiB"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn plan_follows_the_studys_scores_for_every_profile_and_lamp_task() {
    let mut all = String::new();
    for profile in
        ["iphone-12", "iphone-15", "jetson-orin-nano", "jetson-orin-nx-16gb", "galaxy-s24-ultra", "raspberry-pi-5"]
    {
        for task in 1..=7 {
            let o = edgehil(&["plan", "--profile", profile, "--task", &format!("LaMP-{task}")]);
            assert_eq!(o.status.code(), Some(0), "{profile} LaMP-{task}: {:?}", text(&o));
            all += &text(&o).0;
        }
    }
    insta::assert_snapshot!(all);
    let o = edgehil(&["plan", "--profile", "jetson-orin-nano", "--task", "LaMP-9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("unknown task `LaMP-9`: expected LaMP-1 … LaMP-7, classification or generation"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn plan_shows_choice_reasons_and_fit() {
    let o = edgehil(&["plan", "--profile", "jetson-orin-nano", "--task", "generation", "--difficulty", "medium"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    insta::assert_snapshot!(text(&o).0);
    let o = edgehil(&["plan", "--profile", "nrf52840-dk", "--task", "classification"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no catalog model fits nrf52840-dk's 200.0 KiB usable RAM"), "{:?}", text(&o));
}

fn reference(name: &str) -> std::path::PathBuf {
    edgehil_onnx::fixtures::dir().parent().unwrap().join("reference").join(name)
}

/// A copy of a reference model folder, with `edit` applied to its files.
fn damaged(name: &str, edit: impl Fn(&std::path::Path)) -> std::path::PathBuf {
    let dir = scratch_dir("bad-export").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(reference("llama-gqa").join(f), dir.join(f)).unwrap();
    }
    edit(&dir);
    dir
}

fn edit_config(dir: &std::path::Path, from: &str, to: &str) {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} not in config.json");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn export_of_bad_input_names_the_file_and_tensor_and_writes_nothing() {
    let truncated = damaged("truncated", |d| {
        let p = d.join("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    let missing = damaged("missing", |d| edit_config(d, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"));
    let shape = damaged("shape", |d| edit_config(d, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4"));
    let arch = damaged("arch", |d| edit_config(d, "\"model_type\": \"llama\"", "\"model_type\": \"mamba\""));
    let rope = damaged("rope", |d| edit_config(d, "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\""));
    let billion =
        damaged("billion", |d| edit_config(d, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1000000000"));
    let no_heads = damaged("no-heads", |d| edit_config(d, "\"num_attention_heads\": 4", "\"num_attention_heads\": 0"));
    let adapter = reference("llama-gqa-lora");
    let cases: Vec<(std::path::PathBuf, Vec<&str>, Vec<String>)> = vec![
        (
            truncated.clone(),
            vec![],
            vec![truncated.join("model.safetensors").display().to_string(), "not a valid safetensors file".into()],
        ),
        (missing.clone(), vec![], vec!["tensor `model.layers.2.input_layernorm.weight` is missing".into()]),
        (
            shape.clone(),
            vec![],
            vec!["tensor `model.layers.0.self_attn.k_proj.weight` has shape [32, 64], expected [64, 64]".into()],
        ),
        (
            arch.clone(),
            vec![],
            vec![arch.join("config.json").display().to_string(), "field `model_type`: `mamba` is not supported".into()],
        ),
        (rope.clone(), vec![], vec!["field `rope_parameters`".into(), "only plain RoPE is exported".into()]),
        (
            billion.clone(),
            vec![],
            vec![
                billion.join("config.json").display().to_string(),
                "field `num_hidden_layers` = 1000000000 does not match".into(),
                "which holds the tensors of 2 layers (tensor `model.layers.2.input_layernorm.weight` is missing)"
                    .into(),
            ],
        ),
        (
            no_heads.clone(),
            vec![],
            vec![
                no_heads.join("config.json").display().to_string(),
                "field `num_attention_heads` = 0: expected a positive whole number".into(),
            ],
        ),
        (
            reference("gpt2"),
            vec!["--lora", adapter.to_str().unwrap()],
            vec![
                adapter.join("adapter_model.safetensors").display().to_string(),
                "module `model.layers.0.mlp.down_proj` does not exist in the base model".into(),
            ],
        ),
        (
            reference("gpt2"),
            vec!["--quant", "int4", "--block", "64"],
            vec!["tract runs MatMulNBits as 4-bit only with block 32".into()],
        ),
    ];
    for (i, (input, extra, expected)) in cases.iter().enumerate() {
        let parent = scratch_dir("bad-export-out").join(i.to_string());
        std::fs::create_dir_all(&parent).unwrap();
        let out = parent.join("model");
        let mut args = vec!["export", input.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(extra);
        let o = edgehil(&args);
        let (stdout, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}\n{stdout}\n{err}");
        for e in expected {
            assert!(err.contains(e.as_str()), "{args:?}: no `{e}` in\n{err}");
        }
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0, "{args:?} left files in {}", parent.display());
    }
}

#[test]
fn export_writes_the_folder_and_its_manifest() {
    let out = scratch_dir("export-cli").join("llama-int4-lora");
    let lora = reference("llama-gqa-lora");
    let o = edgehil(&[
        "export",
        reference("llama-gqa").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quant",
        "int4",
        "--lora",
        lora.to_str().unwrap(),
    ]);
    let (stdout, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{err}");
    assert!(stdout.contains("LoRA r=4 merged into 14 modules"), "{stdout}");
    let mut files: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    files.sort();
    assert_eq!(files, ["edgehil.json", "model.onnx", "model.onnx.data", "tokenizer.json"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("edgehil.json")).unwrap()).unwrap();
    insta::assert_json_snapshot!("export_manifest", manifest, {
        ".producer" => "[version]",
        ".sources[].file" => "[path]",
        ".lora.adapter" => "[path]",
    });
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error_not_a_crash() {
    let (dir, manifest) = export_to("gpt2", "cli-context", Default::default());
    let o = edgehil(&["run", "--model", dir.to_str().unwrap(), "--prompt-tokens", "1000", "--runs", "1"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let expected = format!(
        "a 1000-token prompt is longer than the model's context of {} positions",
        manifest.config.max_positions
    );
    assert!(err.contains(&expected) && !err.contains("panicked"), "{err}");
}

#[test]
fn onnx_runtime_over_the_cap_does_not_fit_with_the_cap_given_and_a_need_above_it() {
    use edgehil::units::human_bytes;
    let dir = scratch_dir("cli-ort-cap");
    let model = fixture("block-int8.onnx");
    let ort = |cap: Option<u64>, json: &std::path::Path| {
        let mut args =
            vec!["run", "--model", model.to_str().unwrap(), "--engine", "ort", "--runs", "2", "--warmup", "0"];
        let cap = cap.map(|c| c.to_string());
        if let Some(c) = &cap {
            args.extend(["--cap", c.as_str()]);
        }
        args.extend(["--json", json.to_str().unwrap()]);
        let o = Command::new(binary("edgehil"))
            .args(&args)
            .env("EDGEHIL_AGENT", binary("edgehil-agent"))
            .env("EDGEHIL_ORT_LIBRARY", ort_library())
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        (o, report[0].clone())
    };
    let (o, uncapped) = ort(None, &dir.join("uncapped.json"));
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let peak = uncapped["memory"]["peak_rss"].as_u64().unwrap();

    // Under the measured peak (the process data limit lets it through), then far under it (refused).
    for cap in [peak / 10 * 9, 100 * 1024] {
        let (o, r) = ort(Some(cap), &dir.join(format!("cap-{cap}.json")));
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(3), "cap {cap}: {out}\n{err}");
        assert_eq!(r["status"], "does_not_fit", "cap {cap}: {r:#}");
        let m = &r["memory"];
        assert_eq!(m["fits"], false, "{m:#}");
        assert_eq!(m["cap_bytes"].as_u64(), Some(cap), "the cap given: {m:#}");
        let needed = m["needed_at_least"].as_u64().unwrap();
        assert!(needed > cap, "a need above the cap: {needed} against {cap}");
        let cap_text = format!("cap {} (process data limit)", human_bytes(cap as f64));
        assert!(out.contains("status     does not fit: needed") && out.contains(&cap_text), "{cap_text}: {out}");
        assert!(!out.contains("status     fits"), "{out}");
    }
}

#[test]
fn finding_onnx_runtime_does_not_run_python_files_of_the_working_folder() {
    let dir = scratch_dir("cli-ort-isolated");
    let marker = dir.join("imported");
    std::fs::write(
        dir.join("onnxruntime.py"),
        format!("open({:?}, 'w').write('the working folder ran')\n", marker.display().to_string()),
    )
    .unwrap();
    let model = fixture("mlp.onnx");
    let o = Command::new(binary("edgehil"))
        .args(["run", "--model", model.to_str().unwrap(), "--engine", "ort", "--runs", "1", "--warmup", "0"])
        .current_dir(&dir)
        .env("EDGEHIL_AGENT", binary("edgehil-agent"))
        .env_remove("EDGEHIL_ORT_LIBRARY")
        .env_remove("PYTHONSAFEPATH")
        .output()
        .unwrap();
    assert!(!marker.exists(), "python ran {}", dir.join("onnxruntime.py").display());
    // The installed wheel is still found.
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn a_closed_stdout_ends_quietly() {
    use std::process::Stdio;
    for args in [&["profiles", "list"][..], &["models", "list"][..]] {
        let mut child =
            Command::new(binary("edgehil")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // The reader has gone before anything is printed, as `| head -1` would after its line.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn outputs_digest_shows_whether_the_digests_match() {
    let model = fixture("mlp.onnx");
    let o = edgehil(&["run", "--model", model.to_str().unwrap(), "--outputs", "digest", "--runs", "1"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let row = out.lines().skip_while(|l| !l.starts_with("  accuracy")).nth(1).unwrap_or_default();
    assert!(row.trim_start().starts_with("logits") && row.contains(" match ("), "{out}");
    assert!(!row.contains(" - "), "{out}");
}

#[test]
fn a_team_profile_with_a_built_in_name_says_it_replaces_it() {
    let dir = team_profile("jetson-orin-nano", |t| t);
    let (out, err) = text(&edgehil(&["--profiles-dir", dir.to_str().unwrap(), "profiles", "list"]));
    let file = dir.join("jetson-orin-nano.toml");
    assert!(err.contains(&format!("{} replaces the built-in profile `jetson-orin-nano`", file.display())), "{err}");
    assert!(out.lines().any(|l| l.starts_with("jetson-orin-nano ")), "{out}");
    let dir = team_profile("lab-orin", |t| t);
    let (_, err) = text(&edgehil(&["--profiles-dir", dir.to_str().unwrap(), "profiles", "list"]));
    assert!(!err.contains("replaces"), "a new name replaces nothing: {err}");
}

#[test]
fn export_replaces_only_an_earlier_export_and_never_its_source() {
    let root = scratch_dir("export-out-guard");
    // A copy of the source, in a parent folder of its own.
    let parent = root.join("models");
    let src = parent.join("gpt2");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(reference("gpt2").join(f), src.join(f)).unwrap();
    }
    let source_files = || {
        let mut f: Vec<String> =
            std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        f.sort();
        f
    };
    let before = source_files();
    let export = |out: &std::path::Path, force: bool| {
        let mut args = vec!["export", src.to_str().unwrap(), "--out", out.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        let o = edgehil(&args);
        let (stdout, err) = text(&o);
        (o.status.code(), format!("{stdout}\n{err}"))
    };

    // The source folder itself, and a folder containing it: refused, --force or not.
    for (out, what) in [(&src, "the source folder"), (&parent, "a folder that contains the source folder")] {
        for force in [false, true] {
            let (code, text) = export(out, force);
            assert_eq!(code, Some(1), "{} force={force}: {text}", out.display());
            assert!(text.contains(&format!("refusing to replace {what}")), "{text}");
            assert_eq!(source_files(), before, "the source was touched");
        }
    }
    // The same through a path that is not spelled like the source.
    let dotted = src.join("..").join("gpt2");
    let (code, text) = export(&dotted, true);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refusing to replace the source folder"), "{text}");

    // A user's folder: refused without --force, its files kept.
    let users = root.join("my-notes");
    std::fs::create_dir_all(&users).unwrap();
    std::fs::write(users.join("notes.txt"), "mine").unwrap();
    let (code, text) = export(&users, false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is not empty and holds no edgehil.json"), "{text}");
    assert!(text.contains("--force"), "{text}");
    assert_eq!(std::fs::read_to_string(users.join("notes.txt")).unwrap(), "mine");
    // A file: refused too.
    let file = root.join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let (code, text) = export(&file, false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is not a folder"), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    // With --force the user's folder is replaced.
    let (code, text) = export(&users, true);
    assert_eq!(code, Some(0), "{text}");
    assert!(users.join("edgehil.json").is_file());
    assert!(!users.join("notes.txt").exists());

    // An earlier export, or an empty folder, is replaced without --force.
    let (code, text) = export(&users, false);
    assert_eq!(code, Some(0), "{text}");
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, text) = export(&empty, false);
    assert_eq!(code, Some(0), "{text}");
    assert!(empty.join("model.onnx").is_file());
    assert_eq!(source_files(), before);
    // Nothing left beside the outputs.
    let mut left: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, ["a-file", "empty", "models", "my-notes"]);
}

#[test]
fn micro_compiles_a_fixture_and_prints_flash_and_ram() {
    let out_file = scratch_dir("cli-micro").join("ds-cnn-int8.micro");
    let model = fixture("ds-cnn-int8.onnx");
    let o = edgehil(&["micro", model.to_str().unwrap(), "--out", out_file.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let written = std::fs::metadata(&out_file).unwrap().len();
    assert!(out.contains("flash ") && out.contains(&format!("({written} B; weights ")), "{out}");
    assert!(out.contains("B activation arena; largest live set "), "{out}");
    let block = fixture("block.onnx");
    let o = edgehil(&["micro", block.to_str().unwrap(), "--out", out_file.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("LayerNormalization is not an op of the micro engine"), "{err}");
}
