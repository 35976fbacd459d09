//! Files sent to a board over the link: a model and what its engine reads
//! beside it, checked by SHA-256 on the board.
//!
//! The files that go together (a model, its external data, its
//! tokenizer.json) land in one folder on the board, named by the SHA-256 of
//! their names and hashes: an engine finds the external data beside the
//! model, and the same files find the same folder on the next run, where
//! the board answers that it has them and nothing is sent. Each chunk is a
//! request of its own, so a chunk lost or damaged on the link is sent again
//! by the session like any request.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgehil_wire::call::{self, FileState};
use edgehil_wire::UPLOAD_CHUNK;
use sha2::{Digest, Sha256};

use crate::{HilError, Session};

/// One file of a [`Bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub local: PathBuf,
    /// Its name on the board: the local file name.
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Files that go on the board together, in one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub files: Vec<BundleFile>,
    /// The folder's name: the SHA-256 of the files' names and hashes.
    pub folder: [u8; 32],
}

impl Bundle {
    /// Reads and hashes `files`, which must have distinct file names.
    pub fn new(files: &[PathBuf]) -> Result<Bundle, HilError> {
        let mut out: Vec<BundleFile> = Vec::new();
        for local in files {
            let err = |reason: String| HilError::File { path: local.display().to_string(), reason };
            let name =
                local.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| err("not a file".into()))?;
            if out.iter().any(|f| f.name == name) {
                return Err(err(format!("two files named {name} would share the board's folder")));
            }
            let (size, sha256) = hash_file(local).map_err(|e| err(e.to_string()))?;
            out.push(BundleFile { local: local.clone(), name, size, sha256 });
        }
        let mut sorted: Vec<&BundleFile> = out.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut folder = Sha256::new();
        for f in sorted {
            folder.update(f.name.as_bytes());
            folder.update([0]);
            folder.update(f.sha256);
        }
        Ok(Bundle { files: out, folder: folder.finalize().into() })
    }
}

/// Size and SHA-256 of a file.
fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// What an upload is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadStep<'a> {
    /// The board holds this file already (same SHA-256): nothing is sent.
    Have { name: &'a str, size: u64 },
    /// This file's bytes go over the link.
    Send { name: &'a str, size: u64 },
    /// `bytes` more of it went over.
    Sent { bytes: u64 },
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uploaded {
    /// Each file's path on the board, in the bundle's order.
    pub paths: Vec<String>,
    /// Files the board held already.
    pub reused: u32,
    pub bytes_sent: u64,
    /// `UploadChunk` requests (a resend of one is not counted again).
    pub chunks: u64,
    pub elapsed: Duration,
}

impl Session {
    /// Puts `bundle` on the board, sending only the files it lacks; gives
    /// each file's path there. `on_step` sees each file and each chunk.
    pub fn upload(&mut self, bundle: &Bundle, mut on_step: impl FnMut(UploadStep)) -> Result<Uploaded, HilError> {
        let started = Instant::now();
        let mut done = Uploaded::default();
        for f in &bundle.files {
            let open = call::Upload { folder: bundle.folder, name: f.name.clone(), size: f.size, sha256: f.sha256 };
            let mut state = self.call(open, |_| {})?;
            if state.have == f.size {
                on_step(UploadStep::Have { name: &f.name, size: f.size });
                done.reused += 1;
            } else {
                on_step(UploadStep::Send { name: &f.name, size: f.size });
                state = self.send_file(f, state.have, &mut done, &mut on_step)?;
            }
            done.paths.push(state.path);
        }
        done.elapsed = started.elapsed();
        Ok(done)
    }

    /// Sends `f`'s bytes from `offset` on, chunk by chunk.
    fn send_file(
        &mut self,
        f: &BundleFile,
        mut offset: u64,
        done: &mut Uploaded,
        on_step: &mut impl FnMut(UploadStep),
    ) -> Result<FileState, HilError> {
        let err = |reason: String| HilError::File { path: f.local.display().to_string(), reason };
        let mut file = File::open(&f.local).map_err(|e| err(e.to_string()))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(|e| err(e.to_string()))?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            let want = (f.size - offset).min(UPLOAD_CHUNK as u64) as usize;
            file.read_exact(&mut buf[..want]).map_err(|e| err(format!("{e} at byte {offset} of {}", f.size)))?;
            let state = self.call(call::UploadChunk { offset, bytes: buf[..want].to_vec() }, |_| {})?;
            done.chunks += 1;
            done.bytes_sent += want as u64;
            offset += want as u64;
            on_step(UploadStep::Sent { bytes: want as u64 });
            if state.have != offset {
                return Err(HilError::Unexpected {
                    command: <call::UploadChunk as call::Call>::NAME,
                    event: format!("the board holds {} bytes of {} after {offset} were sent", state.have, f.name),
                });
            }
            if offset == f.size {
                return Ok(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn the_folder_is_named_by_the_files_names_and_contents_not_their_order_or_place() {
        let base = std::env::temp_dir().join(format!("edgehil-bundle-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let one = Bundle::new(&[write(&a, "model.onnx", b"graph"), write(&a, "model.onnx.data", b"weights")]).unwrap();
        let moved =
            Bundle::new(&[write(&b, "model.onnx.data", b"weights"), write(&b, "model.onnx", b"graph")]).unwrap();
        assert_eq!(one.folder, moved.folder);
        // SHA-256 of "graph", as `sha256sum` gives it.
        assert_eq!(
            edgehil_wire::Hex(&one.files[0].sha256).to_string(),
            "eef93e1d14482804277fca0172464032d1a4fdbcc338524059fa1e861454ad4d"
        );
        assert_eq!(one.files[1].size, 7);
        let changed =
            Bundle::new(&[write(&b, "model.onnx", b"graph"), write(&b, "model.onnx.data", b"weightz")]).unwrap();
        assert_ne!(one.folder, changed.folder);
        let renamed = Bundle::new(&[write(&b, "model.onnx", b"graph"), write(&b, "other.data", b"weights")]).unwrap();
        assert_ne!(one.folder, renamed.folder);
        let twice = Bundle::new(&[a.join("model.onnx"), b.join("model.onnx")]).unwrap_err().to_string();
        assert!(twice.contains("two files named model.onnx"), "{twice}");
        let missing = Bundle::new(&[a.join("nothing")]).unwrap_err().to_string();
        assert!(missing.contains("cannot upload") && missing.contains("nothing"), "{missing}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
