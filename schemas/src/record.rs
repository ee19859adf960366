//! The log record envelope: what the engine stores, once, for every stream entry it reads, and
//! for the few things it decides itself (clock ticks, quarantines).
//!
//! Stored bytes are `crc32(body) as little-endian u32` followed by the bincode body. Each body
//! names the hash of the previous record's stored bytes, so the records form a chain: a changed,
//! removed, inserted or reordered record breaks it at a seq that verification can name.

use crate::{EntryId, Reject, codec};
use serde::{Deserialize, Serialize};

/// The newest record format this build reads and writes. A record is written in the oldest
/// format that holds it (see [`format_for`]), so a log without own references stays readable
/// by builds that know only format 1; older formats are read as they are, never rewritten.
///
/// - 1: entries with their fields, clock, quarantine, config and setting records.
/// - 2: adds [`Status::OwnRef`], an engine's own output recorded by reference.
pub const RECORD_FORMAT: u16 = 2;

/// The hash a record's predecessor is taken to have when it is the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Record format version (see [`RECORD_FORMAT`]).
    pub format: u16,
    /// Position in the log: gap-free, starting at 1.
    pub seq: u64,
    /// Hash of the previous record's stored bytes ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: [u8; 32],
    /// What happened.
    pub body: Body,
}

/// What a record says happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A stream entry was read.
    Entry(Entry),
    /// The engine's clock passed `time_ms`; time-based decisions are taken on these records.
    Clock { time_ms: u64 },
    /// Record `target_seq` crashed the process `deliveries` times while being handled; handlers
    /// skip it from now on, in live runs and in replays alike.
    Quarantine { target_seq: u64, reason: String, deliveries: u32 },
    /// The engine started with this configuration, which decides what records mean: the stream
    /// keys by role, and the template registry's bootstrap admins (tenant, user). Handlers and
    /// replay tools take it from here, so a replay decides as the live run did, whatever the
    /// replaying tool's own settings.
    Config { admins: Vec<(String, String)>, streams: crate::StreamSet },
    /// A handler setting the engine started with (`execution.max_active_environments`, ...),
    /// recorded when it differs from the last record of that name, so that replays decide with
    /// the value the live run had at that point.
    Setting { name: String, value: String },
}

/// Field/value pairs of a stream entry, in Redis order, names and values as the bytes Redis
/// held: a name that is not UTF-8 is kept, never replaced, so two names that differ only in
/// invalid bytes stay two fields. (bincode writes a `Vec<u8>` exactly as it wrote the `String`
/// names of earlier builds, so their records decode unchanged.)
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A stream entry as read from Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The stream key.
    pub stream: String,
    /// The Redis entry id; its millisecond part is the entry's time.
    pub id: EntryId,
    /// The raw field/value pairs in Redis order. Empty for an entry rejected as too large: its
    /// payload is not copied anywhere.
    pub fields: Fields,
    /// How the engine took the entry.
    pub status: Status,
}

/// How the engine took an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Valid input for the handlers.
    Accepted,
    /// An entry this engine published itself, read back: recorded, never handled as new input.
    Own,
    /// A producer re-sent a request already recorded at `of_seq`.
    Duplicate { of_seq: u64 },
    /// Not valid input; copied to the dead-letter stream with the reason.
    Rejected { reason: Reject, deliveries: u32 },
    /// An entry this engine published itself, read back and recorded by reference: the entry's
    /// fields are left out (they are a function of the logged inputs, and a replay makes them
    /// again); what identifies them is kept. Format 2.
    OwnRef(OwnRef),
}

/// What the log keeps of an own output instead of its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnRef {
    /// The `output_id` field as published: `<seq>-<index>` of the outbox entry, and its mark.
    pub output_id: Vec<u8>,
    /// [`crate::own::fields_hash`] of the entry's fields, to compare with Redis while it holds
    /// the entry.
    pub fields_hash: [u8; 32],
    /// The entry's size, names and values, in bytes.
    pub bytes: u64,
}

impl Status {
    /// The short name used in exports and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Own | Status::OwnRef(_) => "own",
            Status::Duplicate { .. } => "duplicate",
            Status::Rejected { .. } => "rejected",
        }
    }
}

impl Status {
    /// True for an engine's own output read back, recorded in full or by reference.
    pub fn is_own(&self) -> bool {
        matches!(self, Status::Own | Status::OwnRef(_))
    }
}

/// The format a record with `body` is written in: the oldest that holds it.
pub fn format_for(body: &Body) -> u16 {
    match body {
        Body::Entry(Entry { status: Status::OwnRef(_), .. }) => 2,
        _ => 1,
    }
}

impl Entry {
    /// The value of the first field called `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v.as_slice())
    }
}

/// Why stored bytes are not a valid record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record {seq}: shorter than its checksum ({len} bytes)")]
    Truncated { seq: u64, len: usize },
    #[error("record {seq}: checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { seq: u64, stored: u32, computed: u32 },
    #[error("record {seq}: body does not decode: {detail}")]
    Body { seq: u64, detail: String },
    #[error("record {seq}: stored under seq {seq} but says it is seq {claimed}")]
    WrongSeq { seq: u64, claimed: u64 },
    #[error("record {seq}: format {format} is newer than this build understands ({RECORD_FORMAT})")]
    FutureFormat { seq: u64, format: u16 },
    #[error("record {seq}: chain broken: it names predecessor hash {found}, the predecessor hashes to {expected}")]
    Chain { seq: u64, expected: String, found: String },
    #[error("record {seq}: does not encode: {detail}")]
    Encode { seq: u64, detail: String },
}

impl RecordError {
    /// The seq of the record the error is about.
    pub fn seq(&self) -> u64 {
        match self {
            RecordError::Truncated { seq, .. }
            | RecordError::Checksum { seq, .. }
            | RecordError::Body { seq, .. }
            | RecordError::WrongSeq { seq, .. }
            | RecordError::FutureFormat { seq, .. }
            | RecordError::Chain { seq, .. }
            | RecordError::Encode { seq, .. } => *seq,
        }
    }
}

/// The chain hash of a record's stored bytes.
pub fn hash_stored(stored: &[u8]) -> [u8; 32] {
    *blake3::hash(stored).as_bytes()
}

/// Lowercase hex of bytes (hashes, git object ids, binary keys), for messages and exports.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

impl Record {
    /// Encodes the record as stored bytes (checksum + body).
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let body = codec::encode(self).map_err(|e| RecordError::Encode { seq: self.seq, detail: e.to_string() })?;
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes stored bytes found under `seq`, checking the checksum, the format and the seq.
    /// The chain is checked by the caller, who knows the predecessor.
    pub fn decode(seq: u64, stored: &[u8]) -> Result<Record, RecordError> {
        let (crc, body) = stored.split_first_chunk::<4>().ok_or(RecordError::Truncated { seq, len: stored.len() })?;
        let stored_crc = u32::from_le_bytes(*crc);
        let computed = crc32fast::hash(body);
        if stored_crc != computed {
            return Err(RecordError::Checksum { seq, stored: stored_crc, computed });
        }
        let record: Record = codec::decode(body).map_err(|e| RecordError::Body { seq, detail: e.to_string() })?;
        if record.format > RECORD_FORMAT {
            return Err(RecordError::FutureFormat { seq, format: record.format });
        }
        if record.seq != seq {
            return Err(RecordError::WrongSeq { seq, claimed: record.seq });
        }
        Ok(record)
    }

    /// Checks that this record names `expected` as its predecessor's hash.
    pub fn check_chain(&self, expected: &[u8; 32]) -> Result<(), RecordError> {
        if &self.prev_hash == expected {
            Ok(())
        } else {
            Err(RecordError::Chain { seq: self.seq, expected: hex(expected), found: hex(&self.prev_hash) })
        }
    }

    /// The entry this record holds, if it holds one.
    pub fn entry(&self) -> Option<&Entry> {
        match &self.body {
            Body::Entry(entry) => Some(entry),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(seq: u64) -> Record {
        Record {
            format: RECORD_FORMAT,
            seq,
            prev_hash: GENESIS_HASH,
            body: Body::Entry(Entry {
                stream: "maestro:streams:k8s:jobs".into(),
                id: EntryId { ms: 1_700_000_000_000, seq: 3 },
                fields: vec![("type".into(), b"get_logs".to_vec()), ("payload".into(), b"{}".to_vec())],
                status: Status::Accepted,
            }),
        }
    }

    #[test]
    fn round_trips() {
        let record = sample(9);
        let stored = record.encode().unwrap();
        assert_eq!(Record::decode(9, &stored).unwrap(), record);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let stored = sample(4).encode().unwrap();
        for byte in 0..stored.len() {
            for bit in 0..8 {
                let mut damaged = stored.clone();
                damaged[byte] ^= 1 << bit;
                let err = Record::decode(4, &damaged).unwrap_err();
                assert_eq!(err.seq(), 4, "byte {byte} bit {bit}: {err}");
            }
        }
    }

    #[test]
    fn wrong_seq_and_truncation_are_named() {
        let stored = sample(4).encode().unwrap();
        assert!(matches!(Record::decode(5, &stored), Err(RecordError::WrongSeq { seq: 5, claimed: 4 })));
        assert!(matches!(Record::decode(4, &stored[..3]), Err(RecordError::Truncated { seq: 4, .. })));
    }

    #[test]
    fn chain_names_the_record() {
        let first = sample(1);
        let mut second = sample(2);
        second.prev_hash = hash_stored(&first.encode().unwrap());
        assert!(second.check_chain(&hash_stored(&first.encode().unwrap())).is_ok());
        let err = second.check_chain(&GENESIS_HASH).unwrap_err();
        assert_eq!(err.seq(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), seq in 0u64..10) {
            let _ = Record::decode(seq, &bytes);
        }

        #[test]
        fn arbitrary_bodies_with_valid_crc_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut stored = crc32fast::hash(&body).to_le_bytes().to_vec();
            stored.extend_from_slice(&body);
            let _ = Record::decode(1, &stored);
        }
    }
}
