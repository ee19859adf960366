//! The frame: the unit a segment file is written and read in.
//!
//! A frame is a 24-byte header, `first seq (u64) | record count (u32) | payload length (u32) |
//! crc32 (u32) | zero (u32)`, all little-endian, then the payload: each record as its length
//! (u32) and its stored bytes, unchanged, so every record hash and the chain stay what they
//! were in sled. The CRC covers the first 16 header bytes and the payload: one check per frame
//! instead of one per record (the records keep their own checksums too, which name the damaged
//! seq when a frame's check fails).

use crate::error::{EngineError, Result};
use maestro_schemas::Record;
use std::sync::Arc;

pub const HEADER: usize = 24;

/// Records per frame, at most: a frame is read whole, so this bounds the memory of a reader.
pub const FRAME_RECORDS: usize = 1024;

/// Payload bytes after which a frame is closed early (large records).
pub const FRAME_BYTES: usize = 1 << 20;

/// A frame being filled by the sealer.
#[derive(Default)]
pub struct FrameWriter {
    first: u64,
    count: u32,
    payload: Vec<u8>,
}

impl FrameWriter {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count as usize >= FRAME_RECORDS || self.payload.len() >= FRAME_BYTES
    }

    pub fn push(&mut self, seq: u64, stored: &[u8]) -> Result<()> {
        if self.count == 0 {
            self.first = seq;
        }
        let len = u32::try_from(stored.len())
            .map_err(|_| EngineError::State(format!("record {seq}: {} bytes do not fit a frame", stored.len())))?;
        self.payload.extend_from_slice(&len.to_le_bytes());
        self.payload.extend_from_slice(stored);
        self.count += 1;
        Ok(())
    }

    /// The frame's bytes (header and payload); the writer is empty again afterwards.
    pub fn take(&mut self) -> Result<(u64, Vec<u8>)> {
        let len = u32::try_from(self.payload.len())
            .map_err(|_| EngineError::State(format!("frame at seq {} is too large", self.first)))?;
        let mut bytes = Vec::with_capacity(HEADER + self.payload.len());
        bytes.extend_from_slice(&self.first.to_le_bytes());
        bytes.extend_from_slice(&self.count.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes);
        crc.update(&self.payload);
        bytes.extend_from_slice(&crc.finalize().to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&self.payload);
        self.payload.clear();
        let first = self.first;
        self.count = 0;
        Ok((first, bytes))
    }
}

/// A frame read whole and checked: records are handed out as ranges of its bytes.
#[derive(Debug)]
pub struct Frame {
    pub first: u64,
    bytes: Vec<u8>,
    records: Vec<(usize, usize)>,
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The record ranges of a payload, or `None` where a length runs past it.
fn split(payload_at: usize, bytes: &[u8], count: usize) -> Option<Vec<(usize, usize)>> {
    let mut records = Vec::with_capacity(count);
    let mut at = payload_at;
    for _ in 0..count {
        let len = le_u32(bytes, at)? as usize;
        let end = (at + 4).checked_add(len)?;
        if end > bytes.len() {
            return None;
        }
        records.push((at + 4, end));
        at = end;
    }
    (at == bytes.len()).then_some(records)
}

impl Frame {
    /// Checks frame bytes read from `place` (a file and offset, for messages) that should
    /// start at seq `expected`. Damage is named by the seq of the record it hits, found through
    /// the records' own checksums when the frame's fails.
    pub fn parse(bytes: Vec<u8>, expected: u64, place: &str) -> Result<Arc<Frame>> {
        let damaged = |what: String| EngineError::Damaged(format!("record {expected}: {what} ({place})"));
        let (Some(first), Some(count), Some(len), Some(stored_crc)) =
            (le_u64(&bytes, 0), le_u32(&bytes, 8), le_u32(&bytes, 12), le_u32(&bytes, 16))
        else {
            return Err(damaged("missing: the segment frame that holds it is cut short".into()));
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..16]);
        crc.update(&bytes[HEADER..]);
        if crc.finalize() != stored_crc || HEADER + len as usize != bytes.len() {
            // Name the first record whose own checksum fails, when the damage is in one.
            if let Some(records) = split(HEADER, &bytes, count as usize).filter(|_| first == expected) {
                for (i, (start, end)) in records.iter().enumerate() {
                    Record::decode(expected + i as u64, &bytes[*start..*end])?;
                }
            }
            return Err(damaged("the segment frame that holds it fails its checksum".into()));
        }
        if first != expected {
            return Err(damaged(format!("missing: the segment frame in its place starts at seq {first}")));
        }
        let records = split(HEADER, &bytes, count as usize)
            .ok_or_else(|| damaged("the segment frame that holds it has bad record lengths".into()))?;
        Ok(Arc::new(Frame { first, bytes, records }))
    }

    /// Seq of the frame's last record.
    pub fn last(&self) -> u64 {
        self.first + self.records.len() as u64 - 1
    }

    pub fn count(&self) -> usize {
        self.records.len()
    }

    /// The stored bytes of record `seq`, if this frame holds it.
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        let (start, end) = *self.records.get(i)?;
        self.bytes.get(start..end)
    }
}

/// A record's stored bytes, shared with the frame (or the sled value) they were read in.
#[derive(Clone, Debug)]
pub enum Stored {
    Frame(Arc<Frame>, u64),
    Sled(sled::IVec),
}

impl std::ops::Deref for Stored {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Stored::Frame(frame, seq) => frame.get(*seq).unwrap_or_default(),
            Stored::Sled(value) => value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_names_what_is_wrong() {
        let mut writer = FrameWriter::default();
        for seq in 5..8 {
            writer.push(seq, format!("record-{seq}").as_bytes()).unwrap();
        }
        let (first, bytes) = writer.take().unwrap();
        assert_eq!(first, 5);
        assert!(writer.is_empty());
        let frame = Frame::parse(bytes.clone(), 5, "test").unwrap();
        assert_eq!((frame.first, frame.last(), frame.count()), (5, 7, 3));
        assert_eq!(frame.get(6), Some(&b"record-6"[..]));
        assert_eq!(frame.get(8), None);
        let error = Frame::parse(bytes.clone(), 4, "test").unwrap_err().to_string();
        assert!(error.contains("record 4: missing"), "{error}");
        let mut flipped = bytes.clone();
        flipped[HEADER + 6] ^= 1;
        let error = Frame::parse(flipped, 5, "test").unwrap_err().to_string();
        assert!(error.contains("record 5"), "{error}");
        let error = Frame::parse(bytes[..HEADER + 3].to_vec(), 5, "test").unwrap_err().to_string();
        assert!(error.contains("record 5"), "{error}");
    }
}
