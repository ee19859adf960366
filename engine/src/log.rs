//! The append-only log on sled: the truth the engine keeps.
//!
//! One sled tree holds, under one-byte prefixes, the records (`L` + seq), the dedup index
//! (`(stream, entry id) -> seq`, see below), the per-stream cursors (`C` + stream -> highest
//! entry id), the request-id index (`R` + stream + 0 + request id -> seq) and the quarantine
//! index (`Q` + target seq -> seq of the quarantine record). Keeping them in one tree lets a
//! single sled batch write a record and every index that points at it, atomically.
//!
//! The dedup index comes in two shapes, because one sled key per entry doubled the cost of an
//! append (measured: 9-12 ms against 6 ms per 900-entry batch). Entries above their stream's
//! cursor, the normal case, go into one frame per stream per batch (`D` + stream + 0 + lowest
//! id -> the sorted `(id, seq)` pairs); such frames never overlap, since each starts above the
//! previous cursor. Entries at or below the cursor (claims of another consumer's entries) get
//! a key each (`E` + stream + 0 + id -> seq). A look-up checks the exact key, then the one frame
//! whose range can hold the id.

use crate::error::{EngineError, Result};
use crate::segments::{FileChecks, SEGMENTS_DIR, Segments, Stored, StoredRange};
use crate::value_files::ValueFiles;
use maestro_schemas::record::{GENESIS_HASH, RecordRef, format_for, hash_stored, hex};
use maestro_schemas::{Body, EntryId, Record, codec};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const LOG: u8 = b'L';
const DEDUP_FRAME: u8 = b'D';
const DEDUP_SINGLE: u8 = b'E';
const CURSOR: u8 = b'C';
const REQUEST: u8 = b'R';
const QUARANTINE: u8 = b'Q';
/// The seq of the last config record.
const CONFIG: &[u8] = b"K";
/// `S` + name: the seq of the last setting record of that name.
const SETTING: u8 = b'S';

fn setting_key(name: &str) -> Vec<u8> {
    [&[SETTING][..], name.as_bytes()].concat()
}

/// What a config record holds: the bootstrap admins and the stream keys.
pub type RecordedConfig = (Vec<(String, String)>, maestro_schemas::StreamSet);

/// The head anchor, beside `db/` in the data dir: `<seq> <hash>` of the last durable record,
/// rewritten after every append. sled can recover a damaged file as a shorter, self-consistent
/// log; the anchor is what tells a truncated log from a short one. It is written after the log
/// is durable, so it never runs ahead of it.
pub const ANCHOR_FILE: &str = "HEAD";

/// The projection store's value files, beside `db/` in the data dir.
pub const VALUE_FILES_DIR: &str = "values";

/// How many records at the tail are chain-checked when the log opens. The full check is
/// `maestro verify`; every record handed to a handler is checksum-checked as it is read.
pub const TAIL_CHECK: u64 = 1024;

pub fn log_key(seq: u64) -> [u8; 9] {
    let mut key = [LOG; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of_log_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

fn keyed(prefix: u8, stream: &str, tail: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + stream.len() + tail.len());
    key.push(prefix);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(tail);
    key
}

fn cursor_key(stream: &str) -> Vec<u8> {
    let mut key = vec![CURSOR];
    key.extend_from_slice(stream.as_bytes());
    key
}

fn seq_value(value: &[u8]) -> Result<u64> {
    value
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| EngineError::Damaged(format!("index value of {} bytes where a seq belongs", value.len())))
}

/// A record to append; the log assigns its seq and chain hash.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub body: Body,
    /// `(stream, request id)` for requests that carry their own id, so re-sends are recognised.
    pub request: Option<(String, String)>,
}

/// The log. One writer: the engine that holds the data dir lock.
pub struct Log {
    db: sled::Db,
    value_files: ValueFiles,
    anchor: PathBuf,
    sync_file: File,
    head_seq: u64,
    head_hash: [u8; 32],
    cursors: HashMap<String, EntryId>,
    /// The sealed history (`segments/`, see [`crate::segments`]); sled holds the rest.
    segments: Segments,
    /// The data dir.
    dir: PathBuf,
    /// The projection store's own sled database (`store/`), opened on first use by
    /// [`Log::store`] (see [`crate::datadir`]): tools that read only the log never open it.
    /// Declared before `copy`, which may hold its files.
    store_db: std::sync::OnceLock<sled::Db>,
    /// A copy of the data dir's sled files that this log was opened from, for tools that must
    /// not change a byte of the data dir (sled writes on open and recovery). Declared last so
    /// sled closes before the copy is removed; appends are refused on such a log.
    copy: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("head_seq", &self.head_seq).finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (or creates) the log in `dir` (sled in `dir/db`, the anchor in `dir/HEAD`). Checks
    /// the head against the anchor and the tail of the chain, so a damaged record near the head
    /// is an error naming its seq, and a log that lost records is an error too.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Log> {
        let log = Log::open_unchecked(dir, cache_bytes)?;
        log.check_anchor()?;
        Ok(log)
    }

    /// Opens (or creates) the log with its tail checked but not its head anchor, for a caller
    /// that checks every anchor itself (the engine at start-up). A new log gets its anchor
    /// (seq 0) before sled creates `db/`, so a `db/` without `HEAD` is never a fresh log: it is
    /// one whose anchor was lost, possibly with records.
    pub fn open_unchecked(dir: &Path, cache_bytes: u64) -> Result<Log> {
        let anchor = dir.join(ANCHOR_FILE);
        if !dir.join("db").exists() && !anchor.exists() {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::DataDir { path: dir.to_path_buf(), source })?;
            crate::anchors::write_anchor_file(&anchor, 0, &GENESIS_HASH)?;
        }
        Log::open_with(dir, cache_bytes, true)
    }

    /// Opens a copy of the log's sled files (`db/`) in a temporary directory, with the tail check
    /// as [`Log::open_with`]: the data dir itself is only read (its `HEAD` and value files
    /// included), whatever sled does on open or recovery, and appends are refused. The store's
    /// (`store/`) is copied beside it only if [`Log::store`] is asked for.
    pub fn open_copy(dir: &Path, cache_bytes: u64, check_tail: bool) -> Result<Log> {
        let copy = crate::read_only::copy_db(&dir.join("db"))?;
        let mut log = Log::open_at(&copy.path().join("db"), dir, cache_bytes, check_tail, false)?;
        log.copy = Some(copy);
        Ok(log)
    }

    /// Opens the log; `check_tail` false skips the tail check, for tools that check every
    /// record themselves and must name the first damaged one.
    pub fn open_with(dir: &Path, cache_bytes: u64, check_tail: bool) -> Result<Log> {
        Log::open_at(&dir.join("db"), dir, cache_bytes, check_tail, true)
    }

    /// Opens sled at `db_path`, with the anchor, segments and value files of data dir `dir`;
    /// `tidy` removes segment files of seals that did not finish (never on a copy).
    fn open_at(db_path: &Path, dir: &Path, cache_bytes: u64, check_tail: bool, tidy: bool) -> Result<Log> {
        let db = crate::datadir::open_db(db_path, cache_bytes)?;
        let db_file = db_path.join("db");
        let sync_file = File::open(&db_file).map_err(|source| EngineError::DataDir { path: db_file, source })?;
        let mut cursors = HashMap::new();
        for item in db.scan_prefix([CURSOR]) {
            let (key, value) = item?;
            let stream = String::from_utf8_lossy(&key[1..]).into_owned();
            let id =
                EntryId::from_be_bytes(&value).ok_or_else(|| EngineError::Damaged(format!("cursor of {stream}")))?;
            cursors.insert(stream, id);
        }
        let anchor = dir.join(ANCHOR_FILE);
        let value_files = ValueFiles::new(dir.join(VALUE_FILES_DIR));
        let segments = Segments::load(&db, dir.join(SEGMENTS_DIR), tidy)?;
        let (head_seq, head_hash) = segments.last().map_or((0, GENESIS_HASH), |m| (m.last, m.last_hash));
        let mut log = Log {
            db,
            value_files,
            anchor,
            sync_file,
            head_seq,
            head_hash,
            cursors,
            segments,
            dir: dir.to_path_buf(),
            store_db: std::sync::OnceLock::new(),
            copy: None,
        };
        if let Some((key, stored)) = log.db.scan_prefix([LOG]).next_back().transpose()? {
            let seq = seq_of_log_key(&key).ok_or_else(|| EngineError::Damaged(format!("log key {key:?}")))?;
            log.head_seq = seq;
            log.head_hash = hash_stored(&stored);
            if check_tail {
                Record::decode(seq, &stored)?;
            }
        }
        if check_tail && log.head_seq > 0 {
            let head = log.head_seq;
            let checked = log.verify(head.saturating_sub(TAIL_CHECK - 1).max(1), head)?;
            if checked.head_hash != log.head_hash {
                return Err(EngineError::Damaged(format!("record {head}: differs from its segment index entry")));
            }
        }
        Ok(log)
    }

    /// The log's sled database (`db/`, or the tool's copy of it). The projection store has a
    /// database of its own (see [`Log::store`]), except in an old data dir a tool reads.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The data dir this log is in.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Where the copy of the data dir's sled files a read-only log was opened from is.
    pub(crate) fn copy_path(&self) -> Option<&Path> {
        self.copy.as_ref().map(tempfile::TempDir::path)
    }

    /// The store's sled database, once opened (see [`crate::datadir`]).
    pub(crate) fn store_cell(&self) -> &std::sync::OnceLock<sled::Db> {
        &self.store_db
    }

    /// The directory of the projection store's large values (see [`crate::value_files`]).
    pub fn value_files(&self) -> ValueFiles {
        self.value_files.clone()
    }

    /// Seq of the last record (0 when empty).
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// Chain hash of the last record.
    pub fn head_hash(&self) -> [u8; 32] {
        self.head_hash
    }

    /// The seq of the record holding entry `id` of `stream`, if the log has it.
    pub fn seen(&self, stream: &str, id: EntryId) -> Result<Option<u64>> {
        let key = id.to_be_bytes();
        if let Some(seq) = self.db.get(keyed(DEDUP_SINGLE, stream, &key))? {
            return seq_value(&seq).map(Some);
        }
        let prefix = keyed(DEDUP_FRAME, stream, &[]);
        let Some((_, frame)) =
            self.db.range(prefix.clone()..=keyed(DEDUP_FRAME, stream, &key)).next_back().transpose()?
        else {
            return Ok(None);
        };
        let frame: Vec<(EntryId, u64)> =
            codec::decode(&frame).map_err(|e| EngineError::Damaged(format!("dedup frame of {stream}: {e}")))?;
        Ok(frame.binary_search_by_key(&id, |(id, _)| *id).ok().map(|i| frame[i].1))
    }

    /// Whether entry `id` of `stream` is in the log. Redis gives a stream's entries increasing
    /// ids, so an id above the stream's cursor is new without a look-up; only redeliveries and
    /// claims, at or below it, consult the index.
    pub fn recorded(&self, stream: &str, id: EntryId) -> Result<bool> {
        match self.cursor(stream)? {
            Some(cursor) if id <= cursor => Ok(self.seen(stream, id)?.is_some()),
            _ => Ok(false),
        }
    }

    /// The seq of the first record of request `request_id` on `stream`, if any.
    pub fn request_seen(&self, stream: &str, request_id: &str) -> Result<Option<u64>> {
        self.db.get(keyed(REQUEST, stream, request_id.as_bytes()))?.map(|v| seq_value(&v)).transpose()
    }

    /// The highest entry id recorded for `stream`.
    pub fn cursor(&self, stream: &str) -> Result<Option<EntryId>> {
        Ok(self.cursors.get(stream).copied())
    }

    /// Appends records with their indexes in one batch and makes it durable (sled flush, then
    /// fsync of the data file: sled's flush alone uses `sync_file_range`). Nothing in memory
    /// moves unless the batch was written.
    pub fn append(&mut self, items: Vec<NewRecord>) -> Result<Vec<Record>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if self.copy.is_some() {
            return Err(EngineError::State("a log opened read-only (from a copy) takes no appends".into()));
        }
        let mut batch = sled::Batch::default();
        let (mut seq, mut hash) = (self.head_seq, self.head_hash);
        let mut cursors: HashMap<String, EntryId> = HashMap::new();
        let mut frames: HashMap<String, Vec<(EntryId, u64)>> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            seq += 1;
            let record = Record { format: format_for(&item.body), seq, prev_hash: hash, body: item.body };
            let stored = record.encode()?;
            hash = hash_stored(&stored);
            batch.insert(&log_key(seq), stored);
            let seq_bytes = seq.to_be_bytes();
            match &record.body {
                Body::Entry(entry) => {
                    let known = cursors.get(&entry.stream).or_else(|| self.cursors.get(&entry.stream)).copied();
                    if known.is_none_or(|id| id < entry.id) {
                        cursors.insert(entry.stream.clone(), entry.id);
                        frames.entry(entry.stream.clone()).or_default().push((entry.id, seq));
                    } else {
                        batch.insert(keyed(DEDUP_SINGLE, &entry.stream, &entry.id.to_be_bytes()), &seq_bytes);
                    }
                }
                Body::Quarantine { target_seq, .. } => {
                    batch.insert([&[QUARANTINE][..], &target_seq.to_be_bytes()].concat(), &seq_bytes);
                }
                Body::Config { .. } => batch.insert(CONFIG, &seq_bytes),
                Body::Setting { name, .. } => batch.insert(setting_key(name), &seq_bytes),
                Body::Clock { .. } => {}
            }
            if let Some((stream, request_id)) = &item.request {
                batch.insert(keyed(REQUEST, stream, request_id.as_bytes()), &seq_bytes);
            }
            out.push(record);
        }
        for (stream, id) in &cursors {
            batch.insert(cursor_key(stream), &id.to_be_bytes());
        }
        for (stream, frame) in &frames {
            // Ascending by construction: each id entered the frame above the running cursor.
            let first = frame.first().map(|(id, _)| *id).unwrap_or_default();
            let bytes = codec::encode(frame).map_err(|e| EngineError::State(format!("dedup frame: {e}")))?;
            batch.insert(keyed(DEDUP_FRAME, stream, &first.to_be_bytes()), bytes);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.sync_file.sync_data().map_err(EngineError::Sync)?;
        self.head_seq = seq;
        self.head_hash = hash;
        self.cursors.extend(cursors);
        self.write_anchor()?;
        Ok(out)
    }

    /// Rewrites the head anchor (temporary file, then rename, so it is never half written).
    fn write_anchor(&self) -> Result<()> {
        crate::anchors::write_anchor_file(&self.anchor, self.head_seq, &self.head_hash)
    }

    /// Where the data dir's own head anchor is.
    pub fn anchor_path(&self) -> &Path {
        &self.anchor
    }

    /// The anchored head, if an anchor was written: (seq, hash hex).
    pub fn anchor(&self) -> Result<Option<(u64, String)>> {
        let text = match std::fs::read_to_string(&self.anchor) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(EngineError::DataDir { path: self.anchor.clone(), source }),
        };
        let bad = || EngineError::Damaged(format!("head anchor {} is not `<seq> <hash>`", self.anchor.display()));
        let (seq, hash) = text.trim().split_once(' ').ok_or_else(bad)?;
        Ok(Some((seq.parse().map_err(|_| bad())?, hash.to_string())))
    }

    /// Checks that the log reaches the anchored head and that the record there is the anchored
    /// one: a log that sled recovered shorter, or a record replaced under the anchor, is named.
    /// A log without an anchor is refused too: a new log is given one before sled creates
    /// its files, so a missing anchor means it was lost, and sled may have recovered a damaged
    /// file as a shorter (even empty) log that nothing else could tell from a whole one.
    pub fn check_anchor(&self) -> Result<()> {
        let Some((seq, hash)) = self.anchor()? else {
            return Err(EngineError::Damaged(format!(
                "the data dir has a log (db/, head seq {} hash {}) but no head anchor {}: records may have been \
                 lost with it",
                self.head_seq,
                hex(&self.head_hash),
                self.anchor.display()
            )));
        };
        self.check_point(seq, &hash, "head anchor")
    }

    /// Checks that the log holds record `seq` with hash `hash` (hex), as an anchor kept outside
    /// the data dir (`what` names it) recorded: truncation and a rewritten chain are named.
    pub fn check_point(&self, seq: u64, hash: &str, what: &str) -> Result<()> {
        if self.head_seq < seq {
            return Err(EngineError::Damaged(format!(
                "record {}: missing; the log ends at seq {} but its {what} records seq {seq}: records were lost",
                self.head_seq + 1,
                self.head_seq
            )));
        }
        if seq == 0 {
            return Ok(());
        }
        let stored = self.stored(seq)?.ok_or_else(|| EngineError::Damaged(format!("record {seq}: missing")))?;
        if hex(&hash_stored(&stored)) != hash {
            return Err(EngineError::Damaged(format!("record {seq}: differs from the one its {what} names")));
        }
        Ok(())
    }

    /// Reads and checksum-checks record `seq`.
    pub fn read(&self, seq: u64) -> Result<Option<Record>> {
        match self.stored(seq)? {
            Some(stored) => Ok(Some(Record::decode(seq, &stored)?)),
            None => Ok(None),
        }
    }

    /// The stored bytes of record `seq` (frame-checked when sealed), if the log has it.
    pub fn stored(&self, seq: u64) -> Result<Option<Stored>> {
        if seq == 0 {
            return Ok(None);
        }
        if seq <= self.segments.sealed_through() {
            return self.segments.stored(seq).map(Some);
        }
        Ok(self.db.get(log_key(seq))?.map(Stored::Sled))
    }

    /// Stored bytes of records `from..=to` in order, through the segments, then sled; a
    /// missing seq is an error, and the range ends early where the log does.
    pub fn stored_range(&self, from: u64, to: u64) -> StoredRange<'_> {
        StoredRange::new(&self.segments, &self.db, from, to)
    }

    /// Records `from..=to` in order, each checksum-checked; a missing seq is an error.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = Result<Record>> + '_ {
        self.stored_range(from, to).map(|item| {
            let (seq, stored) = item?;
            Ok(Record::decode(seq, &stored)?)
        })
    }

    /// Seals every complete range of `per_segment` records into a segment file (see
    /// [`crate::segments`]). Returns how many records were sealed; a log opened from a copy
    /// seals nothing.
    pub fn seal(&mut self, per_segment: u64) -> Result<u64> {
        self.seal_through(self.head_seq, per_segment)
    }

    /// Seals the oldest complete range only, if there is one: a bounded piece of work.
    pub fn seal_one(&mut self, per_segment: u64) -> Result<u64> {
        let through = self.segments.sealed_through().saturating_add(per_segment.max(1));
        self.seal_through(self.head_seq.min(through), per_segment)
    }

    fn seal_through(&mut self, head: u64, per_segment: u64) -> Result<u64> {
        if self.copy.is_some() {
            return Ok(0);
        }
        crate::segments::seal(&self.db, &self.sync_file, &mut self.segments, head, per_segment)
    }

    /// The sealed part of the log.
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    /// The configuration the log last recorded, if any: (admins, streams).
    pub fn config(&self) -> Result<Option<RecordedConfig>> {
        let Some(seq) = self.db.get(CONFIG)? else { return Ok(None) };
        let seq =
            seq.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| EngineError::Damaged("config key".into()))?;
        match self.range(seq, seq).next().transpose()?.map(|r| r.body) {
            Some(Body::Config { admins, streams }) => Ok(Some((admins, streams))),
            _ => Err(EngineError::Damaged(format!("config index points at seq {seq}, which is not a config record"))),
        }
    }

    /// The value the log last recorded for a setting, if any.
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        let Some(seq) = self.db.get(setting_key(name))? else { return Ok(None) };
        let seq =
            seq.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| EngineError::Damaged("setting key".into()))?;
        match self.range(seq, seq).next().transpose()?.map(|r| r.body) {
            Some(Body::Setting { value, .. }) => Ok(Some(value)),
            _ => Err(EngineError::Damaged(format!("setting index points at seq {seq}, which is not a setting record"))),
        }
    }

    /// The seqs of quarantined records.
    pub fn quarantined(&self) -> Result<Vec<u64>> {
        self.db
            .scan_prefix([QUARANTINE])
            .map(|item| {
                let (key, _) = item?;
                seq_of_log_key(&key).ok_or_else(|| EngineError::Damaged(format!("quarantine key {key:?}")))
            })
            .collect()
    }

    /// Checks checksums, seq continuity and the hash chain of records `from..=to`.
    pub fn verify(&self, from: u64, to: u64) -> Result<VerifySummary> {
        let expected_hash = match from {
            0 | 1 => GENESIS_HASH,
            _ => match self.stored(from - 1)? {
                Some(stored) => hash_stored(&stored),
                None => return Err(EngineError::Damaged(format!("record {}: missing", from - 1))),
            },
        };
        self.verify_after(expected_hash, from, to)
    }

    /// [`Log::verify`] of the whole log, counting as checked each sealed segment whose file
    /// `checked` found whole, equal to its index entry and chained to the segment before it
    /// (see [`crate::segments::check`]). From the first segment that is not, and for sled's
    /// tail, the records are read through the index and checked here, so damage is named as
    /// [`Log::verify`] names it.
    pub fn verify_checked(&self, checked: &FileChecks) -> Result<VerifySummary> {
        let (mut expected_hash, mut records) = (GENESIS_HASH, 0);
        let mut from = self.segments.sealed_through() + 1;
        for meta in self.segments.list() {
            match checked.get(&meta.file_name()) {
                Some(check) if check.meta == *meta && check.first_prev == expected_hash => {
                    expected_hash = meta.last_hash;
                    records += meta.last - meta.first + 1;
                }
                _ => {
                    from = meta.first;
                    break;
                }
            }
        }
        let rest = self.verify_after(expected_hash, from, self.head_seq)?;
        Ok(VerifySummary { records: records + rest.records, head_hash: rest.head_hash })
    }

    /// Checks records `from..=to`, the first of which must name `expected_hash`.
    fn verify_after(&self, mut expected_hash: [u8; 32], from: u64, to: u64) -> Result<VerifySummary> {
        let mut summary = VerifySummary { records: 0, head_hash: expected_hash };
        let mut next = from.max(1);
        for item in self.stored_range(from, to) {
            let (seq, stored) = item?;
            // Decoded in place: every check of `Record::decode`, without a copy of the fields.
            RecordRef::decode(seq, &stored)?.check_chain(&expected_hash)?;
            expected_hash = hash_stored(&stored);
            summary.records += 1;
            next += 1;
        }
        if next <= to {
            return Err(EngineError::Damaged(format!("record {next}: missing (log ends at {})", next - 1)));
        }
        summary.head_hash = expected_hash;
        Ok(summary)
    }

    /// Bytes sled and the segment files use on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.segments.bytes()
    }
}

/// What a clean verification saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    pub head_hash: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_schemas::{Entry, Status};

    fn entry(stream: &str, ms: u64) -> NewRecord {
        NewRecord {
            body: Body::Entry(Entry {
                stream: stream.into(),
                id: EntryId { ms, seq: 0 },
                fields: vec![("type".into(), b"x".to_vec())],
                status: Status::Accepted,
            }),
            request: Some((stream.into(), format!("req-{ms}"))),
        }
    }

    #[test]
    fn appends_indexes_and_reopens() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
            let records = log.append(vec![entry("a", 5), entry("b", 3), entry("a", 4)]).unwrap();
            assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
            assert_eq!(log.seen("a", EntryId { ms: 4, seq: 0 }).unwrap(), Some(3));
            assert_eq!(log.cursor("a").unwrap(), Some(EntryId { ms: 5, seq: 0 }));
            assert_eq!(log.seen("a", EntryId { ms: 6, seq: 0 }).unwrap(), None);
            assert_eq!(log.seen("a", EntryId { ms: 5, seq: 0 }).unwrap(), Some(1));
            assert_eq!(log.seen("b", EntryId { ms: 3, seq: 0 }).unwrap(), Some(2));
            // An entry below the cursor that was never recorded (delivered to another
            // consumer), then claimed and recorded: found through its own key.
            assert!(!log.recorded("a", EntryId { ms: 2, seq: 0 }).unwrap());
            log.append(vec![entry("a", 2), entry("a", 9)]).unwrap();
            assert_eq!(log.seen("a", EntryId { ms: 2, seq: 0 }).unwrap(), Some(4));
            assert_eq!(log.seen("a", EntryId { ms: 9, seq: 0 }).unwrap(), Some(5));
            assert!(log.recorded("a", EntryId { ms: 4, seq: 0 }).unwrap());
            assert!(!log.recorded("a", EntryId { ms: 3, seq: 0 }).unwrap());
            assert_eq!(log.request_seen("b", "req-3").unwrap(), Some(2));
        }
        let log = Log::open(tmp.path(), 1 << 20).unwrap();
        assert_eq!(log.head_seq(), 5);
        assert_eq!(log.cursor("a").unwrap(), Some(EntryId { ms: 9, seq: 0 }));
        assert_eq!(log.seen("a", EntryId { ms: 4, seq: 0 }).unwrap(), Some(3));
        assert_eq!(log.verify(1, 5).unwrap().records, 5);
        assert_eq!(log.range(2, 3).count(), 2);
    }

    #[test]
    fn a_damaged_record_is_named_on_open_and_by_verify() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
            log.append((1..=10).map(|ms| entry("a", ms)).collect()).unwrap();
            let key = log_key(7);
            let mut stored = log.db.get(key).unwrap().unwrap().to_vec();
            stored[20] ^= 0x10;
            log.db.insert(key, stored).unwrap();
            log.db.flush().unwrap();
        }
        let err = Log::open(tmp.path(), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("record 7"), "{err}");
    }

    #[test]
    fn a_log_that_lost_its_tail_is_caught_by_the_anchor() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
            log.append((1..=10).map(|ms| entry("a", ms)).collect()).unwrap();
            for seq in 8..=10 {
                log.db.remove(log_key(seq)).unwrap();
            }
            log.db.flush().unwrap();
        }
        let log = Log::open_with(tmp.path(), 1 << 20, false).unwrap();
        assert_eq!(log.head_seq(), 7);
        assert!(log.verify(1, 7).is_ok(), "the shorter log is self-consistent");
        let err = log.check_anchor().unwrap_err().to_string();
        assert!(err.contains("record 8: missing") && err.contains("head anchor records seq 10"), "{err}");
    }

    /// A record rewritten whole (its checksum right) but naming another predecessor is caught
    /// by the chain alone.
    #[test]
    fn a_record_naming_the_wrong_predecessor_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
        log.append((1..=10).map(|ms| entry("a", ms)).collect()).unwrap();
        let mut record = log.read(6).unwrap().unwrap();
        record.prev_hash[0] ^= 1;
        log.db.insert(log_key(6), record.encode().unwrap()).unwrap();
        let err = log.verify(1, 10).unwrap_err().to_string();
        assert!(err.contains("record 6: chain broken"), "{err}");
    }

    #[test]
    fn a_removed_record_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
        log.append((1..=5).map(|ms| entry("a", ms)).collect()).unwrap();
        log.db.remove(log_key(3)).unwrap();
        let err = log.verify(1, 5).unwrap_err();
        assert!(err.to_string().contains("record 3: missing"), "{err}");
    }
}
