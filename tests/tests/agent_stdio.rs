//! The agent also serves on stdin/stdout (a board reached over ssh or adb).

use crate::common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::*;
use edgehil_runtime::wire::{
    encode_frame, Command as Cmd, EngineKind, Event, FrameDecoder, OptLevel, Request, ToHost, PROTOCOL_VERSION,
};

#[test]
fn the_agent_answers_hello_and_shuts_down_on_stdio() {
    let mut child = Command::new(binary("edgehil-agent"))
        .args(["--stdio", "--cap", "1000000", "--threads", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (id, command) in [(1, Cmd::Hello { protocol_version: PROTOCOL_VERSION }), (2, Cmd::Shutdown)] {
        stdin.write_all(&encode_frame(&Request { id, command }).unwrap()).unwrap();
    }
    stdin.flush().unwrap();
    let mut bytes = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut bytes).unwrap();
    assert!(child.wait().unwrap().success());
    let mut answers = Vec::new();
    FrameDecoder::new().feed::<ToHost>(&bytes, |f| answers.push(f.unwrap()));
    match &answers[..] {
        [ToHost::Event { id: 1, seq: 0, event: Event::HelloAck(info) }, ToHost::Event { id: 2, seq: 0, event: Event::Done }] =>
        {
            assert_eq!(info.protocol_version, PROTOCOL_VERSION);
            assert_eq!(info.cap, 1_000_000);
            assert_eq!(info.cores, 2);
        }
        other => panic!("{other:?}"),
    }
}

/// A board outlives host sessions, and each session numbers requests from 1:
/// only the same request (id and command) is answered by a replay.
#[test]
fn a_new_request_with_an_old_id_is_served_not_replayed() {
    let mut child = Command::new(binary("edgehil-agent"))
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let load =
        |path: &str| Cmd::Load { path: path.into(), engine: EngineKind::Tract, opt_level: OptLevel::All, threads: 1 };
    for (id, command) in [
        (1, load("first-missing.onnx")),
        (1, load("first-missing.onnx")),
        (1, load("second-missing.onnx")),
        (2, Cmd::Shutdown),
    ] {
        stdin.write_all(&encode_frame(&Request { id, command }).unwrap()).unwrap();
    }
    stdin.flush().unwrap();
    let mut bytes = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut bytes).unwrap();
    child.wait().unwrap();
    let mut errors = Vec::new();
    FrameDecoder::new().feed::<ToHost>(&bytes, |f| {
        if let Ok(ToHost::Event { event: Event::Error(e), .. }) = f {
            errors.push(e.to_string());
        }
    });
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("first-missing.onnx") && errors[1] == errors[0], "{errors:?}");
    assert!(errors[2].contains("second-missing.onnx"), "{errors:?}");
}
