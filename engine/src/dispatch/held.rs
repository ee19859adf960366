//! Outputs published before their batch is written. A live batch's outputs go out from memory
//! and the state batch is written after them, with the publish mark past them, so that they
//! never pass through the outbox (encoded, written and removed again for every answer). Their
//! records are durable in the log before they are dispatched, and the handlers
//! are pure, so a crash before the state batch is written loses nothing: start-up dispatches
//! those records again from the state the store kept, makes the same outputs under the same
//! `(seq, index)`, and the Redis publish guard skips those already published.

use super::{DISPATCHER, DispatchReport, Dispatcher};
use crate::error::Result;
use crate::store::OutboxItem;
use maestro_schemas::{Record, TypedEvent};

impl Dispatcher {
    /// Stages `records` like [`Dispatcher::dispatch`] but writes nothing yet: the caller
    /// publishes [`Dispatcher::held_outputs`], then writes the batch with
    /// [`Dispatcher::commit_published`], or with [`Dispatcher::flush`] (outputs to the outbox)
    /// when they could not go out first.
    pub fn dispatch_held(
        &mut self,
        records: &[Record],
        decoded: Option<&[Option<TypedEvent>]>,
    ) -> Result<DispatchReport> {
        self.stage(records, decoded)
    }

    /// The staged outputs in log order, when they may be published before their batch is
    /// written: nothing older waits (the publish mark stands at the dispatcher's position, the
    /// outbox is empty and no committed output is held for the publisher) and they fit in
    /// memory. `None` otherwise: then the batch is written first and published from the store.
    pub fn held_outputs(&self) -> Result<Option<Vec<&OutboxItem>>> {
        if self.load_bytes.is_some() || self.committed.batch.is_some() || self.committed.let_go {
            return Ok(None);
        }
        let after = self.store.position(DISPATCHER)?;
        if self.store.published_through()?.is_none_or(|mark| mark < after) || self.store.first_outbox()?.is_some() {
            return Ok(None);
        }
        let outputs = self.pending.outputs_in_order();
        let bytes: usize = outputs.iter().flat_map(|item| &item.fields).map(|(n, v)| n.len() + v.len()).sum();
        Ok((bytes <= super::Committed::MAX_BYTES).then_some(outputs))
    }

    /// Writes the staged batch once its outputs ([`Dispatcher::held_outputs`]) are published:
    /// none goes to the outbox, and the publish mark moves to the dispatcher's new position in
    /// the same batch.
    pub fn commit_published(&mut self) -> Result<()> {
        let through = self.store.position_with(&self.pending, DISPATCHER)?;
        let mut pending = std::mem::take(&mut self.pending);
        pending.mark_published(through);
        self.store.commit(pending).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use crate::dispatch::{Decoder, Dispatcher, OutputStamp};
    use crate::log::{Log, NewRecord};
    use crate::store::Store;
    use maestro_handlers::stream_stats::StreamStats;
    use maestro_schemas::envelope::{Limits, Reject};
    use maestro_schemas::{Body, Entry, EntryId, Record, Status, StreamSet};
    use std::sync::Arc;

    fn rejected_records(log: &mut Log, n: u64) -> Vec<Record> {
        let stream = StreamSet::default().templates_requests;
        let records = (1..=n)
            .map(|i| NewRecord {
                body: Body::Entry(Entry {
                    stream: stream.clone(),
                    id: EntryId { ms: i, seq: 0 },
                    fields: vec![(b"data".to_vec(), b"{".to_vec())],
                    status: Status::Rejected { reason: Reject::new("bad_json", "broken"), deliveries: 1 },
                }),
                request: None,
            })
            .collect();
        log.append(records).unwrap()
    }

    /// Outputs go out before their batch is written only when nothing older waits: the publish
    /// mark at the dispatcher's position and no committed output held for the publisher.
    #[test]
    fn outputs_are_held_for_publishing_first_only_when_nothing_older_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
        let records = rejected_records(&mut log, 4);
        let store = Store::open_tree(log.db(), "state", log.value_files()).unwrap();
        let stamp = OutputStamp { origin: "maestro-engine/t".into(), dead_letter_maxlen: 10 };
        let decoder = Decoder { streams: StreamSet::default(), limits: Limits::default() };
        let mut dispatcher = Dispatcher::new(vec![Arc::new(StreamStats)], store, &log, stamp, decoder, 10).unwrap();
        dispatcher.dispatch_held(&records[..2], None).unwrap();
        assert!(dispatcher.held_outputs().unwrap().is_none(), "a store without a publish mark holds nothing");
        dispatcher.start_publish_mark().unwrap();
        let held: Vec<(u64, u32)> =
            dispatcher.held_outputs().unwrap().unwrap().iter().map(|item| (item.seq, item.index)).collect();
        assert_eq!(held, vec![(1, 0), (2, 0)]);
        dispatcher.commit_published().unwrap();
        assert_eq!(dispatcher.store().published_through().unwrap(), Some(2));
        assert_eq!(dispatcher.store().first_outbox().unwrap(), None);
        // Written before being published: the next batch's outputs must wait behind them.
        dispatcher.dispatch(&records[2..3], None).unwrap();
        dispatcher.dispatch_held(&records[3..], None).unwrap();
        assert!(dispatcher.held_outputs().unwrap().is_none(), "a committed batch waits for the publisher");
        drop(dispatcher.take_committed());
        assert!(dispatcher.held_outputs().unwrap().is_none(), "the publish mark stands behind the dispatcher");
    }
}
