//! The first projection: per stream, how many records the log holds by status and the last
//! entry id. It proves the path from Redis to projection end to end, and is what `demo` prints.

use crate::contract::{Change, Decision, Event, Handler, HandlerError, StateView};
use maestro_schemas::{Body, Status};
use serde::{Deserialize, Serialize};

/// The projection's name.
pub const NAME: &str = "stream_stats";

/// Counts for one stream. Serialised as canonical JSON (fixed field order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    pub records: u64,
    pub accepted: u64,
    pub own: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub last_id: String,
}

/// Per-stream counts and last entry id.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamStats;

impl StreamStats {
    /// Decodes one stored value of this projection.
    pub fn decode(value: &[u8]) -> Result<StreamCounts, HandlerError> {
        serde_json::from_slice(value).map_err(|e| HandlerError::Invalid(format!("stream_stats value: {e}")))
    }
}

impl Handler for StreamStats {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sees_own_outputs(&self) -> bool {
        true
    }

    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> Result<Decision, HandlerError> {
        let Body::Entry(entry) = &event.record.body else {
            return Ok(Decision::default());
        };
        let key = entry.stream.as_bytes().to_vec();
        let mut counts = match state.get(&key) {
            Some(value) => Self::decode(&value)?,
            None => StreamCounts::default(),
        };
        counts.records += 1;
        match entry.status {
            Status::Accepted => counts.accepted += 1,
            Status::Own | Status::OwnRef(_) => counts.own += 1,
            Status::Duplicate { .. } => counts.duplicate += 1,
            Status::Rejected { .. } => counts.rejected += 1,
        }
        counts.last_id = entry.id.to_string();
        let value = serde_json::to_vec(&counts).map_err(|e| HandlerError::Invalid(e.to_string()))?;
        Ok(Decision { changes: vec![Change::Put { key, value }], ..Decision::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::apply_changes;
    use maestro_schemas::{Entry, EntryId, Record, Reject, record::RECORD_FORMAT};
    use std::collections::BTreeMap;

    fn record(seq: u64, stream: &str, status: Status) -> Record {
        Record {
            format: RECORD_FORMAT,
            seq,
            prev_hash: [0; 32],
            body: Body::Entry(Entry { stream: stream.into(), id: EntryId { ms: seq, seq: 0 }, fields: vec![], status }),
        }
    }

    #[test]
    fn counts_by_stream_and_status() {
        let mut state = BTreeMap::new();
        let records = [
            record(1, "a", Status::Accepted),
            record(2, "a", Status::Rejected { reason: Reject::new("bad_json", "x"), deliveries: 1 }),
            record(3, "b", Status::Own),
            record(4, "a", Status::Duplicate { of_seq: 1 }),
        ];
        for r in &records {
            let decision = StreamStats.handle(&state, Event { record: r, typed: None }).unwrap();
            apply_changes(&mut state, &decision.changes);
        }
        let a = StreamStats::decode(&state[b"a".as_slice()]).unwrap();
        assert_eq!((a.records, a.accepted, a.rejected, a.duplicate, a.last_id.as_str()), (3, 1, 1, 1, "4-0"));
        let b = StreamStats::decode(&state[b"b".as_slice()]).unwrap();
        assert_eq!((b.records, b.own), (1, 1));
    }
}
