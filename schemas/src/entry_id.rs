//! Redis stream entry ids (`<ms>-<seq>`), which also carry the producer-side time of an entry.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Redis stream entry id. Ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    /// Milliseconds since the Unix epoch, as stamped by Redis when the entry was added.
    pub ms: u64,
    /// Sequence within that millisecond.
    pub seq: u64,
}

/// Why a text is not an entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream entry id: {0:?}")]
pub struct BadEntryId(pub String);

impl EntryId {
    /// The id Redis uses for "before everything" (`0-0`).
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` (or a bare `<ms>`, which Redis reads as `<ms>-0`).
    pub fn parse(text: &str) -> Result<EntryId, BadEntryId> {
        let bad = || BadEntryId(text.chars().take(64).collect());
        let (ms, seq) = match text.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (text, "0"),
        };
        let ms = ms.parse::<u64>().map_err(|_| bad())?;
        let seq = seq.parse::<u64>().map_err(|_| bad())?;
        Ok(EntryId { ms, seq })
    }

    /// Big-endian bytes, so that byte order equals id order in sled keys.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// Inverse of [`EntryId::to_be_bytes`]; `None` when the slice is not 16 bytes long.
    pub fn from_be_bytes(bytes: &[u8]) -> Option<EntryId> {
        let ms = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        (bytes.len() == 16).then_some(EntryId { ms, seq })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id = EntryId::parse("1700000000123-7").unwrap();
        assert_eq!(id, EntryId { ms: 1_700_000_000_123, seq: 7 });
        assert_eq!(id.to_string(), "1700000000123-7");
        assert_eq!(EntryId::parse("5").unwrap(), EntryId { ms: 5, seq: 0 });
        assert!(EntryId::parse("x-1").is_err());
        assert!(EntryId::parse("1-").is_err());
        assert!(EntryId::parse("").is_err());
    }

    #[test]
    fn byte_order_is_id_order() {
        let a = EntryId { ms: 1, seq: 300 };
        let b = EntryId { ms: 2, seq: 0 };
        assert!(a < b && a.to_be_bytes() < b.to_be_bytes());
        assert_eq!(EntryId::from_be_bytes(&b.to_be_bytes()), Some(b));
        assert_eq!(EntryId::from_be_bytes(&[0; 15]), None);
    }
}
