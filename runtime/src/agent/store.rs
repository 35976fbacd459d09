//! Files uploaded over the link (`Upload`, then `UploadChunk`s).
//!
//! A file goes to `ROOT/FOLDER/NAME`, FOLDER being the hex of the 32 bytes
//! the host names it by (the SHA-256 of the names and hashes of the files
//! that go together). Bytes are hashed as they arrive and written under a
//! temporary name; only when the last byte is in and the SHA-256 matches is
//! the file renamed to its path, so a file at its path is always whole and
//! right, and an engine never reads half a file. A file already at its path
//! with the announced size and SHA-256 is not asked for again.
//!
//! With `--storage DIR` the root is DIR and files outlive the agent. Without
//! it the board has no storage: the root is a folder of the agent's own in
//! the temporary folder (RAM on a board that boots from an initramfs) that
//! goes with the agent, and every byte held there counts against the heap
//! cap, so an upload that does not fit is refused as `OutOfMemory`.

use std::boxed::Box;
use std::collections::BTreeMap;
use std::format;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::string::{String, ToString};

use sha2::{Digest, Sha256};

use crate::cap::CappedAlloc;
use crate::sys::MapLarge;
use crate::wire::{AgentError, Event, Hex, MemLimit};

pub(super) struct Store {
    root: PathBuf,
    /// Held in RAM: the bytes of each stored file count against the cap.
    ram: bool,
    /// Per path, the bytes counted against the cap (RAM only).
    held: BTreeMap<PathBuf, u64>,
    receiving: Option<Receiving>,
}

/// The upload in progress.
struct Receiving {
    name: String,
    size: u64,
    sha256: [u8; 32],
    path: PathBuf,
    part: PathBuf,
    file: File,
    hasher: Sha256,
    have: u64,
    /// Bytes counted against the cap for it (RAM only).
    held: u64,
}

impl Store {
    /// Files under `storage`, or held in RAM if there is none.
    pub(super) fn new(storage: Option<PathBuf>) -> Self {
        let ram = storage.is_none();
        let root =
            storage.unwrap_or_else(|| std::env::temp_dir().join(format!("edgehil-agent-{}", std::process::id())));
        Store { root, ram, held: BTreeMap::new(), receiving: None }
    }

    /// Opens the upload of `name`; answers with its path and whether the
    /// board holds it already (`have == size`).
    pub(super) fn start(
        &mut self,
        alloc: &CappedAlloc<MapLarge>,
        folder: &[u8; 32],
        name: String,
        size: u64,
        sha256: [u8; 32],
    ) -> Result<Event, AgentError> {
        self.abort(alloc);
        check_name(&name)?;
        let dir = self.root.join(Hex(folder).to_string());
        let path = dir.join(&name);
        let shown = path.display().to_string();
        if holds(&path, size, &sha256) {
            return Ok(Event::Stored { path: shown, have: size });
        }
        // What a file already at the path counts is let go when the new one replaces it.
        let held = if self.ram { size } else { 0 };
        if !alloc.try_hold(usize::try_from(held).unwrap_or(usize::MAX)) {
            return Err(AgentError::OutOfMemory {
                requested: size,
                in_use: alloc.in_use() as u64,
                cap: alloc.cap() as u64,
                limit: MemLimit::Heap,
            });
        }
        let part = dir.join(format!(".{name}.part"));
        let opened = std::fs::create_dir_all(&dir).and_then(|()| File::create(&part));
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                alloc.let_go(held as usize);
                return Err(AgentError::Storage(format!("cannot create {}: {e}", part.display())));
            }
        };
        self.receiving = Some(Receiving { name, size, sha256, path, part, file, hasher: Sha256::new(), have: 0, held });
        match size {
            // An empty file has no chunk to finish it.
            0 => self.finish(alloc),
            _ => Ok(Event::Stored { path: shown, have: 0 }),
        }
    }

    /// Takes the open upload's bytes at `offset`; the last ones store it.
    pub(super) fn chunk(
        &mut self,
        alloc: &CappedAlloc<MapLarge>,
        offset: u64,
        bytes: &[u8],
    ) -> Result<Event, AgentError> {
        let Some(r) = self.receiving.as_mut() else {
            return Err(AgentError::BadRequest("an upload chunk with no upload open (Upload comes first)".to_string()));
        };
        if offset != r.have {
            return Err(AgentError::BadRequest(format!(
                "chunk of {} at byte {offset}: the board holds {} bytes of it, so the next starts there",
                r.name, r.have
            )));
        }
        let end = offset + bytes.len() as u64;
        if end > r.size {
            let e = AgentError::BadRequest(format!(
                "chunk of {} ends at byte {end}, past the {} bytes its upload announced; nothing of it is kept",
                r.name, r.size
            ));
            self.abort(alloc);
            return Err(e);
        }
        if let Err(e) = r.file.write_all(bytes) {
            let e = AgentError::Storage(format!("cannot write {}: {e}", r.part.display()));
            self.abort(alloc);
            return Err(e);
        }
        r.hasher.update(bytes);
        r.have = end;
        match end == r.size {
            true => self.finish(alloc),
            false => Ok(Event::Stored { path: r.path.display().to_string(), have: end }),
        }
    }

    /// Checks the whole file's SHA-256 and puts it at its path.
    fn finish(&mut self, alloc: &CappedAlloc<MapLarge>) -> Result<Event, AgentError> {
        let r = self.receiving.as_mut().expect("an upload is open");
        let actual: [u8; 32] = std::mem::take(&mut r.hasher).finalize().into();
        if actual != r.sha256 {
            let (expected, actual) = (Box::new(r.sha256), Box::new(actual));
            let e = AgentError::UploadMismatch { name: r.name.clone(), size: r.size, expected, actual };
            self.abort(alloc);
            return Err(e);
        }
        let r = self.receiving.take().expect("an upload is open");
        // On storage the bytes must be on it before the name says they are.
        let synced = if self.ram { Ok(()) } else { r.file.sync_all() };
        if let Err(e) = synced.and_then(|()| std::fs::rename(&r.part, &r.path)) {
            let _ = std::fs::remove_file(&r.part);
            alloc.let_go(r.held as usize);
            return Err(AgentError::Storage(format!("cannot store {}: {e}", r.path.display())));
        }
        if let Some(replaced) = self.held.insert(r.path.clone(), r.held) {
            alloc.let_go(replaced as usize);
        }
        Ok(Event::Stored { path: r.path.display().to_string(), have: r.size })
    }

    /// Drops the upload in progress, if any, and what it held.
    fn abort(&mut self, alloc: &CappedAlloc<MapLarge>) {
        if let Some(r) = self.receiving.take() {
            let _ = std::fs::remove_file(&r.part);
            alloc.let_go(r.held as usize);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(r) = self.receiving.take() {
            let _ = std::fs::remove_file(&r.part);
        }
        // Files held in RAM go with the agent.
        if self.ram {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A name is one plain file name: nothing that climbs out of the folder.
fn check_name(name: &str) -> Result<(), AgentError> {
    let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    match plain {
        true => Ok(()),
        false => Err(AgentError::BadRequest(format!("upload name `{name}` is not a plain file name"))),
    }
}

/// True if `path` is a file of `size` bytes with SHA-256 `sha256`.
fn holds(path: &Path, size: u64, sha256: &[u8; 32]) -> bool {
    let Ok(mut file) = File::open(path) else { return false };
    if !file.metadata().is_ok_and(|m| m.is_file() && m.len() == size) {
        return false;
    }
    let mut hasher = Sha256::new();
    // Small: the buffer is on the capped heap.
    let mut buf = std::vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    let digest: [u8; 32] = hasher.finalize().into();
    digest == *sha256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "x\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["model.onnx", "model.onnx.data", "tokenizer.json", "..hidden"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
