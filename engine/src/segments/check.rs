//! Checking segment files on their own, without sled: what lets `maestro verify` check the
//! sealed history while sled's files are still being copied and opened (see `crate::read_only`),
//! and on every core.
//!
//! A segment file describes itself: its name gives its seq range, each frame's header its first
//! seq, record count and length. [`check_files`] walks every file of a segment directory and
//! checks each frame's CRC, each record's checksum and the chain inside the file, and notes the
//! file's shape as its index entry would list it. Such a result proves nothing about the log
//! until it is compared with the index sled holds ([`crate::log::Log::verify_checked`]): only a
//! file whose walk equals its index entry, and whose first record names the previous segment's
//! last hash, counts as checked. Anything else (a leftover of an unfinished seal, a damaged or
//! replaced file) is read again through the index, whose errors name the seq.

use super::frame::{Frame, HEADER};
use super::{MAGIC, SegmentMeta};
use crate::error::{EngineError, Result};
use maestro_schemas::record::{RecordRef, hash_stored};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One segment file checked on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// The file's shape, as its index entry lists it when the file is whole.
    pub meta: SegmentMeta,
    /// The predecessor hash the file's first record names.
    pub first_prev: [u8; 32],
}

/// Checks of the segment files found, by file name; a file whose check failed is absent.
pub type FileChecks = HashMap<String, FileCheck>;

/// `<first>-<last>.seg` to `(first, last)`.
fn seq_range(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name.strip_suffix(".seg")?.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// Checks every segment file in `dir` on up to `threads` threads. A missing directory holds
/// no segments; files that fail are left out (the index-driven read names their damage).
pub fn check_files(dir: &Path, threads: usize) -> FileChecks {
    let Ok(entries) = std::fs::read_dir(dir) else { return FileChecks::new() };
    let files: Vec<(String, PathBuf, u64, u64)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let (first, last) = seq_range(&name)?;
            Some((name, entry.path(), first, last))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let found = Mutex::new(FileChecks::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, files.len().max(1)) {
            scope.spawn(|| {
                while let Some((name, path, first, last)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Ok(check) = check_file(path, *first, *last) {
                        found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.clone(), check);
                    }
                }
            });
        }
    });
    found.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks one segment file that should hold records `first..=last`: its magic, every frame
/// (CRC, seqs in order) and every record (checksum, header, chain inside the file).
pub fn check_file(path: &Path, first: u64, last: u64) -> Result<FileCheck> {
    let io = |source| EngineError::DataDir { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let mut magic = [0; MAGIC.len()];
    input.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(EngineError::Damaged(format!("segment file {} does not start as one", path.display())));
    }
    let mut meta = SegmentMeta { first, last, bytes: MAGIC.len() as u64, last_hash: [0; 32], frames: Vec::new() };
    let mut first_prev = None;
    let mut expected = first;
    loop {
        let mut header = [0; HEADER];
        match input.read_exact(&mut header) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && expected > last => break,
            other => other.map_err(io)?,
        }
        let len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
        let mut bytes = Vec::with_capacity(HEADER + len);
        bytes.extend_from_slice(&header);
        bytes.resize(HEADER + len, 0);
        input.read_exact(&mut bytes[HEADER..]).map_err(io)?;
        let place = format!("segment file {} at byte {}", path.display(), meta.bytes);
        let frame = Frame::parse(bytes, expected, &place)?;
        meta.frames.push((expected, meta.bytes));
        meta.bytes += (HEADER + len) as u64;
        for seq in frame.first..=frame.last() {
            let stored = frame.get(seq).unwrap_or_default();
            let record = RecordRef::decode(seq, stored)?;
            match first_prev {
                None => first_prev = Some(record.prev_hash),
                Some(_) => record.check_chain(&meta.last_hash)?,
            }
            meta.last_hash = hash_stored(stored);
        }
        expected = frame.last() + 1;
        if expected > last + 1 {
            return Err(EngineError::Damaged(format!("segment file {} runs past seq {last}", path.display())));
        }
    }
    let first_prev = first_prev.ok_or_else(|| EngineError::Damaged(format!("{} holds no record", path.display())))?;
    Ok(FileCheck { meta, first_prev })
}
