//! Sealed segments: the log's history, moved out of sled into immutable files.
//!
//! Records are appended to sled (the durable commit point, beside the dedup index and the
//! cursors). Reading one sled key per record is slow and sled's cache holds large pages whole,
//! so complete ranges of `segment_records` records are sealed: copied, stored bytes unchanged,
//! into a segment file of frames (`frame.rs`), which is fsynced with its directory; then one sled
//! batch writes the segment's index entry (`G` + first seq) and removes the range's keys. Until
//! that batch the keys are the truth and a segment file without an index entry is a leftover,
//! removed at the next writable open; after it the segment is the truth. A crash at any step
//! leaves one of the two whole (see `tests/failpoints.rs`).
//!
//! The index entry lists every frame's first seq and byte offset, so a read goes straight to
//! the frame that holds a seq, and a frame found where another belongs (frames swapped, a file
//! cut short or gone) is named by the seq it should hold.

pub mod check;
mod frame;
mod seal;

pub use check::{FileCheck, FileChecks, check_files};
pub use frame::{Frame, Stored};
pub(crate) use seal::seal;

use crate::error::{EngineError, Result};
use crate::log::log_key;
use maestro_schemas::codec;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The segment files' directory, beside `db/` in the data dir.
pub const SEGMENTS_DIR: &str = "segments";

/// Records per segment unless configured otherwise.
pub const DEFAULT_SEGMENT_RECORDS: u64 = 65_536;

/// A segment file starts with these bytes.
pub const MAGIC: &[u8; 16] = b"MAESTRO-SEGMENT1";

const INDEX: u8 = b'G';

pub(crate) fn index_key(first: u64) -> [u8; 9] {
    let mut key = [INDEX; 9];
    key[1..].copy_from_slice(&first.to_be_bytes());
    key
}

/// A segment's index entry, kept in sled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub first: u64,
    pub last: u64,
    /// The file's length.
    pub bytes: u64,
    /// The chain hash of the last record.
    pub last_hash: [u8; 32],
    /// `(first seq, byte offset)` of each frame, in order.
    pub frames: Vec<(u64, u64)>,
}

impl SegmentMeta {
    pub fn file_name(&self) -> String {
        file_name(self.first, self.last)
    }
}

pub(crate) fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.seg")
}

/// The sealed part of the log: the segments' index, and the last file and frame read.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    list: Vec<SegmentMeta>,
    file: Mutex<Option<(u64, Arc<File>)>>,
    frame: Mutex<Option<Arc<Frame>>>,
}

impl Segments {
    /// Loads the index from `db`. With `tidy`, files the index does not name (a seal that
    /// crashed before its batch; its keys are still in sled) are removed.
    pub fn load(db: &sled::Db, dir: PathBuf, tidy: bool) -> Result<Segments> {
        let mut list: Vec<SegmentMeta> = Vec::new();
        for item in db.scan_prefix([INDEX]) {
            let (key, value) = item?;
            let meta: SegmentMeta = codec::decode(&value)
                .map_err(|e| EngineError::Damaged(format!("segment index entry {key:?} does not decode: {e}")))?;
            if let Some(previous) = list.last()
                && previous.last + 1 != meta.first
            {
                return Err(EngineError::Damaged(format!(
                    "record {}: missing (the segment index jumps from seq {} to {})",
                    previous.last + 1,
                    previous.last,
                    meta.first
                )));
            }
            list.push(meta);
        }
        if tidy {
            remove_leftovers(&dir, &list)?;
        }
        Ok(Segments { dir, list, file: Mutex::new(None), frame: Mutex::new(None) })
    }

    /// The last sealed seq (0 when nothing is sealed).
    pub fn sealed_through(&self) -> u64 {
        self.list.last().map_or(0, |m| m.last)
    }

    pub fn last(&self) -> Option<&SegmentMeta> {
        self.list.last()
    }

    pub fn list(&self) -> &[SegmentMeta] {
        &self.list
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the segment files.
    pub fn bytes(&self) -> u64 {
        self.list.iter().map(|m| m.bytes).sum()
    }

    pub(crate) fn push(&mut self, meta: SegmentMeta) {
        self.list.push(meta);
    }

    /// The stored bytes of sealed record `seq`.
    pub fn stored(&self, seq: u64) -> Result<Stored> {
        let frame = self.frame_at(seq)?;
        Ok(Stored::Frame(frame, seq))
    }

    /// The checked frame holding sealed record `seq`.
    pub fn frame_at(&self, seq: u64) -> Result<Arc<Frame>> {
        if let Some(frame) = self.frame.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && frame.first <= seq
            && seq <= frame.last()
        {
            return Ok(frame.clone());
        }
        let meta = self
            .list
            .get(self.list.partition_point(|m| m.last < seq))
            .filter(|m| m.first <= seq)
            .ok_or_else(|| EngineError::Damaged(format!("record {seq}: not in any segment")))?;
        let i = meta.frames.partition_point(|(first, _)| *first <= seq).saturating_sub(1);
        let (first, offset) = *meta
            .frames
            .get(i)
            .ok_or_else(|| EngineError::Damaged(format!("record {seq}: its segment's index lists no frames")))?;
        let end = meta.frames.get(i + 1).map_or(meta.bytes, |(_, offset)| *offset);
        let path = self.dir.join(meta.file_name());
        let place = format!("segment file {} at byte {offset}", path.display());
        let file = self.file(meta, &path)?;
        let mut bytes = vec![0; usize::try_from(end.saturating_sub(offset)).unwrap_or(0)];
        if let Err(error) = file.read_exact_at(&mut bytes, offset) {
            return Err(EngineError::Damaged(match error.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    format!("record {first}: missing: segment file {} is cut short", path.display())
                }
                _ => format!("record {first}: unreadable ({place}: {error})"),
            }));
        }
        let frame = Frame::parse(bytes, first, &place)?;
        if frame.last() < seq {
            return Err(EngineError::Damaged(format!("record {}: missing: its frame ends before it ({place})", seq)));
        }
        *self.frame.lock().unwrap_or_else(PoisonError::into_inner) = Some(frame.clone());
        Ok(frame)
    }

    fn file(&self, meta: &SegmentMeta, path: &Path) -> Result<Arc<File>> {
        let mut open = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((first, file)) = open.as_ref()
            && *first == meta.first
        {
            return Ok(file.clone());
        }
        let file = File::open(path).map_err(|error| {
            EngineError::Damaged(match error.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("record {}: missing: segment file {} is gone", meta.first, path.display())
                }
                _ => format!("record {}: segment file {}: {error}", meta.first, path.display()),
            })
        })?;
        let file = Arc::new(file);
        *open = Some((meta.first, file.clone()));
        Ok(file)
    }
}

/// Removes segment files (and half-written ones) the index does not name.
fn remove_leftovers(dir: &Path, list: &[SegmentMeta]) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(EngineError::DataDir { path: dir.to_path_buf(), source }),
    };
    let named: std::collections::HashSet<String> = list.iter().map(SegmentMeta::file_name).collect();
    for entry in entries {
        let entry = entry.map_err(|source| EngineError::DataDir { path: dir.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !named.contains(&name) {
            tracing::warn!(file = %entry.path().display(), "removing a segment file no index entry names (a seal that did not finish)");
            std::fs::remove_file(entry.path()).map_err(|source| EngineError::DataDir { path: entry.path(), source })?;
        }
    }
    Ok(())
}

/// Stored records `from..=to`: the sealed ones from their frames, the rest from sled. A seq
/// missing in sled is an error; the range ends early, without one, where sled's keys end.
pub struct StoredRange<'a> {
    segments: &'a Segments,
    db: &'a sled::Db,
    next: u64,
    to: u64,
    frame: Option<Arc<Frame>>,
    tail: Option<sled::Iter>,
    done: bool,
}

impl std::fmt::Debug for StoredRange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRange").field("next", &self.next).field("to", &self.to).finish_non_exhaustive()
    }
}

impl<'a> StoredRange<'a> {
    pub fn new(segments: &'a Segments, db: &'a sled::Db, from: u64, to: u64) -> StoredRange<'a> {
        StoredRange { segments, db, next: from.max(1), to, frame: None, tail: None, done: false }
    }

    /// The seq the range would hand out next.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    fn fail(&mut self, error: EngineError) -> Option<Result<(u64, Stored)>> {
        self.done = true;
        Some(Err(error))
    }
}

impl Iterator for StoredRange<'_> {
    type Item = Result<(u64, Stored)>;

    fn next(&mut self) -> Option<Self::Item> {
        let seq = self.next;
        if self.done || seq > self.to {
            return None;
        }
        if seq <= self.segments.sealed_through() {
            let frame = match &self.frame {
                Some(frame) if frame.first <= seq && seq <= frame.last() => frame.clone(),
                _ => match self.segments.frame_at(seq) {
                    Ok(frame) => frame,
                    Err(error) => return self.fail(error),
                },
            };
            self.frame = Some(frame.clone());
            self.next += 1;
            return Some(Ok((seq, Stored::Frame(frame, seq))));
        }
        let (db, to) = (self.db, self.to);
        let tail = self.tail.get_or_insert_with(|| db.range(log_key(seq)..=log_key(to)));
        match tail.next() {
            None => {
                self.done = true;
                None
            }
            Some(Err(error)) => self.fail(error.into()),
            Some(Ok((key, value))) => {
                let stored_seq = key.get(1..9).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
                if stored_seq != seq {
                    return self
                        .fail(EngineError::Damaged(format!("record {seq}: missing (next stored is {stored_seq})")));
                }
                self.next += 1;
                Some(Ok((seq, Stored::Sled(value))))
            }
        }
    }
}

#[cfg(test)]
mod tests;
