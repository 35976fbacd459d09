//! Models sent over the link: `edgehil run` on a board on a serial port
//! uploads the model folder once and reuses it by SHA-256; a damaged chunk
//! is sent again and the stored file is right; a file whose bytes do not
//! match its announced size or hash is refused, and one too big for a board
//! without storage is out of memory.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use edgehil_hil::testing::{Faults, FaultyLink};
use edgehil_hil::{Bundle, EmulatedBoard, EmulatorConfig, HilError, Session, Timeouts, UploadStep};
use edgehil_onnx::rng::SplitMix64;
use edgehil_runtime::wire::call::{self, Call};
use edgehil_runtime::wire::{AgentError, Hex, MemLimit, UPLOAD_CHUNK};

/// SHA-256 as `sha256sum` prints it.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

fn random_file(dir: &Path, name: &str, size: usize, seed: u64) -> PathBuf {
    let mut rng = SplitMix64::new(seed);
    let bytes: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// An emulated board (its own storage folder, or none: RAM) and a session after the handshake.
fn board(storage: bool, cap: u64) -> (EmulatedBoard, Timeouts) {
    let board = EmulatedBoard::spawn(&EmulatorConfig {
        agent: binary("edgehil-agent"),
        cap,
        threads: 1,
        ort_library: None,
        storage,
        extra_args: vec![],
    })
    .unwrap();
    // Each chunk answers within a millisecond: 300 ms of silence is a loss.
    (board, Timeouts { resend_after: Duration::from_millis(300), max_sends: 4, request: Duration::from_secs(60) })
}

/// `edgehil run` of `model` on a board on a serial port whose agent keeps uploads in `storage`; the report.
fn run_over_serial(model: &Path, storage: &Path, json: &Path) -> serde_json::Value {
    let board = RelayedBoard::start(&["--storage", storage.to_str().unwrap(), "--threads", "1"], 1);
    let target = format!("serial:{}", board.port);
    let o = Command::new(binary("edgehil"))
        .args(["run", "--model", model.to_str().unwrap(), "--target", &target, "--runs", "2", "--warmup", "0"])
        .args(["--prompt-tokens", "8", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    println!("{err}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    report[0].clone()
}

#[test]
fn edgehil_run_over_serial_uploads_a_model_folder_once_and_reuses_it_by_sha256() {
    let (model_dir, _) = export_to("gpt2", "upload", Default::default());
    let storage = scratch_dir("upload-storage");
    let model = model_dir.join("model.onnx");

    let first = run_over_serial(&model, &storage, &storage.with_extension("first.json"));
    assert_eq!(first["status"], "ok", "{first:#}");
    assert!(first["accuracy"][0]["cosine"].as_f64().unwrap() > 0.9999, "{:#}", first["accuracy"]);
    let up = &first["link"]["upload"];
    // The model, its external data and its tokenizer, all sent.
    assert_eq!((up["files"].as_u64(), up["reused"].as_u64()), (Some(3), Some(0)), "{up:#}");
    let sent: u64 = ["model.onnx", "model.onnx.data", "tokenizer.json"]
        .iter()
        .map(|f| std::fs::metadata(model_dir.join(f)).unwrap().len())
        .sum();
    assert_eq!(up["bytes_sent"].as_u64(), Some(sent));
    assert!(up["chunks"].as_u64().unwrap() >= sent / UPLOAD_CHUNK as u64, "{up:#}");
    let secs = up["seconds"].as_f64().unwrap();
    println!("upload: {sent} bytes in {secs:.3} s: {:.1} MB/s", sent as f64 / secs / 1e6);

    // On the board, one folder holds the three, each with the host's SHA-256.
    let folders: Vec<PathBuf> = std::fs::read_dir(&storage).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    for f in ["model.onnx", "model.onnx.data", "tokenizer.json"] {
        assert_eq!(sha256sum(&folders[0].join(f)), sha256sum(&model_dir.join(f)), "{f}");
    }

    // A new agent on the same storage: the board has them all, nothing is sent.
    let second = run_over_serial(&model, &storage, &storage.with_extension("second.json"));
    assert_eq!(second["status"], "ok", "{second:#}");
    let up = &second["link"]["upload"];
    assert_eq!((up["files"].as_u64(), up["reused"].as_u64()), (Some(3), Some(3)), "{up:#}");
    assert_eq!((up["chunks"].as_u64(), up["bytes_sent"].as_u64()), (Some(0), Some(0)), "{up:#}");
    assert_eq!(second["accuracy"], first["accuracy"]);
}

#[test]
fn a_damaged_chunk_is_sent_again_and_the_stored_file_is_right() {
    let dir = scratch_dir("upload-damaged");
    let local = random_file(&dir, "weights.bin", 5 * UPLOAD_CHUNK + 100, 3);
    let (emulated, timeouts) = board(true, 0);
    let storage = emulated.storage().unwrap().to_path_buf();
    let faults = Faults::default();
    let mut s = Session::new(Box::new(FaultyLink::new(emulated, faults.clone())), timeouts);
    s.hello().unwrap();
    // Host frames so far: Hello (0). Then Upload (1), chunks 0.. (2..): damage the
    // third chunk on its way out, and the board's answer to the fifth on its way back.
    faults.corrupt_sent(4);
    faults.corrupt_received(1 + 5);
    let bundle = Bundle::new(std::slice::from_ref(&local)).unwrap();
    let mut sent = 0;
    let done = s
        .upload(&bundle, |step| {
            if let UploadStep::Sent { bytes } = step {
                sent += bytes
            }
        })
        .unwrap();
    assert_eq!(done.chunks, 6, "a chunk sent again is one chunk");
    assert_eq!(sent, 5 * UPLOAD_CHUNK as u64 + 100);
    assert_eq!(s.stats.resends, 2, "{:?}", s.stats);
    let agent = s.stats().unwrap();
    assert_eq!((agent.bad_frames, agent.replays), (1, 1), "{agent:?}");
    let stored = PathBuf::from(&done.paths[0]);
    assert!(stored.starts_with(&storage), "{}", stored.display());
    assert_eq!(sha256sum(&stored), sha256sum(&local));
    // Nothing half-written is left beside it.
    let names: Vec<String> = std::fs::read_dir(stored.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["weights.bin"]);
    s.shutdown().unwrap();
}

#[test]
fn bytes_that_do_not_match_the_announced_hash_or_size_are_refused_naming_the_file() {
    let (emulated, timeouts) = board(true, 0);
    let storage = emulated.storage().unwrap().to_path_buf();
    let mut s = Session::new(Box::new(emulated), timeouts);
    s.hello().unwrap();
    let announced = [0x5a; 32];
    let open = call::Upload { folder: [1; 32], name: "model.onnx".into(), size: 5, sha256: announced };
    assert_eq!(s.call(open.clone(), |_| {}).unwrap().have, 0);
    let e = s.call(call::UploadChunk { offset: 0, bytes: b"hello".to_vec() }, |_| {}).unwrap_err();
    let text = e.to_string();
    // SHA-256 of "hello", as `sha256sum` gives it.
    let actual = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    assert!(text.contains("model.onnx") && text.contains(actual), "{text}");
    assert!(text.contains(&Hex(&announced).to_string()), "{text}");
    assert!(matches!(e, HilError::Agent { error: AgentError::UploadMismatch { size: 5, .. }, .. }), "{e:?}");

    // More bytes than announced: refused at the chunk that passes the size.
    let short = call::Upload { size: 3, ..open };
    s.call(short, |_| {}).unwrap();
    let text = s.call(call::UploadChunk { offset: 0, bytes: b"hello".to_vec() }, |_| {}).unwrap_err().to_string();
    assert!(text.contains("model.onnx") && text.contains("past the 3 bytes"), "{text}");
    // Neither left anything on the board, not even a temporary file.
    let folder = storage.join(Hex(&[1; 32]).to_string());
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    s.shutdown().unwrap();
}

#[test]
fn without_storage_uploads_are_held_in_ram_against_the_cap() {
    let dir = scratch_dir("upload-ram");
    let cap = 16 << 20;
    let (emulated, timeouts) = board(false, cap);
    let mut s = Session::new(Box::new(emulated), timeouts);
    let info = s.hello().unwrap();
    assert!(!info.storage);
    let before = s.stats().unwrap().heap_in_use;

    let fits = Bundle::new(&[random_file(&dir, "small.bin", 4 << 20, 5)]).unwrap();
    let done = s.upload(&fits, |_| {}).unwrap();
    let secs = done.elapsed.as_secs_f64();
    println!(
        "RAM-held upload: {} bytes in {secs:.3} s: {:.1} MB/s",
        done.bytes_sent,
        done.bytes_sent as f64 / secs / 1e6
    );
    assert_eq!(sha256sum(Path::new(&done.paths[0])), sha256sum(&fits.files[0].local));
    let held = s.stats().unwrap().heap_in_use - before;
    assert!(held >= 4 << 20, "the file's bytes count against the cap: {held} held");

    // 14 MiB more does not fit a 16 MiB cap that holds 4 already: refused before any byte is sent.
    let big = Bundle::new(&[random_file(&dir, "big.bin", 14 << 20, 6)]).unwrap();
    let mut chunks = 0;
    let e = s
        .upload(&big, |step| {
            if let UploadStep::Sent { .. } = step {
                chunks += 1
            }
        })
        .unwrap_err();
    match e {
        HilError::Agent { command, error: AgentError::OutOfMemory { requested, cap: c, limit, .. } } => {
            assert_eq!((command, requested, c, limit), (call::Upload::NAME, 14 << 20, cap, MemLimit::Heap));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(chunks, 0);
    // The board is still there, and its RAM store goes with it.
    let ram_dir = PathBuf::from(&done.paths[0]).parent().unwrap().parent().unwrap().to_path_buf();
    s.shutdown().unwrap();
    drop(s);
    assert!(!ram_dir.exists(), "{} is left behind", ram_dir.display());
}

#[test]
fn the_emulated_board_reads_the_hosts_files_unless_told_to_upload() {
    let dir = scratch_dir("upload-emu");
    let run = |upload: &str| {
        let json = dir.join(format!("{upload}.json"));
        let o = Command::new(binary("edgehil"))
            .args(["run", "--runs", "1", "--warmup", "0", "--upload", upload, "--json", json.to_str().unwrap()])
            .env("EDGEHIL_AGENT", binary("edgehil-agent"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        report[0]["link"].clone()
    };
    assert_eq!(run("auto").get("upload"), None, "emu reads the host's files");
    let up = run("always")["upload"].clone();
    assert_eq!((up["files"].as_u64(), up["reused"].as_u64()), (Some(1), Some(0)), "{up:#}");
    let block = std::fs::metadata(fixture("block.onnx")).unwrap().len();
    assert_eq!(up["bytes_sent"].as_u64(), Some(block));
}
