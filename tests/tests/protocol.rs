//! The wire protocol: every message round-trips, the decoder survives any
//! bytes, and the bytes of one example of each message are pinned.

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use edgehil_onnx::rng::SplitMix64;
use edgehil_runtime::wire::*;

fn random_bytes(rng: &mut SplitMix64, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// The variant name of a message, from its Debug form ("Event { id: .." → "Event", with the event's name).
fn variant(debug: &str) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
        .take(2)
        .collect::<Vec<_>>()
        .join("::")
}

fn round_trip<T>(seed_count: u64, size: usize) -> BTreeSet<String>
where
    T: for<'a> Arbitrary<'a> + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut rng = SplitMix64::new(42);
    let mut seen = BTreeSet::new();
    for _ in 0..seed_count {
        let bytes = random_bytes(&mut rng, size);
        let Ok(msg) = T::arbitrary(&mut Unstructured::new(&bytes)) else {
            continue;
        };
        let Ok(frame) = encode_frame(&msg) else {
            continue;
        }; // too large for one frame
        assert!(frame.len() <= MAX_FRAME);
        assert_eq!(frame.iter().filter(|b| **b == 0).count(), 1, "only the delimiter is zero");
        let mut got = Vec::new();
        FrameDecoder::new().feed::<T>(&frame, |r| got.push(r));
        // NaN payloads compare unequal; compare the re-encoding instead.
        match &got[..] {
            [Ok(back)] => {
                assert!(back == &msg || encode_frame(back).unwrap() == frame, "{msg:?} came back as {back:?}")
            }
            other => panic!("{msg:?} decoded as {other:?}"),
        }
        seen.insert(variant(&format!("{msg:?}")));
    }
    seen
}

#[test]
fn every_request_round_trips() {
    let seen = round_trip::<Request>(3000, 256);
    for name in [
        "Hello",
        "Load",
        "SetInput",
        "Infer",
        "SetPrompt",
        "SetPromptText",
        "Detokenize",
        "Generate",
        "LoadEmbedder",
        "IndexAdd",
        "IndexClear",
        "Retrieve",
        "Upload",
        "UploadChunk",
        "Stats",
        "Unload",
        "Shutdown",
        "Resend",
    ] {
        assert!(seen.iter().any(|s| s.ends_with(name)), "no {name} among {seen:?}");
    }
}

#[test]
fn every_event_round_trips() {
    let seen = round_trip::<ToHost>(6000, 256);
    for name in [
        "HelloAck",
        "Loaded",
        "Run",
        "Output",
        "InferDone",
        "Token",
        "GenerateDone",
        "Tokens",
        "Text",
        "Indexed",
        "Retrieved",
        "Stored",
        "Stats",
        "Done",
        "Error",
        "Heartbeat",
    ] {
        assert!(seen.iter().any(|s| s.ends_with(name)), "no {name} among {seen:?}");
    }
}

#[test]
fn the_decoder_survives_any_bytes() {
    let mut rng = SplitMix64::new(7);
    let mut decoder = FrameDecoder::new();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..2000 {
        let n = (rng.next_u64() % 300) as usize;
        let mut bytes = random_bytes(&mut rng, n);
        if rng.next_u64().is_multiple_of(4) {
            bytes.extend(encode_frame(&Request { id: 1, command: Command::Stats }).unwrap());
        }
        decoder.feed::<Request>(&bytes, |r| if r.is_ok() { ok += 1 } else { bad += 1 });
    }
    assert!(ok > 0 && bad > 0, "{ok} good and {bad} bad frames");
}

#[test]
fn an_oversized_frame_is_reported_once_and_the_next_one_decodes() {
    let mut bytes = vec![1u8; MAX_FRAME + 10];
    bytes.push(0);
    bytes.extend(encode_frame(&Request { id: 9, command: Command::Unload }).unwrap());
    let mut got = Vec::new();
    FrameDecoder::new().feed::<Request>(&bytes, |r| got.push(r));
    assert_eq!(got, vec![Err(FrameError::TooLong), Ok(Request { id: 9, command: Command::Unload })]);
}

/// One example of every message; a change to any of them shows in review.
#[test]
fn message_bytes() {
    let tensor = TensorChunk { name: "x".into(), shape: vec![1, 2], offset: 0, values: Values::F32(vec![1.0, -2.0]) };
    let requests = vec![
        Command::Hello { protocol_version: PROTOCOL_VERSION },
        Command::Load { path: "m.onnx".into(), engine: EngineKind::Tract, opt_level: OptLevel::All, threads: 4 },
        Command::SetInput { index: 0, chunk: tensor.clone() },
        Command::Infer { runs: 10, warmup: 2, outputs: OutputMode::TopK(5) },
        Command::SetPrompt { offset: 0, ids: vec![1, 300, 70_000] },
        Command::SetPromptText { text: "Hi".into() },
        Command::Detokenize { ids: vec![300] },
        Command::Generate(GenParams { seed: 7, eos: Some(2), ..GenParams::STUDY }),
        Command::LoadEmbedder { path: "e.onnx".into(), engine: EngineKind::Tract, threads: 2 },
        Command::IndexAdd { ids: vec![101, 7592, 102] },
        Command::IndexClear,
        Command::Retrieve { ids: vec![101, 102], k: 3 },
        Command::Stats,
        Command::Unload,
        Command::Shutdown,
        Command::Resend {
            missing: Missing { seqs: vec![1, 3], from: 5 },
            command: Box::new(Command::Infer { runs: 10, warmup: 2, outputs: OutputMode::Full }),
        },
        Command::Upload { folder: [0xf0; 32], name: "model.onnx".into(), size: 9000, sha256: [0xab; 32] },
        Command::UploadChunk { offset: 8064, bytes: vec![1, 2, 3] },
    ];
    let info = TensorInfo { name: "y".into(), dtype: DType::F32, shape: vec![None, Some(10)] };
    let events = vec![
        ToHost::Heartbeat { id: 3, elapsed_ms: 250 },
        ToHost::Event {
            id: 1,
            seq: 0,
            event: Event::HelloAck(BoardInfo {
                protocol_version: PROTOCOL_VERSION,
                agent_version: "0.1.0".into(),
                arch: "aarch64".into(),
                cores: 6,
                ram_total: 8 << 30,
                ram_free: 6 << 30,
                cap: 6 << 30,
                engines: vec![EngineKind::Tract, EngineKind::Ort],
                storage: true,
                clock_hz: 0,
                flash_total: 0,
            }),
        },
        ToHost::Event {
            id: 2,
            seq: 0,
            event: Event::Loaded(LoadReport {
                engine: EngineKind::Ort,
                opt_level: OptLevel::Basic,
                threads: 2,
                load_nanos: 1_500_000,
                weight_bytes: 36_000,
                peak_heap: 100_000,
                peak_rss: 9_000_000,
                inputs: vec![info.clone()],
                outputs: vec![info],
            }),
        },
        ToHost::Event {
            id: 4,
            seq: 0,
            event: Event::Run { index: 0, warmup: true, nanos: 41_000, cycles: Some(1_025_000) },
        },
        ToHost::Event { id: 4, seq: 1, event: Event::Output(OutputPart::Chunk { index: 0, chunk: tensor }) },
        ToHost::Event {
            id: 4,
            seq: 2,
            event: Event::Output(OutputPart::TopK {
                index: 0,
                name: "y".into(),
                shape: vec![1, 3],
                row: 0,
                indices: vec![2],
                values: vec![0.5],
            }),
        },
        ToHost::Event {
            id: 4,
            seq: 3,
            event: Event::Output(OutputPart::Digest {
                index: 0,
                name: "y".into(),
                shape: vec![2],
                digest: Digest::of(&[1.0, 2.0]),
            }),
        },
        ToHost::Event {
            id: 4,
            seq: 4,
            event: Event::InferDone(InferReport { runs: 10, peak_heap: 1000, peak_rss: 2000 }),
        },
        ToHost::Event { id: 11, seq: 0, event: Event::Tokens { ids: vec![1, 300] } },
        ToHost::Event { id: 12, seq: 0, event: Event::Text("Hi".into()) },
        ToHost::Event { id: 13, seq: 0, event: Event::Indexed { items: 4, bytes: 6144, peak_heap: 90 << 20 } },
        ToHost::Event {
            id: 14,
            seq: 0,
            event: Event::Retrieved { items: vec![2, 0, 3], scores: vec![0.5, 0.25, 0.125] },
        },
        ToHost::Event { id: 10, seq: 0, event: Event::Token { index: 0, id: 300, nanos: 2_000_000 } },
        ToHost::Event {
            id: 10,
            seq: 1,
            event: Event::GenerateDone(GenReport {
                prompt_tokens: 3,
                generated: 1,
                prefill_nanos: 1_900_000,
                first_token_nanos: 2_000_000,
                decode_nanos: 0,
                kv_bytes: 4096,
                peak_heap: 1 << 20,
                peak_rss: 8 << 20,
                stop: StopReason::Eos,
            }),
        },
        ToHost::Event {
            id: 5,
            seq: 0,
            event: Event::Stats(AgentStats {
                requests: 5,
                bad_frames: 1,
                replays: 1,
                heap_in_use: 10,
                peak_heap: 20,
                peak_rss: 30,
                cap: 40,
            }),
        },
        ToHost::Event { id: 6, seq: 0, event: Event::Done },
        ToHost::Event {
            id: 7,
            seq: 0,
            event: Event::Error(AgentError::OutOfMemory {
                requested: 4096,
                in_use: 200_000,
                cap: 204_800,
                limit: MemLimit::Heap,
            }),
        },
        ToHost::Event { id: 8, seq: 0, event: Event::Error(AgentError::VersionMismatch { agent: 2, host: 1 }) },
        ToHost::Event { id: 9, seq: 0, event: Event::Error(AgentError::ModelLoad("no such file".into())) },
        ToHost::Event { id: 15, seq: 0, event: Event::Stored { path: "/s/f0f0/model.onnx".into(), have: 8067 } },
        ToHost::Event {
            id: 16,
            seq: 0,
            event: Event::Error(AgentError::UploadMismatch {
                name: "model.onnx".into(),
                size: 9000,
                expected: Box::new([0xab; 32]),
                actual: Box::new([0xcd; 32]),
            }),
        },
        ToHost::Event { id: 17, seq: 0, event: Event::Error(AgentError::Storage("disk full".into())) },
    ];
    let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    for (i, c) in requests.into_iter().enumerate() {
        let msg = Request { id: i as u32 + 1, command: c };
        out += &format!("{msg:?}\n  {}\n", hex(encode_frame(&msg).unwrap()));
    }
    for msg in events {
        out += &format!("{msg:?}\n  {}\n", hex(encode_frame(&msg).unwrap()));
    }
    insta::assert_snapshot!(out);
}
