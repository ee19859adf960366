//! The store's key layout, in one sled tree:
//!
//! - `p` + name + 0 + key: a projection's state;
//! - `s` + name: its position (the last log seq applied);
//! - `d` + name: its state digest, kept current by every commit;
//! - `h` + name + 0 + seq: its checkpoint hashes;
//! - `o` + seq + index: the outbox (see [`super::queue`]);
//! - `e`, `w` + kind + 0, `f`, each + seq + index: effect intents queued, waiting for a
//!   runner, in flight (see [`super::effect_queue`]);
//! - `g`: the dispatch guard;
//! - `m`: the publish mark (see [`super::queue`]).
//!
//! Names hold no zero byte, so the `0` after a name ends it.

use crate::error::{EngineError, Result};

/// The first byte of every state key.
pub(super) const STATE: &[u8] = b"p";
pub(super) const OUTBOX: &[u8] = b"o";
pub(super) const EFFECTS_QUEUED: &[u8] = b"e";
pub(super) const EFFECTS_WAITING: &[u8] = b"w";
pub(super) const EFFECTS_IN_FLIGHT: &[u8] = b"f";
pub(super) const GUARD_KEY: &[u8] = b"g";
pub(super) const PUBLISHED_KEY: &[u8] = b"m";

pub(super) fn state_key(name: &str, key: &[u8]) -> Vec<u8> {
    [STATE, name.as_bytes(), &[0], key].concat()
}

pub(super) fn digest_key(name: &str) -> Vec<u8> {
    [b"d", name.as_bytes()].concat()
}

pub(super) fn position_key(name: &str) -> Vec<u8> {
    [b"s", name.as_bytes()].concat()
}

pub(super) fn checkpoint_prefix(name: &str) -> Vec<u8> {
    [b"h", name.as_bytes(), &[0]].concat()
}

pub(super) fn checkpoint_key(name: &str, seq: u64) -> Vec<u8> {
    [checkpoint_prefix(name).as_slice(), &seq.to_be_bytes()].concat()
}

/// The log position that ends every queue key: seq, then index, big-endian, so a queue is in
/// log order.
pub(super) fn log_position(seq: u64, index: u32) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&index.to_be_bytes());
    out
}

/// The (seq, index) of a [`log_position`], if `bytes` is one.
pub(super) fn parse_log_position(bytes: &[u8]) -> Option<(u64, u32)> {
    let seq = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let index = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some((seq, index))
}

pub(super) fn u64_value(value: &[u8]) -> Result<u64> {
    value
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| EngineError::State(format!("position of {} bytes", value.len())))
}
