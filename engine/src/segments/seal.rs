//! The sealer: moves complete ranges of records from sled into segment files.

use super::frame::FrameWriter;
use super::{MAGIC, SegmentMeta, Segments, file_name, index_key};
use crate::error::{EngineError, Result};
use crate::failpoint::crash_point;
use crate::log::log_key;
use maestro_schemas::codec;
use maestro_schemas::record::{GENESIS_HASH, RecordRef, hash_stored};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Seals every complete range of `per_segment` records up to `head`, one segment at a time.
/// Each record is checksum- and chain-checked as it is copied, so damage is never sealed: it
/// stops the sealer with its seq named. Returns how many records were sealed.
pub(crate) fn seal(
    db: &sled::Db,
    sync_file: &File,
    segments: &mut Segments,
    head: u64,
    per_segment: u64,
) -> Result<u64> {
    let per_segment = per_segment.max(1);
    let mut sealed = 0;
    loop {
        let first = segments.sealed_through() + 1;
        let last = first.saturating_add(per_segment - 1);
        if last > head {
            return Ok(sealed);
        }
        let prev = segments.last().map_or(GENESIS_HASH, |m| m.last_hash);
        let meta = write_segment(db, segments.dir(), first, last, prev)?;
        let mut batch = sled::Batch::default();
        let entry = codec::encode(&meta).map_err(|e| EngineError::State(format!("segment index entry: {e}")))?;
        batch.insert(&index_key(first), entry);
        for seq in first..=last {
            batch.remove(&log_key(seq));
        }
        db.apply_batch(batch)?;
        db.flush()?;
        sync_file.sync_data().map_err(EngineError::Sync)?;
        crash_point("seal-after-index");
        tracing::info!(first, last, bytes = meta.bytes, "records sealed into a segment");
        segments.push(meta);
        sealed += last - first + 1;
    }
}

/// Writes records `first..=last` from sled into a new segment file, made durable (the file,
/// then its name in the directory) before the index may name it.
fn write_segment(db: &sled::Db, dir: &Path, first: u64, last: u64, prev: [u8; 32]) -> Result<SegmentMeta> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::DataDir { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = file_name(first, last);
    let (tmp, path) = (dir.join(format!("{name}.tmp")), dir.join(&name));
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC).map_err(io(&tmp))?;
    let mut meta = SegmentMeta { first, last, bytes: MAGIC.len() as u64, last_hash: prev, frames: Vec::new() };
    let mut frame = FrameWriter::default();
    let mut expected = first;
    let flush = |frame: &mut FrameWriter, meta: &mut SegmentMeta, out: &mut std::io::BufWriter<File>| {
        let (frame_first, bytes) = frame.take()?;
        meta.frames.push((frame_first, meta.bytes));
        meta.bytes += bytes.len() as u64;
        out.write_all(&bytes).map_err(io(&tmp))
    };
    for item in db.range(log_key(first)..=log_key(last)) {
        let (key, stored) = item?;
        let seq = key.get(1..9).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
        if seq != expected {
            return Err(EngineError::Damaged(format!("record {expected}: missing (next stored is {seq})")));
        }
        RecordRef::decode(seq, &stored)?.check_chain(&meta.last_hash)?;
        meta.last_hash = hash_stored(&stored);
        frame.push(seq, &stored)?;
        if frame.is_full() {
            flush(&mut frame, &mut meta, &mut out)?;
        }
        expected += 1;
    }
    if expected <= last {
        return Err(EngineError::Damaged(format!("record {expected}: missing (the log ends at {})", expected - 1)));
    }
    if !frame.is_empty() {
        flush(&mut frame, &mut meta, &mut out)?;
    }
    let file = out.into_inner().map_err(|e| EngineError::DataDir { path: tmp.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io(&tmp))?;
    crash_point("seal-after-write");
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    crash_point("seal-after-rename");
    Ok(meta)
}
