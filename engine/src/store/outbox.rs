//! The outbox entry: an output waiting to be published, stored with the state that produced it.

use crate::error::{EngineError, Result};
use maestro_schemas::codec;
use serde::{Deserialize, Serialize};

/// An entry waiting to be published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub seq: u64,
    pub index: u32,
    pub stream: String,
    /// Names and values as bytes: a dead-letter copy holds the producer's names as Redis held
    /// them. (Written by earlier builds with `String` names, which bincode stores alike.)
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Approximate cap on the target stream's length (dead-letter streams are capped).
    pub maxlen: Option<u64>,
    /// Where the publisher fills in the elapsed milliseconds since this time (see
    /// `maestro_handlers::Output::elapsed_from_ms`).
    pub elapsed_from_ms: Option<u64>,
}

/// An outbox entry as written before `elapsed_from_ms` existed: a data dir upgraded with
/// entries still unpublished reads them as entries with no elapsed time to fill in.
#[derive(Deserialize)]
struct OutboxItemWithoutElapsed {
    seq: u64,
    index: u32,
    stream: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    maxlen: Option<u64>,
}

impl OutboxItem {
    pub(super) fn decode(bytes: &[u8]) -> Result<OutboxItem> {
        codec::decode(bytes)
            .or_else(|_| {
                codec::decode::<OutboxItemWithoutElapsed>(bytes).map(|old| OutboxItem {
                    seq: old.seq,
                    index: old.index,
                    stream: old.stream,
                    fields: old.fields,
                    maxlen: old.maxlen,
                    elapsed_from_ms: None,
                })
            })
            .map_err(|e| EngineError::State(format!("outbox entry: {e}")))
    }
}

impl super::queue::Queued for OutboxItem {
    fn encode(&self) -> Result<Vec<u8>> {
        codec::encode(self).map_err(|e| EngineError::State(e.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<OutboxItem> {
        OutboxItem::decode(bytes)
    }
}
