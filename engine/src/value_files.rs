//! Large state values (template bodies, committed template files) live as files beside sled,
//! named by the BLAKE3 hash of their bytes; the store's sled tree holds a 47-byte reference.
//!
//! Why: sled 0.34 writes a tree node larger than a quarter of a segment as a separate blob and
//! counts it in its page cache by the size of its pointer, so leaves of 2-60 KB values that a
//! read pulls in stay in memory far beyond the cache's bound (measured: 20,000 templates and
//! 4,000 retrieves took the engine from about 340 to 400 MiB; the same retrieves without
//! reading the body left it flat). A file read leaves nothing behind in the process, and the
//! file is written once, however often a rebuild or a new store generation refers to it again.
//!
//! A reference is [`MARK`] then the 32-byte hash. A value of at least [`MIN_FILE_VALUE`] bytes,
//! or that happens to start with [`MARK`], is always stored as a file, so a stored value that
//! starts with [`MARK`] is always a reference. Files are written under a temporary name and
//! renamed, and checked against their name when read, so a damaged file is named, never
//! returned. Each is fsynced, with its directory, before the state batch that refers to it
//! commits, so a committed reference never points at a file a power loss took. The engine
//! removes the files nothing refers to any more between batches ([`Sweeper`]).

mod runs;

use crate::error::{EngineError, Result};
use maestro_schemas::record::hex;
pub use runs::{Index, Noted, Piece};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Values from this size on are stored as files.
pub const MIN_FILE_VALUE: usize = 4096;

/// The start of a reference (no handler value starts with a zero byte and this text).
pub const MARK: &[u8] = b"\0maestro-value\0";

/// A directory of content-addressed value files. Clones share the values noted since the
/// last commit ([`ValueFiles::load_noted`]).
#[derive(Clone, Debug)]
pub struct ValueFiles {
    dir: PathBuf,
    noted: Arc<Mutex<Noted>>,
}

fn damaged(path: &Path, why: &str) -> EngineError {
    EngineError::State(format!(
        "value file {} {why}; the store is derived from the log: `maestro replay rebuild` makes it again",
        path.display()
    ))
}

impl ValueFiles {
    pub fn new(dir: impl Into<PathBuf>) -> ValueFiles {
        ValueFiles { dir: dir.into(), noted: Arc::default() }
    }

    fn path(&self, hash: &[u8; 32]) -> PathBuf {
        let name = hex(hash);
        self.dir.join(&name[..2]).join(name)
    }

    /// The hash a stored value refers to, when it is a reference.
    pub fn reference(stored: &[u8]) -> Option<[u8; 32]> {
        stored.strip_prefix(MARK)?.try_into().ok()
    }

    /// What the store keeps for `value`: the value itself when it is small, else a reference
    /// to its file, written now unless it exists already.
    pub fn stored_form(&self, value: Vec<u8>) -> Result<Vec<u8>> {
        if value.len() < MIN_FILE_VALUE && !value.starts_with(MARK) {
            return Ok(value);
        }
        let hash = *blake3::hash(&value).as_bytes();
        let path = self.path(&hash);
        let io = |source| EngineError::DataDir { path: path.clone(), source };
        // A file already there is kept only when it holds these bytes, so that a rebuild
        // rewrites a damaged one.
        if std::fs::read(&path).is_ok_and(|held| *blake3::hash(&held).as_bytes() == hash) {
            return Ok([MARK, &hash].concat());
        }
        let parent = path.parent().unwrap_or(&self.dir);
        let (new_root, new_folder) = (!self.dir.is_dir(), !parent.is_dir());
        std::fs::create_dir_all(parent).map_err(io)?;
        let mut temporary = tempfile::NamedTempFile::new_in(parent).map_err(io)?;
        temporary.write_all(&value).map_err(io)?;
        // Durable before the state that refers to it commits: file, name, and a new folder's name.
        temporary.as_file().sync_all().map_err(io)?;
        temporary.persist(&path).map_err(|e| io(e.error))?;
        sync_dir(parent).map_err(io)?;
        if new_folder {
            sync_dir(&self.dir).map_err(io)?;
        }
        if let Some(data_dir) = self.dir.parent().filter(|_| new_root) {
            sync_dir(data_dir).map_err(io)?;
        }
        Ok([MARK, &hash].concat())
    }

    /// The value a stored form stands for: itself, or its file's bytes.
    pub fn load(&self, stored: &[u8]) -> Result<Vec<u8>> {
        let Some(hash) = ValueFiles::reference(stored) else { return Ok(stored.to_vec()) };
        let path = self.path(&hash);
        let bytes = std::fs::read(&path).map_err(|e| damaged(&path, &format!("cannot be read ({e})")))?;
        if *blake3::hash(&bytes).as_bytes() != hash {
            return Err(damaged(&path, "does not hold the bytes its name hashes"));
        }
        Ok(bytes)
    }

    /// Like [`ValueFiles::load`], and notes a file's value until the next commit takes the
    /// notes ([`ValueFiles::take_noted`]): what a handler reads, its answers may repeat.
    pub fn load_noted(&self, stored: &[u8]) -> Result<Vec<u8>> {
        let value = self.load(stored)?;
        if let (Some(hash), Ok(mut noted)) = (ValueFiles::reference(stored), self.noted.lock()) {
            noted.note(hash, &value);
        }
        Ok(value)
    }

    /// The values noted since the last call, which forgets them.
    pub fn take_noted(&self) -> Noted {
        self.noted.lock().map(|mut noted| std::mem::take(&mut *noted)).unwrap_or_default()
    }

    /// The value of the file named by `hash`, checked like [`ValueFiles::load`].
    pub fn load_file(&self, hash: &[u8; 32]) -> Result<Vec<u8>> {
        self.load(&[MARK, hash].concat())
    }

    /// Whether no file is here at all (a data dir with no value of 4 KiB or more), so that a
    /// sweep has nothing to do and its callers need not scan the state for references.
    pub fn is_empty(&self) -> bool {
        let Ok(folders) = std::fs::read_dir(&self.dir) else { return true };
        folders.flatten().all(|folder| std::fs::read_dir(folder.path()).is_ok_and(|mut files| files.next().is_none()))
    }

    /// Removes every file here whose hash is not in `keep`, and files a write left half done:
    /// only for a caller that holds the data dir, so no commit can be writing one meanwhile.
    /// Returns how many files and bytes went.
    pub fn sweep(&self, keep: &HashSet<[u8; 32]>) -> Result<(u64, u64)> {
        let (mut files, mut bytes) = (0, 0);
        let folders = match std::fs::read_dir(&self.dir) {
            Ok(folders) => folders,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(source) => return Err(EngineError::DataDir { path: self.dir.clone(), source }),
        };
        for folder in folders.flatten().filter(|f| f.path().is_dir()) {
            let io = |source| EngineError::DataDir { path: folder.path(), source };
            for file in std::fs::read_dir(folder.path()).map_err(io)?.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if parse_hash(&name).is_some_and(|hash| keep.contains(&hash)) {
                    continue;
                }
                bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(file.path()).map_err(io)?;
                files += 1;
            }
        }
        Ok((files, bytes))
    }
}

/// Removes the value files that `store`, the live store, does not refer to. Only for the one
/// writer of the data dir, between its commits: a commit writes its files before the state
/// that refers to them, so a sweep during one could remove a file about to be referred to.
/// The store is made durable first: commits are not synced, and a crash that took the commit
/// which stopped referring to a file would otherwise leave a store referring to a removed one.
pub fn sweep_unreferenced(files: &ValueFiles, store: &crate::store::Store) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    store.make_durable()?;
    let keep = store.referenced_files()?;
    let (removed, bytes) = files.sweep(&keep)?;
    if removed > 0 {
        tracing::info!(removed, bytes, kept = keep.len(), "removed value files nothing refers to");
    }
    Ok(())
}

/// Runs [`sweep_unreferenced`] at most every `every`, for the engine's batch loop.
#[derive(Debug)]
pub struct Sweeper {
    every: Duration,
    next: Instant,
}

impl Sweeper {
    pub fn new(every: Duration) -> Sweeper {
        Sweeper { every, next: Instant::now() + every }
    }

    /// Sweeps when due; call only between commits (see [`sweep_unreferenced`]).
    pub fn tick(&mut self, files: &ValueFiles, store: &crate::store::Store) -> Result<()> {
        if Instant::now() < self.next {
            return Ok(());
        }
        self.next = Instant::now() + self.every;
        sweep_unreferenced(files, store)
    }
}

/// Makes a directory's entries durable (a renamed file's name lives in its directory).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The hash a file name spells, in lowercase hex.
fn parse_hash(name: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(name, &mut hash).ok()?;
    // Lowercase only: one value, one file name.
    (hex::encode(hash) == name).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_go_to_files_and_come_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::new(dir.path().join("files"));
        let small = b"{\"a\":1}".to_vec();
        assert_eq!(files.stored_form(small.clone()).unwrap(), small);
        assert!(files.is_empty(), "a small value is no file");
        let large = vec![b'x'; MIN_FILE_VALUE];
        let stored = files.stored_form(large.clone()).unwrap();
        assert!(!files.is_empty());
        assert_eq!(stored.len(), MARK.len() + 32);
        assert_eq!(files.load(&stored).unwrap(), large);
        // The same bytes again: the same reference, one file.
        assert_eq!(files.stored_form(large.clone()).unwrap(), stored);
        let on_disk: Vec<_> = walk(dir.path());
        assert_eq!(on_disk.len(), 1);
        // A small value that looks like a reference is stored as a file too, so it reads back.
        let lookalike = [MARK, b"short"].concat();
        let stored_lookalike = files.stored_form(lookalike.clone()).unwrap();
        assert_ne!(stored_lookalike, lookalike);
        assert_eq!(files.load(&stored_lookalike).unwrap(), lookalike);
        // A damaged or missing file is named, never returned.
        std::fs::write(&on_disk[0], b"tampered").unwrap();
        let error = files.load(&stored).unwrap_err().to_string();
        assert!(error.contains("does not hold the bytes") && error.contains("replay rebuild"), "{error}");
        // Storing the same bytes again repairs the file.
        assert_eq!(files.stored_form(large.clone()).unwrap(), stored);
        assert_eq!(files.load(&stored).unwrap(), large);
        // A sweep keeps what is named and removes the rest, and files a write left half done.
        std::fs::write(on_disk[0].with_file_name(".tmpX1234"), b"half").unwrap();
        let keep = HashSet::from([ValueFiles::reference(&stored).unwrap()]);
        assert_eq!(files.sweep(&keep).unwrap(), (2, b"half".len() as u64 + lookalike.len() as u64));
        assert_eq!(files.load(&stored).unwrap(), large);
        assert!(files.load(&stored_lookalike).is_err());
        std::fs::remove_file(&on_disk[0]).unwrap();
        assert!(files.load(&stored).unwrap_err().to_string().contains("cannot be read"));
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                out.extend(walk(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
        out
    }
}
