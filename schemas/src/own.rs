//! The engine's own outputs, recognised by proof rather than by claim.
//!
//! Every entry the engine publishes carries `origin` (`maestro-engine/<consumer>`) and
//! `output_id`; any producer can write both. What proves an entry the engine's is its mark: a
//! keyed BLAKE3 hash of the stream key and of every field name and value as published (the
//! filled-in `duration_ms` included), carried at the end of the output id:
//! `<seq>-<index>.<64 hex digits>`. The 32-byte key is shared by the engines of one consumer
//! group and by nobody else, so only an engine of the group can make a mark that checks. An
//! entry without a mark that checks is input, whatever its fields say.
//!
//! The mark travels inside `output_id` rather than in a field of its own: the old consumers'
//! models accept exactly the fields they knew plus the engine's `origin` and `output_id`.
//! A verbatim copy of an engine output onto the same stream carries a valid mark and counts as
//! the engine's: it is what an engine wrote, and it is recorded, not handled as a request.

use crate::envelope::ORIGIN_PREFIX;

/// The field naming the engine that wrote an output.
pub const ORIGIN_FIELD: &[u8] = b"origin";
/// The field holding an output's id, and its mark.
pub const OUTPUT_ID_FIELD: &[u8] = b"output_id";
/// Separates the output id from its mark.
const SEPARATOR: u8 = b'.';

/// The key of the marks of one consumer group. Its `Debug` form never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct OutputKey([u8; blake3::KEY_LEN]);

impl std::fmt::Debug for OutputKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputKey(..)")
    }
}

impl OutputKey {
    pub fn new(bytes: [u8; blake3::KEY_LEN]) -> OutputKey {
        OutputKey(bytes)
    }

    /// The key from its 64 hex digits (how it is kept in Redis).
    pub fn from_hex(text: &[u8]) -> Option<OutputKey> {
        blake3::Hash::from_hex(text).ok().map(|hash| OutputKey(*hash.as_bytes()))
    }

    pub fn to_hex(&self) -> String {
        crate::record::hex(&self.0)
    }

    /// The mark of an entry for `stream` whose fields are `fields`, with `base` standing for
    /// the value of field `at` (the output id that carries the mark). Every part is
    /// length-prefixed, so no two different entries hash the same bytes.
    fn mark(&self, stream: &str, fields: &[(Vec<u8>, Vec<u8>)], at: usize, base: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        let mut part = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        part(stream.as_bytes());
        for (i, (name, value)) in fields.iter().enumerate() {
            part(name);
            part(if i == at { base } else { value });
        }
        hasher.finalize()
    }

    /// Appends the mark to the first `output_id` field (the engine's: a dead-letter copy holds
    /// the producer's fields after it) of an output about to be published on `stream`, whose
    /// other fields are final. Returns false, changing nothing, when there is no `output_id`.
    pub fn seal(&self, stream: &str, fields: &mut [(Vec<u8>, Vec<u8>)]) -> bool {
        let Some(at) = first(fields, OUTPUT_ID_FIELD) else { return false };
        let mark = self.mark(stream, fields, at, &fields[at].1);
        let value = &mut fields[at].1;
        value.push(SEPARATOR);
        value.extend_from_slice(mark.to_hex().as_bytes());
        true
    }

    /// True when an entry read from `stream` is an output of an engine holding this key: its
    /// first `origin` is an engine's and the mark its first `output_id` carries checks
    /// (compared in constant time) over every field.
    pub fn is_own_output(&self, stream: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> bool {
        let origin = first(fields, ORIGIN_FIELD).map(|i| &fields[i].1);
        if !origin.is_some_and(|value| value.starts_with(ORIGIN_PREFIX.as_bytes())) {
            return false;
        }
        let Some(at) = first(fields, OUTPUT_ID_FIELD) else { return false };
        let id = &fields[at].1;
        let Some(split) = id.iter().rposition(|b| *b == SEPARATOR) else { return false };
        let (base, mark) = (&id[..split], &id[split + 1..]);
        blake3::Hash::from_hex(mark).is_ok_and(|mark| mark == self.mark(stream, fields, at, base))
    }
}

/// The plain (unkeyed) BLAKE3 of an entry's stream key and fields, each part length-prefixed:
/// what the log keeps of an own output, so that anyone can compare it with the entry in Redis
/// without the group's key.
pub fn fields_hash(stream: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut part = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    part(stream.as_bytes());
    for (name, value) in fields {
        part(name);
        part(value);
    }
    *hasher.finalize().as_bytes()
}

/// The reference the log keeps of an own output read from `stream` (one whose mark checked):
/// its output id, the hash of its fields and its size.
pub fn reference(stream: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> crate::OwnRef {
    let output_id = first(fields, OUTPUT_ID_FIELD).map(|i| fields[i].1.clone()).unwrap_or_default();
    crate::OwnRef {
        output_id,
        fields_hash: fields_hash(stream, fields),
        bytes: crate::envelope::entry_bytes(fields) as u64,
    }
}

/// The index of the first field called `name`.
fn first(fields: &[(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<usize> {
    fields.iter().position(|(k, _)| k.as_slice() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "maestro:streams:templates:results";

    fn output() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"origin".to_vec(), b"maestro-engine/c1".to_vec()),
            (b"output_id".to_vec(), b"12-0".to_vec()),
            (b"data".to_vec(), br#"{"duration_ms":7}"#.to_vec()),
        ]
    }

    fn sealed(key: &OutputKey) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut fields = output();
        assert!(key.seal(STREAM, &mut fields));
        fields
    }

    #[test]
    fn a_sealed_output_is_own_and_keeps_its_id_in_front() {
        let key = OutputKey::new([7; 32]);
        let fields = sealed(&key);
        assert!(key.is_own_output(STREAM, &fields));
        assert!(fields[1].1.starts_with(b"12-0."));
        assert_eq!(fields[1].1.len(), "12-0.".len() + 64);
        assert_eq!(OutputKey::from_hex(key.to_hex().as_bytes()), Some(key.clone()));
        assert_eq!(format!("{key:?}"), "OutputKey(..)");
    }

    #[test]
    fn claims_without_a_valid_mark_are_input() {
        let key = OutputKey::new([7; 32]);
        // The bare claim, as any producer can write it.
        assert!(!key.is_own_output(STREAM, &output()));
        // Another group's key, another stream, a mark that is not hex.
        assert!(!OutputKey::new([8; 32]).is_own_output(STREAM, &sealed(&key)));
        assert!(!key.is_own_output("maestro:streams:k8s:status", &sealed(&key)));
        let mut fields = output();
        fields[1].1.extend_from_slice(&[b'.'; 65]);
        assert!(!key.is_own_output(STREAM, &fields));
        // Any changed byte of any field, the origin's included.
        let good = sealed(&key);
        for field in 0..good.len() {
            for part in 0..2 {
                let mut changed = good.clone();
                let bytes = if part == 0 { &mut changed[field].0 } else { &mut changed[field].1 };
                bytes[0] ^= 1;
                assert!(!key.is_own_output(STREAM, &changed), "field {field} part {part}");
            }
        }
        // A field added; an output id put in front of the marked one.
        let mut added = good.clone();
        added.push((b"extra".to_vec(), b"x".to_vec()));
        assert!(!key.is_own_output(STREAM, &added));
        let mut front = good.clone();
        front.insert(0, (b"output_id".to_vec(), b"1-0".to_vec()));
        assert!(!key.is_own_output(STREAM, &front));
        assert!(!key.seal(STREAM, &mut [(b"data".to_vec(), b"{}".to_vec())]));
    }

    #[test]
    fn a_reference_names_the_output_and_hashes_every_byte() {
        let key = OutputKey::new([7; 32]);
        let fields = sealed(&key);
        let reference = reference(STREAM, &fields);
        assert_eq!(reference.output_id, fields[1].1);
        assert_eq!(reference.bytes, crate::envelope::entry_bytes(&fields) as u64);
        assert_ne!(fields_hash("maestro:streams:templates:usage", &fields), reference.fields_hash);
        for field in 0..fields.len() {
            for part in 0..2 {
                let mut changed = fields.clone();
                let bytes = if part == 0 { &mut changed[field].0 } else { &mut changed[field].1 };
                bytes.push(b'x');
                assert_ne!(fields_hash(STREAM, &changed), reference.fields_hash, "field {field} part {part}");
            }
        }
        // Moving a byte from a name to its value changes the hash: the parts are length-prefixed.
        let moved = vec![(b"ab".to_vec(), b"c".to_vec())];
        assert_ne!(fields_hash(STREAM, &moved), fields_hash(STREAM, &[(b"a".to_vec(), b"bc".to_vec())]));
    }

    #[test]
    fn a_dead_letter_copy_of_a_spoofed_entry_is_marked_on_the_engine_id() {
        let key = OutputKey::new([7; 32]);
        let mut copy = output();
        copy.extend(output());
        assert!(key.seal(STREAM, &mut copy));
        assert!(key.is_own_output(STREAM, &copy));
        assert_eq!(copy[4].1, b"12-0", "the producer's output_id is copied as it was");
    }
}
