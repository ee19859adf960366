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

/// Reads [`Fields`] with each name and value taken as one byte string, where serde's default
/// for a `Vec<u8>` reads it a byte at a time (a call per byte of every entry). bincode writes
/// the two alike (a length, then the bytes), so stored records decode unchanged.
fn deserialize_fields<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Fields;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence of (name, value) byte strings")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Fields, A::Error> {
            let mut fields = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some((ByteBuf(name), ByteBuf(value))) = seq.next_element()? {
                fields.push((name, value));
            }
            Ok(fields)
        }
    }
    deserializer.deserialize_seq(Pairs)
}

/// A byte string read whole (see [`deserialize_fields`]).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteBuf, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteBuf, E> {
                Ok(ByteBuf(text.as_bytes().to_vec()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(ByteBuf(bytes))
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

/// A stream entry as read from Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The stream key.
    pub stream: String,
    /// The Redis entry id; its millisecond part is the entry's time.
    pub id: EntryId,
    /// The raw field/value pairs in Redis order. Empty for an entry rejected as too large: its
    /// payload is not copied anywhere.
    #[serde(deserialize_with = "deserialize_fields")]
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
#[derive(Clone, Debug, thiserror::Error)]
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

/// The body of stored bytes found under `seq`, once their checksum is checked.
fn checked_body(seq: u64, stored: &[u8]) -> Result<&[u8], RecordError> {
    let (crc, body) = stored.split_first_chunk::<4>().ok_or(RecordError::Truncated { seq, len: stored.len() })?;
    let stored_crc = u32::from_le_bytes(*crc);
    let computed = crc32fast::hash(body);
    if stored_crc != computed {
        return Err(RecordError::Checksum { seq, stored: stored_crc, computed });
    }
    Ok(body)
}

/// Checks a decoded record's format and the seq it says it has.
fn check_header(seq: u64, format: u16, claimed: u64) -> Result<(), RecordError> {
    if format > RECORD_FORMAT {
        return Err(RecordError::FutureFormat { seq, format });
    }
    if claimed != seq {
        return Err(RecordError::WrongSeq { seq, claimed });
    }
    Ok(())
}

fn check_chain(seq: u64, prev_hash: &[u8; 32], expected: &[u8; 32]) -> Result<(), RecordError> {
    if prev_hash == expected {
        Ok(())
    } else {
        Err(RecordError::Chain { seq, expected: hex(expected), found: hex(prev_hash) })
    }
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
        let record: Record =
            codec::decode(checked_body(seq, stored)?).map_err(|e| RecordError::Body { seq, detail: e.to_string() })?;
        check_header(seq, record.format, record.seq)?;
        Ok(record)
    }

    /// Checks that this record names `expected` as its predecessor's hash.
    pub fn check_chain(&self, expected: &[u8; 32]) -> Result<(), RecordError> {
        check_chain(self.seq, &self.prev_hash, expected)
    }

    /// The entry this record holds, if it holds one.
    pub fn entry(&self) -> Option<&Entry> {
        match &self.body {
            Body::Entry(entry) => Some(entry),
            _ => None,
        }
    }
}

/// A record decoded in place, borrowing its strings and field bytes from the stored bytes: what
/// a reader that only checks or looks at records (verify, the sealer, export's filters) decodes
/// instead of a [`Record`], without a copy of every field. It mirrors [`Record`] field for field
/// and variant for variant, so it accepts exactly the stored bytes [`Record::decode`] accepts
/// (a test holds the two together).
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub struct RecordRef<'a> {
    pub format: u16,
    pub seq: u64,
    pub prev_hash: [u8; 32],
    #[serde(borrow)]
    pub body: BodyRef<'a>,
}

/// [`Body`], borrowed.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub enum BodyRef<'a> {
    Entry(#[serde(borrow)] EntryRef<'a>),
    Clock {
        time_ms: u64,
    },
    Quarantine {
        target_seq: u64,
        reason: &'a str,
        deliveries: u32,
    },
    Config {
        #[serde(borrow)]
        admins: Vec<(&'a str, &'a str)>,
        streams: crate::StreamSet,
    },
    Setting {
        name: &'a str,
        value: &'a str,
    },
}

/// [`Entry`], borrowed. The status is owned: only the rare rejected and by-reference entries
/// carry bytes in it.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub struct EntryRef<'a> {
    pub stream: &'a str,
    pub id: EntryId,
    #[serde(borrow)]
    pub fields: Vec<(&'a [u8], &'a [u8])>,
    pub status: Status,
}

impl<'a> RecordRef<'a> {
    /// [`Record::decode`] in place: the same checks, the same errors.
    pub fn decode(seq: u64, stored: &'a [u8]) -> Result<RecordRef<'a>, RecordError> {
        let record: RecordRef<'a> = codec::decode_borrowed(checked_body(seq, stored)?)
            .map_err(|e| RecordError::Body { seq, detail: e.to_string() })?;
        check_header(seq, record.format, record.seq)?;
        Ok(record)
    }

    /// Checks that this record names `expected` as its predecessor's hash.
    pub fn check_chain(&self, expected: &[u8; 32]) -> Result<(), RecordError> {
        check_chain(self.seq, &self.prev_hash, expected)
    }

    /// The owned record.
    pub fn to_owned(&self) -> Record {
        let str = |s: &str| s.to_string();
        let body = match &self.body {
            BodyRef::Entry(entry) => Body::Entry(Entry {
                stream: str(entry.stream),
                id: entry.id,
                fields: entry.fields.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
                status: entry.status.clone(),
            }),
            BodyRef::Clock { time_ms } => Body::Clock { time_ms: *time_ms },
            BodyRef::Quarantine { target_seq, reason, deliveries } => {
                Body::Quarantine { target_seq: *target_seq, reason: str(reason), deliveries: *deliveries }
            }
            BodyRef::Config { admins, streams } => Body::Config {
                admins: admins.iter().map(|(t, u)| (str(t), str(u))).collect(),
                streams: streams.clone(),
            },
            BodyRef::Setting { name, value } => Body::Setting { name: str(name), value: str(value) },
        };
        Record { format: self.format, seq: self.seq, prev_hash: self.prev_hash, body }
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

    /// One record of every body and status kind.
    fn every_kind() -> Vec<Record> {
        let entry = |status| {
            let mut record = sample(3);
            if let Body::Entry(entry) = &mut record.body {
                entry.status = status;
                entry.fields.push((vec![0xff, 0xfe], vec![0, 1, 2]));
            }
            record.format = format_for(&record.body);
            record
        };
        let bodies = [
            Body::Clock { time_ms: 77 },
            Body::Quarantine { target_seq: 2, reason: "crashed".into(), deliveries: 3 },
            Body::Config { admins: vec![("t".into(), "u".into())], streams: crate::StreamSet::default() },
            Body::Setting { name: "n".into(), value: "v".into() },
        ];
        let mut records: Vec<Record> =
            bodies.into_iter().map(|body| Record { format: 1, seq: 3, prev_hash: [7; 32], body }).collect();
        records.extend([
            entry(Status::Accepted),
            entry(Status::Own),
            entry(Status::Duplicate { of_seq: 1 }),
            entry(Status::Rejected { reason: Reject::new("too_large", "big"), deliveries: 2 }),
            entry(Status::OwnRef(OwnRef { output_id: b"1-0".to_vec(), fields_hash: [9; 32], bytes: 12 })),
        ]);
        records
    }

    /// The borrowed decode accepts what the owned one accepts, gives the same record, and fails
    /// with the same error, for every kind of record and every one-byte change of its body
    /// (checksum recomputed, so the body decoder itself is what decides).
    #[test]
    fn the_borrowed_decode_agrees_with_the_owned_one() {
        for record in every_kind() {
            let stored = record.encode().unwrap();
            assert_eq!(RecordRef::decode(3, &stored).unwrap().to_owned(), record);
            for at in 4..stored.len() {
                for change in [1u8, 0x80, 0xff] {
                    let mut body = stored[4..].to_vec();
                    body[at - 4] ^= change;
                    let mut damaged = crc32fast::hash(&body).to_le_bytes().to_vec();
                    damaged.extend_from_slice(&body);
                    match (Record::decode(3, &damaged), RecordRef::decode(3, &damaged)) {
                        (Ok(owned), Ok(borrowed)) => assert_eq!(borrowed.to_owned(), owned),
                        (Err(a), Err(b)) => {
                            // The same kind and seq; bincode's own detail may word a bad length
                            // differently for a borrowed byte string.
                            assert_eq!(std::mem::discriminant(&a), std::mem::discriminant(&b), "{a} / {b}");
                            assert_eq!(a.seq(), b.seq());
                        }
                        (a, b) => panic!("byte {at} ^ {change}: owned {a:?}, borrowed {b:?}"),
                    }
                }
            }
        }
    }

    /// [`Record`] as serde derives it with no help: fields read a byte at a time.
    #[derive(Debug, Deserialize)]
    struct Plain {
        format: u16,
        seq: u64,
        prev_hash: [u8; 32],
        body: PlainBody,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum PlainBody {
        Entry { stream: String, id: EntryId, fields: Vec<(Vec<u8>, Vec<u8>)>, status: Status },
        Clock { time_ms: u64 },
        Quarantine { target_seq: u64, reason: String, deliveries: u32 },
        Config { admins: Vec<(String, String)>, streams: crate::StreamSet },
        Setting { name: String, value: String },
    }

    /// Fields read whole decode exactly what serde's byte-at-a-time reading decodes, from every
    /// one-byte change of every kind of record.
    #[test]
    fn fields_read_whole_decode_as_read_a_byte_at_a_time() {
        for record in every_kind() {
            let body = codec::encode(&record).unwrap();
            for at in 0..body.len() {
                let mut changed = body.clone();
                changed[at] ^= 0x41;
                let fast: Result<Record, _> = codec::decode(&changed);
                let plain: Result<Plain, _> = codec::decode(&changed);
                match (fast, plain) {
                    (Ok(fast), Ok(plain)) => {
                        assert_eq!((fast.format, fast.seq, fast.prev_hash), (plain.format, plain.seq, plain.prev_hash));
                        if let (Body::Entry(entry), PlainBody::Entry { stream, fields, .. }) = (&fast.body, &plain.body)
                        {
                            assert_eq!((&entry.stream, &entry.fields), (stream, fields));
                        }
                    }
                    (Err(_), Err(_)) => {}
                    (fast, plain) => panic!("byte {at}: read whole {fast:?}, a byte at a time {plain:?}"),
                }
            }
        }
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
            let _ = RecordRef::decode(1, &stored);
        }
    }
}
