//! The one bincode configuration of the project. Every byte string we decode may be corrupt, so
//! the decoder is bounded: a damaged length prefix cannot make it allocate without limit.

use bincode::Options;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Upper bound on any decoded value, well above the largest accepted entry (64 MiB).
pub const DECODE_LIMIT: u64 = 64 * 1024 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().with_limit(DECODE_LIMIT)
}

/// Encodes a value with the project's bincode options.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    options().serialize(value)
}

/// Decodes a value with the project's bincode options, bounded by [`DECODE_LIMIT`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}

/// Decodes a value that borrows strings and byte strings from `bytes` instead of copying them,
/// with the same options and bound as [`decode`].
pub fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}
