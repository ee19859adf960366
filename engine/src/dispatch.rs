//! Step 4 of the batch cycle: hand new log records to the handlers in log order, gather their
//! decisions, and commit state, positions and outbox in one store batch.
//!
//! A handler that errs or panics on a record loses only that record: its changes are dropped and
//! the record is copied to the dead-letter stream with the reason. A record that crashes the
//! whole process is caught by the catch-up guard: after `max_deliveries` crashes it is
//! quarantined by a record in the log, so live runs and replays skip it alike.

use crate::error::{EngineError, Result, panic_text};
use crate::log::{Log, NewRecord};
use crate::store::{CommittedOutputs, Guard, OutboxItem, Pending, Store, View};
use maestro_handlers::{Change, Event, Handler};
use maestro_schemas::envelope::Limits;
use maestro_schemas::ids::output_id;
use maestro_schemas::own::{ORIGIN_FIELD, OUTPUT_ID_FIELD};
use maestro_schemas::{Body, Fields, Origin, Record, Status, StreamSet, TypedEvent, decode};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

mod held;

/// The position key of the dispatcher itself (dead letters are emitted once, against it): how
/// far an engine that publishes outputs has dispatched.
pub const DISPATCHER: &str = "_dispatch";

/// Decodes accepted records for handlers when ingest did not hand the typed events over
/// (catch-up after a restart, replays).
#[derive(Clone, Debug)]
pub struct Decoder {
    pub streams: StreamSet,
    pub limits: Limits,
}

impl Decoder {
    /// The typed event of an accepted entry record.
    pub fn typed(&self, record: &Record) -> Option<TypedEvent> {
        let entry = record.entry().filter(|e| e.status == Status::Accepted)?;
        let role = self.streams.role_of(&entry.stream)?;
        decode(role, Origin { stream: &entry.stream, entry: entry.id }, &entry.fields, &self.limits)
            .ok()
            .map(|d| d.event)
    }
}

/// How outputs are stamped.
#[derive(Clone, Debug)]
pub struct OutputStamp {
    /// The `origin` field value: `maestro-engine/<consumer>`.
    pub origin: String,
    /// Approximate cap of every dead-letter stream.
    pub dead_letter_maxlen: u64,
}

/// What one dispatch did.
#[derive(Debug, Default)]
pub struct DispatchReport {
    pub records: u64,
    pub dead_lettered: u64,
    pub intents: u64,
    /// Valid entries a handler had nothing to do for, by (stream, reason).
    pub ignored: BTreeMap<(String, String), u64>,
    /// Dead-letter copies made, by (stream of the entry, reason code).
    pub dead_letters: BTreeMap<(String, String), u64>,
}

/// Dispatches records to handlers and keeps their projections.
pub struct Dispatcher {
    handlers: Vec<Arc<dyn Handler>>,
    store: Store,
    quarantined: BTreeSet<u64>,
    stamp: OutputStamp,
    decoder: Decoder,
    checkpoint_every: u64,
    keep: Keep,
    /// Changes not yet written: empty between calls unless `load_bytes` is set.
    pending: Pending,
    /// Load once this many bytes are staged instead of committing at the end of every call.
    load_bytes: Option<usize>,
    committed: Committed,
}

/// Outputs committed and not yet handed to the publisher, kept so that a batch's outputs are
/// published without reading them back from the store (and their bodies back from value
/// files). At most [`Committed::MAX_BYTES`] of fields are kept: past that (a long catch-up) they
/// are let go and the publisher reads the store and the log.
#[derive(Debug, Default)]
struct Committed {
    batch: Option<CommittedBatch>,
    bytes: usize,
    let_go: bool,
}

/// The outputs of the records after seq `after` up to `through`, in log order.
#[derive(Debug)]
pub struct CommittedBatch {
    pub items: Vec<OutboxItem>,
    /// The (seq, index) of those written to the outbox, to remove once they are published.
    pub stored: Vec<(u64, u32)>,
    pub after: u64,
    pub through: u64,
}

impl Committed {
    const MAX_BYTES: usize = 16 << 20;

    fn note(&mut self, outputs: CommittedOutputs, after: u64, through: u64) {
        let CommittedOutputs { stored, regenerable } = outputs;
        let fields = stored.iter().chain(&regenerable).flat_map(|i| &i.fields);
        self.bytes += fields.map(|(n, v)| n.len() + v.len()).sum::<usize>();
        let batch = self.batch.get_or_insert(CommittedBatch { items: vec![], stored: vec![], after, through });
        batch.through = through;
        if self.let_go || self.bytes > Self::MAX_BYTES {
            batch.items.clear();
            self.let_go = true;
            return;
        }
        batch.stored.extend(stored.iter().map(|item| (item.seq, item.index)));
        let first_new = batch.items.len();
        batch.items.extend(stored);
        batch.items.extend(regenerable);
        batch.items[first_new..].sort_unstable_by_key(|item| (item.seq, item.index));
    }

    fn take(&mut self) -> Option<CommittedBatch> {
        self.bytes = 0;
        let batch = self.batch.take();
        (!std::mem::replace(&mut self.let_go, false)).then_some(batch).flatten()
    }
}

/// What a dispatch keeps besides state: the engine keeps everything; a replay keeps what its
/// question needs (a history rebuild keeps intents; a state rebuild neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    /// Outputs and dead-letter copies, queued in the outbox.
    pub outputs: bool,
    /// Effect intents, queued for their runners.
    pub intents: bool,
}

impl Keep {
    pub const ALL: Keep = Keep { outputs: true, intents: true };
    pub const STATE_ONLY: Keep = Keep { outputs: false, intents: false };
    /// State and intents: what rebuilding the history repository needs.
    pub const INTENTS: Keep = Keep { outputs: false, intents: true };
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.handlers.iter().map(|h| h.name()).collect();
        f.debug_struct("Dispatcher").field("handlers", &names).finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub fn new(
        handlers: Vec<Arc<dyn Handler>>,
        store: Store,
        log: &Log,
        stamp: OutputStamp,
        decoder: Decoder,
        checkpoint_every: u64,
    ) -> Result<Dispatcher> {
        let quarantined = log.quarantined()?.into_iter().collect();
        let checkpoint_every = checkpoint_every.max(1);
        Ok(Dispatcher {
            handlers,
            store,
            quarantined,
            stamp,
            decoder,
            checkpoint_every,
            keep: Keep::ALL,
            pending: Pending::default(),
            load_bytes: None,
            committed: Committed::default(),
        })
    }

    /// Writes only once about `bytes` of changes are staged (and at [`Dispatcher::flush`]),
    /// with [`Store::load`], instead of committing at the end of every call: a rebuild's reads
    /// then mostly hit its staged changes and its writes go in few, chunked loads. Loads are not
    /// atomic, so only a dispatch into a store nobody reads until it is done (a rebuild's scratch
    /// store or the store's next generation) uses it.
    pub fn loading_every(mut self, bytes: usize) -> Dispatcher {
        self.load_bytes = Some(bytes);
        self
    }

    /// Writes whatever is staged.
    pub fn flush(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        match self.load_bytes {
            Some(_) => self.store.load(pending),
            None => {
                let after = self.store.position(DISPATCHER)?;
                let through = self.store.position_with(&pending, DISPATCHER)?;
                let outputs = self.store.commit(pending)?;
                self.committed.note(outputs, after, through);
                Ok(())
            }
        }
    }

    /// Every output committed since the last call, in log order, when there were not too many
    /// to keep (see [`Committed`]); `None` when some were let go or nothing was committed.
    pub fn take_committed(&mut self) -> Option<CommittedBatch> {
        self.committed.take()
    }

    /// How far outputs are made: the dispatcher's own position.
    pub fn outputs_through(&self) -> Result<u64> {
        self.store.position(DISPATCHER)
    }

    /// Sets the store's publish mark where a store without one stands: an older engine wrote
    /// every output up to its position to the outbox.
    pub fn start_publish_mark(&self) -> Result<()> {
        self.store.start_publish_mark(self.outputs_through()?)
    }

    /// The outputs of `records` that were not written to the outbox, made again: the
    /// dead-letter copies of rejected entries that no handler answered. The caller leaves out
    /// the records that have outputs in the outbox (their copy was written there).
    pub fn regenerated(&self, records: &[Record]) -> Vec<OutboxItem> {
        records
            .iter()
            .filter(|r| rejected(r) && !self.quarantined.contains(&r.seq))
            .filter_map(|r| self.dead_letter(r, false, &[], 0).map(|(_, item)| item))
            .collect()
    }

    /// Keeps only what `keep` names besides state (see [`Keep`]).
    pub fn keeping(mut self, keep: Keep) -> Dispatcher {
        self.keep = keep;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The lowest position over every handler and the dispatcher's own (which only dead
    /// letters need, so not when outputs are not kept): where dispatch resumes.
    pub fn position(&self) -> Result<u64> {
        let mut lowest =
            if self.keep.outputs { self.store.position_with(&self.pending, DISPATCHER)? } else { u64::MAX };
        for handler in &self.handlers {
            lowest = lowest.min(self.store.position_with(&self.pending, handler.name())?);
        }
        Ok(lowest)
    }

    /// Dispatches records (consecutive, in log order) with their typed events when the caller
    /// has them (`decoded[i]` belongs to `records[i]`); otherwise they are decoded here. Every
    /// `checkpoint_every` seqs each projection's state hash is staged as a checkpoint, so
    /// checkpoints fall on the same seqs however batches were cut and commits spaced.
    pub fn dispatch(&mut self, records: &[Record], decoded: Option<&[Option<TypedEvent>]>) -> Result<DispatchReport> {
        let report = self.stage(records, decoded)?;
        if self.load_bytes.is_none_or(|limit| self.pending.bytes() >= limit) {
            self.flush()?;
        }
        Ok(report)
    }

    /// Stages the handlers' decisions on `records` beside what is staged already.
    fn stage(&mut self, records: &[Record], decoded: Option<&[Option<TypedEvent>]>) -> Result<DispatchReport> {
        let decoded_here: Vec<Option<TypedEvent>>;
        let decoded = match decoded {
            Some(decoded) if decoded.len() == records.len() => decoded,
            _ => {
                decoded_here = records.iter().map(|r| self.decoder.typed(r)).collect();
                &decoded_here
            }
        };
        // A call that fails keeps nothing staged (not even earlier calls' changes, which were
        // never written): the store stays at its last write, and its positions say so.
        let mut pending = std::mem::take(&mut self.pending);
        let report = self.dispatch_staged(records, decoded, &mut pending)?;
        self.pending = pending;
        for ((stream, reason), n) in &report.dead_letters {
            metrics::counter!("maestro_dead_letters_total", "stream" => stream.clone(), "reason" => reason.clone())
                .increment(*n);
        }
        Ok(report)
    }

    fn dispatch_staged(
        &self,
        records: &[Record],
        decoded: &[Option<TypedEvent>],
        pending: &mut Pending,
    ) -> Result<DispatchReport> {
        let mut report = DispatchReport::default();
        let mut positions = Vec::with_capacity(self.handlers.len());
        for handler in &self.handlers {
            positions.push(self.store.position_with(pending, handler.name())?);
        }
        let own_position = self.store.position_with(pending, DISPATCHER)?;
        for (record, typed) in records.iter().zip(decoded) {
            self.dispatch_one(record, typed.as_ref(), &positions, own_position, pending, &mut report)?;
            if record.seq % self.checkpoint_every == 0 {
                for handler in &self.handlers {
                    self.store.stage_checkpoint(pending, handler.name(), record.seq)?;
                }
            }
        }
        Ok(report)
    }

    fn dispatch_one(
        &self,
        record: &Record,
        typed: Option<&TypedEvent>,
        positions: &[u64],
        own_position: u64,
        pending: &mut Pending,
        report: &mut DispatchReport,
    ) -> Result<()> {
        let quarantined = self.quarantined.contains(&record.seq);
        let own = matches!(&record.body, Body::Entry(e) if e.status.is_own());
        let mut failures = Vec::new();
        let mut index = 0u32;
        let mut effect_index = 0u32;
        for (handler, position) in self.handlers.iter().zip(positions) {
            if record.seq <= *position {
                continue;
            }
            let name = handler.name();
            if !quarantined && (!own || handler.sees_own_outputs()) {
                let view = View::new(&self.store, pending, name);
                let handled = catch_unwind(AssertUnwindSafe(|| handler.handle(&view, Event { record, typed })));
                if let Some(why) = view.unreadable() {
                    // The store is damaged, not the record: nothing of this batch is committed
                    // or acknowledged, and the engine retries until the store is repaired.
                    return Err(EngineError::State(format!("seq {} for {name}: {why}", record.seq)));
                }
                match handled {
                    Ok(Ok(decision)) => {
                        for change in decision.changes {
                            let (key, value) = match change {
                                Change::Put { key, value } => (key, Some(value)),
                                Change::Delete { key } => (key, None),
                            };
                            self.store.stage(pending, name, &key, value)?;
                        }
                        if let (Some(reason), Body::Entry(entry)) = (decision.ignored, &record.body) {
                            *report.ignored.entry((entry.stream.clone(), reason)).or_default() += 1;
                        }
                        for output in decision.outputs.into_iter().filter(|_| self.keep.outputs) {
                            let fields =
                                output.fields.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect();
                            let mut item = self.stamped(record.seq, index, output.stream, fields, None);
                            item.elapsed_from_ms = output.elapsed_from_ms;
                            pending.publish(item);
                            index += 1;
                        }
                        for intent in decision.intents.into_iter().filter(|_| self.keep.intents) {
                            pending.effect(record.seq, effect_index, intent);
                            effect_index += 1;
                            report.intents += 1;
                        }
                    }
                    Ok(Err(error)) => failures.push(format!("handler {name}: {error}")),
                    Err(panic) => failures.push(format!("handler {name} panicked: {}", panic_text(panic.as_ref()))),
                }
            }
            pending.advance(name, record.seq);
        }
        if record.seq > own_position {
            // Built only when kept: the copy clones every field of the entry.
            if let Some((key, item)) =
                self.keep.outputs.then(|| self.dead_letter(record, quarantined, &failures, index)).flatten()
            {
                // A rejected entry's copy, when it is the record's only output, is a function
                // of the record: made again from the log if it is lost before it is published.
                if rejected(record) && !quarantined && index == 0 {
                    pending.publish_regenerable(item);
                } else {
                    pending.publish(item);
                }
                report.dead_lettered += 1;
                *report.dead_letters.entry(key).or_default() += 1;
            }
            pending.advance(DISPATCHER, record.seq);
        }
        report.records += 1;
        Ok(())
    }

    fn stamped(&self, seq: u64, index: u32, stream: String, mut fields: Fields, maxlen: Option<u64>) -> OutboxItem {
        // First, so that a dead-letter copy's own `origin`/`output_id` (the producer's, copied
        // after them) never stand for the engine's; the publisher marks the `output_id`.
        fields.insert(0, (ORIGIN_FIELD.to_vec(), self.stamp.origin.clone().into_bytes()));
        fields.insert(1, (OUTPUT_ID_FIELD.to_vec(), output_id(seq, index).into_bytes()));
        OutboxItem { seq, index, stream, fields, maxlen, elapsed_from_ms: None }
    }

    /// The dead-letter copy of a record that was rejected, quarantined or failed a handler, with
    /// (the entry's stream, the reason code) for `/metrics`.
    fn dead_letter(
        &self,
        record: &Record,
        quarantined: bool,
        failures: &[String],
        index: u32,
    ) -> Option<((String, String), OutboxItem)> {
        let Body::Entry(entry) = &record.body else { return None };
        let (code, detail, deliveries) = match (&entry.status, quarantined) {
            (_, true) => (
                "quarantined".to_string(),
                "the entry crashed the engine repeatedly while being handled".to_string(),
                0,
            ),
            (Status::Rejected { reason, deliveries }, _) => (reason.code.clone(), reason.detail.clone(), *deliveries),
            _ if !failures.is_empty() => ("handler_failed".to_string(), failures.join("; "), 1),
            _ => return None,
        };
        let mut fields = vec![
            (b"dead_stream".to_vec(), entry.stream.clone().into_bytes()),
            (b"dead_id".to_vec(), entry.id.to_string().into_bytes()),
            (b"dead_seq".to_vec(), record.seq.to_string().into_bytes()),
            (b"dead_reason".to_vec(), code.clone().into_bytes()),
            (b"dead_detail".to_vec(), detail.into_bytes()),
            (b"dead_deliveries".to_vec(), deliveries.to_string().into_bytes()),
        ];
        fields.extend(entry.fields.iter().cloned());
        let stream = StreamSet::dead_letter_key(&entry.stream);
        let key = (entry.stream.clone(), code);
        Some((key, self.stamped(record.seq, index, stream, fields, Some(self.stamp.dead_letter_maxlen))))
    }

    /// Brings every projection up to the log's head before the engine reads new entries.
    ///
    /// A guard stored (and flushed) before each step counts how often dispatch started at the
    /// same seq without finishing (a crash; a returned error is not counted). After one crash
    /// the range is re-run one record at a time, so the next crash names its record; a record
    /// that crashed more than `max_deliveries` times is quarantined by appending a quarantine
    /// record to the log.
    pub fn catch_up(&mut self, log: &mut Log, batch: usize, max_deliveries: u32) -> Result<DispatchReport> {
        let mut total = DispatchReport::default();
        loop {
            let position = self.position()?;
            let head = log.head_seq();
            metrics::gauge!("maestro_catch_up_remaining").set(head.saturating_sub(position) as f64);
            if position >= head {
                break;
            }
            let next = position + 1;
            let guard = self.store.guard()?;
            let attempts = if guard.from_seq == next { guard.attempts + 1 } else { 1 };
            let slow_until =
                if attempts > 1 { guard.slow_until.max(position + batch as u64) } else { guard.slow_until };
            if attempts > max_deliveries {
                let crashes = attempts - 1;
                log.append(vec![NewRecord {
                    body: Body::Quarantine {
                        target_seq: next,
                        reason: format!("crashed the engine {crashes} times while being handled"),
                        deliveries: crashes,
                    },
                    request: None,
                }])?;
                self.quarantined.insert(next);
                tracing::error!(seq = next, crashes, "record quarantined: it crashed the engine while being handled");
                self.store.set_guard(Guard { from_seq: next, attempts: 0, slow_until })?;
                continue;
            }
            self.store.set_guard(Guard { from_seq: next, attempts, slow_until })?;
            let step = if next <= slow_until { 1 } else { batch.max(1) as u64 };
            let records = log.range(next, head.min(position + step)).collect::<Result<Vec<_>>>()?;
            let report = match self.dispatch(&records, None) {
                Ok(report) => report,
                Err(error) => {
                    // An error is not a crash: the store or the disk failed, not the record, so
                    // this attempt is not counted and no record is ever quarantined for it.
                    if let Err(also) = self.store.set_guard(guard) {
                        tracing::warn!(%also, "could not restore the catch-up guard");
                    }
                    return Err(error);
                }
            };
            crate::failpoint::crash_point("during-catch-up");
            total.records += report.records;
            total.dead_lettered += report.dead_lettered;
            total.intents += report.intents;
            for (key, n) in report.ignored {
                *total.ignored.entry(key).or_default() += n;
            }
            for (key, n) in report.dead_letters {
                *total.dead_letters.entry(key).or_default() += n;
            }
        }
        self.store.set_guard(Guard::default())?;
        Ok(total)
    }
}

fn rejected(record: &Record) -> bool {
    matches!(&record.body, Body::Entry(e) if matches!(e.status, Status::Rejected { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_handlers::stream_stats::{NAME, StreamStats};
    use maestro_schemas::{Entry, EntryId};

    /// The same log dispatched in batches of different sizes gives the same checkpoints (at the
    /// same seqs, with the same state hashes) and the same final state.
    #[test]
    fn checkpoints_do_not_depend_on_how_batches_are_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
        let records: Vec<NewRecord> = (1..=25u64)
            .map(|i| NewRecord {
                body: Body::Entry(Entry {
                    stream: format!("s{}", i % 3),
                    id: EntryId { ms: i, seq: 0 },
                    fields: vec![],
                    status: Status::Accepted,
                }),
                request: None,
            })
            .collect();
        let records = log.append(records).unwrap();
        let run = |tree: &str, batch: usize| {
            let store = Store::open_tree(log.db(), tree, log.value_files()).unwrap();
            let stamp = OutputStamp { origin: "maestro-engine/t".into(), dead_letter_maxlen: 10 };
            let decoder = Decoder { streams: StreamSet::default(), limits: Limits::default() };
            let mut dispatcher = Dispatcher::new(vec![Arc::new(StreamStats)], store, &log, stamp, decoder, 10).unwrap();
            for chunk in records.chunks(batch) {
                dispatcher.dispatch(chunk, None).unwrap();
            }
            let store = dispatcher.store();
            (store.checkpoints(NAME).unwrap(), store.state_hash(NAME).unwrap(), store.position(NAME).unwrap())
        };
        let (one, seven) = (run("a", 1), run("b", 7));
        assert_eq!(one.0.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![10, 20]);
        assert_eq!(one, seven);
        assert_eq!(one.2, 25);
    }
}
