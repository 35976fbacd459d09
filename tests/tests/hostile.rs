//! Hostile input on the board and in the host reference: each test provokes
//! what used to crash or hang the agent or `edgehil` and checks the clear
//! error that replaces it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use edgehil_hil::{HilError, Session, Timeouts};
use edgehil_onnx::export::ExportOptions;
use edgehil_onnx::fixtures::{mlp, Precision};
use edgehil_runtime::engine::{self, LoadOptions};
use edgehil_runtime::wire::{AgentError, EngineKind, GenParams, OptLevel, OutputMode, Tensor, Values};

fn session() -> Session {
    emulated_session(Timeouts { resend_after: Duration::from_secs(2), max_sends: 3, request: Duration::from_secs(30) })
        .0
}

fn load(s: &mut Session, model: &Path) -> Result<edgehil_runtime::wire::LoadReport, HilError> {
    s.load(&model.display().to_string(), EngineKind::Tract, OptLevel::All, 1)
}

/// The agent's answer to a request that must fail: its error.
fn agent_error<T: std::fmt::Debug>(r: Result<T, HilError>) -> AgentError {
    match r {
        Err(HilError::Agent { error, .. }) => error,
        other => panic!("expected an error from the agent, got {other:?}"),
    }
}

/// The MLP fixture with its output renamed.
fn mlp_with_output(dir: &Path, name: &str, output: &str) -> PathBuf {
    let mut model = mlp(Precision::F32);
    let graph = model.graph.as_mut().unwrap();
    graph.output[0].name = output.to_string();
    if output.len() > 100 {
        // A long but real name: the node's output is renamed too.
        graph.node.last_mut().unwrap().output[0] = output.to_string();
    }
    let path = dir.join(name);
    edgehil_onnx::graph::write_model(&model, &path).unwrap();
    path
}

#[test]
fn a_graph_output_that_names_no_tensor_is_a_load_error_on_both_sides() {
    let path = mlp_with_output(&scratch_dir("dangling"), "dangling.onnx", "nowhere");
    let out = Command::new(binary("edgehil")).args(["run", "--model"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "a panic: {stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("graph output `nowhere` names no tensor of the graph"), "{stderr}");

    let mut s = session();
    let e = agent_error(load(&mut s, &path));
    assert!(e.to_string().contains("graph output `nowhere`"), "{e}");
    // The board goes on serving.
    load(&mut s, &fixture("mlp.onnx")).expect("the next load works");
}

/// GPT-2's tiny reference export, in a folder of the caller's (tests run in parallel).
fn lm(variant: &str) -> PathBuf {
    export_to("gpt2", variant, ExportOptions::default()).0
}

#[test]
fn token_and_position_ids_past_their_tables_are_input_errors_on_board_and_host() {
    let dir = lm("hostile-ids");
    let model = dir.join("model.onnx");
    let mut s = session();
    load(&mut s, &model).unwrap();
    s.set_prompt(&[1_000_000_000]).unwrap();
    let e = agent_error(s.generate(GenParams { max_new: 4, ..GenParams::STUDY }, |_, _, _| {}));
    assert!(e.to_string().contains("holds 1000000000 at index 0, outside the"), "{e}");
    // A good prompt still generates on the same board.
    s.set_prompt(&[1, 2, 3]).unwrap();
    let (tokens, _) = s.generate(GenParams { max_new: 4, ..GenParams::STUDY }, |_, _, _| {}).unwrap();
    assert_eq!(tokens.len(), 4);

    // The host reference, on both engines.
    for engine in EngineKind::ALL {
        let opts = LoadOptions { engine, opt_level: OptLevel::All, threads: 1, ort_library: Some(ort_library()) };
        let mut e = engine::load(&model, &opts).unwrap();
        let mut inputs = edgehil::inputs::seeded(&e.info().inputs, &edgehil::inputs::Seeded::new(1)).unwrap();
        let positions = inputs.iter_mut().find(|t| t.name == "position_ids").unwrap();
        let Values::I64(v) = &mut positions.values else { panic!("position ids are int64") };
        v[0] = 1 << 40;
        let err = e.set_inputs(&inputs).and_then(|()| e.run()).unwrap_err().to_string();
        // ONNX Runtime checks Gather's indices itself, in its own words.
        let says = match engine {
            EngineKind::Tract => "input `position_ids` holds 1099511627776 at index 0, outside the",
            EngineKind::Ort | EngineKind::Micro => "1099511627776",
        };
        assert!(err.contains(says), "{engine:?}: {err}");
    }
}

#[test]
fn answers_larger_than_a_frame_come_back_as_errors_and_the_board_goes_on() {
    let long = "o".repeat(9000);
    let path = mlp_with_output(&scratch_dir("long-name"), "long.onnx", &long);
    let mut s = session();
    let e = agent_error(load(&mut s, &path));
    assert!(e.to_string().contains("the answer (Loaded) takes"), "{e}");

    // An error that echoes a long path is cut, not lost.
    let far = format!("/nonexistent/{}/model.onnx", "d".repeat(5000));
    let e = agent_error(s.load(&far, EngineKind::Tract, OptLevel::All, 1));
    let e = e.to_string();
    assert!(e.contains("more bytes cut to fit one frame"), "{} bytes: {}", e.len(), &e[e.len() - 80..]);

    let dir = lm("hostile-frames");
    load(&mut s, &dir.join("model.onnx")).unwrap();
    let e = agent_error(s.set_prompt_text(&"漢".repeat(2700)));
    assert!(e.to_string().contains("the answer (Tokens) takes"), "{e}");
    assert!(!s.set_prompt_text("Hello").unwrap().is_empty(), "the board still tokenizes");
}

#[test]
fn loading_a_fifo_is_an_error_not_a_hang() {
    let dir = scratch_dir("fifo");
    let fifo = dir.join("model.onnx");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut s = session();
    let started = Instant::now();
    let e = agent_error(load(&mut s, &fifo));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn an_empty_staged_input_does_not_swallow_the_next_one() {
    let mut s = session();
    let loaded = load(&mut s, &fixture("mlp.onnx")).unwrap();
    let inputs = edgehil::inputs::seeded(&loaded.inputs, &edgehil::inputs::Seeded::new(1)).unwrap();
    let empty = Tensor { name: inputs[0].name.clone(), shape: vec![0], values: Values::F32(vec![]) };
    s.set_inputs(&[empty]).unwrap();
    s.set_inputs(&inputs).unwrap();
    let r = s.infer(1, 0, OutputMode::Digest, |_, _| {}).expect("the second staging replaced the empty tensor");
    assert_eq!(r.outputs.len(), 1);
}
