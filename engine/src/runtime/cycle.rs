//! The cycle: follow Redis, and per read run the batch cycle ([`Cycle::run_batch`]), then the
//! work between batches (facts, clock records, anchors, value-file sweeps, seals, claims).

use super::observer::BatchObserver;
use super::streams::StreamHealth;
use super::{Shutdown, is_fatal, is_storage, sleep_or_stop, stopping};
use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::dispatch::Dispatcher;
use crate::effects::{Effects, Fact};
use crate::error::Result;
use crate::ingest::Ingest;
use crate::log::Log;
use crate::source::{Outgoing, RawEntry, Source};
use crate::status::Health;
use crate::store::OutboxItem;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything one batch needs.
#[derive(Debug)]
pub(super) struct Cycle {
    pub(super) config: EngineConfig,
    /// Counts every step in `/status` and `/metrics`.
    pub(super) observer: BatchObserver,
    pub(super) log: Log,
    pub(super) dispatcher: Dispatcher,
    pub(super) effects: Effects,
    pub(super) ingest: Ingest,
    /// When, and at which head `(seq, hash)`, the external anchors were last written.
    pub(super) anchored: Option<(Instant, (u64, [u8; 32]))>,
    /// Removes value files nothing refers to, between batches.
    pub(super) sweeper: crate::value_files::Sweeper,
    /// When, and with which time, the last clock record was appended.
    pub(super) clocked: Option<(Instant, u64)>,
    /// Facts from the effect runners (Kubernetes, file reads), and those not yet published.
    pub(super) facts: tokio::sync::mpsc::UnboundedReceiver<Fact>,
    pub(super) unpublished: std::collections::VecDeque<Fact>,
    pub(super) source: Source,
    pub(super) status: Arc<Health>,
    /// When the current Redis outage began, if Redis is unavailable.
    pub(super) outage_since: Option<Instant>,
    /// Streams refused for a reason of their own (`runtime/streams.rs`).
    pub(super) health: StreamHealth,
    /// A member's lease: checked before every write, in the log or in Redis (`lease.rs`).
    pub(super) fence: crate::lease::Fence,
}

impl Cycle {
    /// Follows Redis until shutdown. Redis errors never end it; storage errors do.
    pub(super) async fn follow(&mut self, shutdown: &mut Shutdown) -> Result<()> {
        // Capped at 1 s so the engine resumes within about a second of Redis coming back.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let fence = self.fence.clone();
        while !stopping(shutdown) {
            // Dropping the connected work at an await is what a Redis error there does; the
            // session then ends, so nothing held in memory outlives it.
            let connected = tokio::select! {
                result = self.connected(shutdown) => result,
                lost = fence.lapsed() => Err(lost),
            };
            match connected {
                Ok(()) => return Ok(()),
                Err(error) if is_storage(&error) || is_fatal(&error) => return Err(error),
                Err(error) => {
                    Health::set(&self.status.caught_up, false);
                    self.status.error(error.to_string());
                    // Every outage is logged once when it starts, however many retries it takes.
                    if self.status.redis_up.swap(false, std::sync::atomic::Ordering::Relaxed)
                        || self.outage_since.is_none()
                    {
                        backoff.reset();
                        self.outage_since = Some(Instant::now());
                        tracing::warn!(%error, "redis unavailable; retrying");
                    }
                    sleep_or_stop(shutdown, backoff.next()).await;
                }
            }
        }
        Ok(())
    }

    /// One Redis connection's worth of work: publish what is waiting, make sure the groups
    /// exist, drain our own pending list, then read new entries until shutdown.
    async fn connected(&mut self, shutdown: &mut Shutdown) -> Result<()> {
        self.fence.check()?;
        self.source.ping().await?;
        self.check_redis_anchor().await?;
        self.check_publish_mark().await?;
        // Before anything is published or read: outputs are marked, and marks checked, with it.
        self.ingest.output_key = Some(self.source.load_output_key().await?);
        self.publish_outbox().await?;
        self.ensure_groups().await?;
        Health::set(&self.status.redis_up, true);
        if let Some(since) = self.outage_since.take() {
            self.status.clear_error();
            tracing::info!(down_for = ?since.elapsed(), "redis available again");
        }
        self.check_groups().await?;
        tracing::info!("connected to redis; draining own pending entries");
        self.drain_pending(shutdown).await?;
        let mut next_claim = Instant::now() + Duration::from_millis(self.config.claim_interval_ms);
        let mut next_info = Instant::now();
        let mut reads = self.reader().await?;
        loop {
            // Before every read: a member that lost its lease takes no more entries.
            self.fence.check()?;
            if stopping(shutdown) {
                let rest = reads.finish().await;
                self.run_batch(rest).await?;
                return self.anchor(true).await;
            }
            let entries = tokio::select! {
                read = reads.next() => read,
                _ = shutdown.changed() => {
                    // Entries Redis already delivered are recorded and acknowledged, not left
                    // pending for the next start.
                    let rest = reads.finish().await;
                    self.run_batch(rest).await?;
                    return self.anchor(true).await;
                }
            };
            let read = match entries {
                Err(error) if error.is_no_group() => {
                    tracing::warn!("consumer group missing (redis lost it?); recreating at the log's high-water marks");
                    self.ensure_groups().await?;
                    reads = self.reader().await?;
                    continue;
                }
                other => other?,
            };
            for (stream, error) in &read.failed {
                self.stream_failed(stream, error);
            }
            // Caught up: the read did not come back full, so nothing was left waiting behind it.
            // (Under steady load a read is rarely empty; readiness must not flap with it.)
            let full = self.source.count() * self.source.config().streams.len();
            Health::set(&self.status.caught_up, read.all_streams && read.entries.len() < full);
            let idle = read.entries.is_empty();
            self.run_batch(read.entries).await?;
            reads.done();
            if self.health.any_due() && self.retry_streams(shutdown).await? {
                let rest = reads.finish().await;
                self.run_batch(rest).await?;
                reads = self.reader().await?;
            }
            self.publish_facts().await?;
            self.tick().await?;
            self.anchor(false).await?;
            self.sweeper.tick(&self.log.value_files(), self.dispatcher.store())?;
            self.seal(idle)?;
            self.fence.check()?;
            if Instant::now() >= next_claim {
                self.claim_idle().await?;
                next_claim = Instant::now() + Duration::from_millis(self.config.claim_interval_ms);
            }
            if Instant::now() >= next_info {
                self.refresh_gauges().await?;
                self.check_groups().await?;
                next_info = Instant::now() + Duration::from_millis(self.config.info_interval_ms);
            }
        }
    }

    /// Writes the log's head `(seq, hash)` outside the data dir (the configured file, and a
    /// Redis key), at most every `anchor_interval_ms` unless `force`d: a later `maestro verify`
    /// given either catches a truncated or rewritten log.
    async fn anchor(&mut self, force: bool) -> Result<()> {
        let head = (self.log.head_seq(), self.log.head_hash());
        let interval = Duration::from_millis(self.config.anchor_interval_ms);
        let due = self.anchored.is_none_or(|(at, _)| at.elapsed() >= interval);
        if !(force || due) || head.0 == 0 || self.anchored.is_some_and(|(_, last)| last == head) {
            return Ok(());
        }
        self.fence.check()?;
        // Both only move forward: a log that lost records never pulls an anchor back.
        if let Some(path) = &self.config.anchor_file {
            crate::anchors::advance_file(path, head.0, &head.1)?;
        }
        if self.config.anchor_redis {
            let key = self.config.anchor_key(&self.source.config().consumer);
            crate::anchors::advance_redis(&mut self.source, &key, head.0, &head.1).await?;
        }
        self.anchored = Some((Instant::now(), head));
        Ok(())
    }

    /// Checks the Redis anchor once Redis answers, before anything read from it is appended;
    /// a record accepting a disagreement is dispatched like any other.
    async fn check_redis_anchor(&mut self) -> Result<()> {
        if !self.config.anchor_redis {
            return Ok(());
        }
        let key = self.config.anchor_key(&self.source.config().consumer);
        let held = crate::anchors::read_redis(&mut self.source, &key).await?;
        let before = self.log.head_seq();
        crate::anchors::check_redis(&mut self.log, &key, held, self.config.accept_truncated_log)?;
        let records = self.log.range(before + 1, self.log.head_seq()).collect::<Result<Vec<_>>>()?;
        self.dispatcher.dispatch(&records, None).map(|_| ())
    }

    /// Moves complete ranges of the log into segment files. Sealing a range stalls the cycle
    /// for as long as it takes to read it back and write it (about a second for 65,536 records
    /// here), so it runs when a read found nothing new; under load only once the unsealed tail
    /// passes sixteen ranges (a million records with the default), and then one range per pass.
    fn seal(&mut self, idle: bool) -> Result<()> {
        let per_segment = self.config.segment_records.max(1);
        let unsealed = self.log.head_seq().saturating_sub(self.log.segments().sealed_through());
        if idle {
            self.log.seal(per_segment)?;
        } else if unsealed > 16 * per_segment {
            self.log.seal_one(per_segment)?;
        }
        Ok(())
    }

    /// A publish mark past the log's head means the log was cut back since it was set: lowered
    /// to the head, so that the outputs of what is appended from now on are published. Entries
    /// read again after the cut may be answered a second time; none is left unanswered.
    async fn check_publish_mark(&mut self) -> Result<()> {
        let head = self.log.head_seq();
        if let Some(mark) = self.source.lower_publish_mark(head).await? {
            tracing::warn!(
                mark,
                head,
                "publish mark past the log's head (log restored or cut back): lowered to the head"
            );
        }
        Ok(())
    }

    /// Publishes the effect runners' facts as plain entries: the engine reads them back as
    /// input, like any producer's. One that fails stays first, for the next round.
    async fn publish_facts(&mut self) -> Result<()> {
        self.fence.check()?;
        while let Ok(fact) = self.facts.try_recv() {
            self.unpublished.push_back(fact);
        }
        while let Some(fact) = self.unpublished.front() {
            self.source.xadd(&fact.stream, &fact.fields).await?;
            if let Some(id) = self.unpublished.pop_front().and_then(|fact| fact.finishes) {
                self.effects.finished(self.dispatcher.store(), &id)?;
                self.effects.report(&self.status);
            }
        }
        Ok(())
    }

    /// Appends a clock record every `clock_interval_ms`, with the Redis server's time (the
    /// clock entry ids are stamped with), and hands it to the handlers: time-outs and expiries
    /// are decided on these records, so a replay decides them at the same seq.
    async fn tick(&mut self) -> Result<()> {
        let interval = Duration::from_millis(self.config.clock_interval_ms);
        if interval.is_zero() || self.clocked.is_some_and(|(at, _)| at.elapsed() < interval) {
            return Ok(());
        }
        // Never backwards within a run, even if the server's clock is stepped back.
        let time_ms = self.source.time_ms().await?.max(self.clocked.map_or(0, |(_, last)| last));
        let body = maestro_schemas::Body::Clock { time_ms };
        self.fence.check()?;
        let records = self.log.append(vec![crate::log::NewRecord { body, request: None }])?;
        self.clocked = Some((Instant::now(), time_ms));
        self.observer.appended(records.len(), self.log.head_seq());
        self.observer.clocked();
        self.dispatcher.dispatch(&records, None)?;
        self.publish_outbox().await?;
        self.effects.run_and_report(self.dispatcher.store(), &self.status)
    }

    async fn refresh_gauges(&mut self) -> Result<()> {
        for (stream, info) in self.source.group_info().await? {
            metrics::gauge!("maestro_pending", "stream" => stream.clone()).set(info.pending as f64);
            if let Some(lag) = info.lag {
                metrics::gauge!("maestro_lag", "stream" => stream).set(lag as f64);
            }
        }
        metrics::gauge!("maestro_log_bytes").set(self.log.size_on_disk() as f64);
        Ok(())
    }

    /// The batch cycle. Every step is idempotent, so a crash between any two loses nothing:
    /// entries not yet acknowledged come back, and the dedup index, projection positions and
    /// output ids make their second pass a no-op.
    pub(super) async fn run_batch(&mut self, entries: Vec<RawEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // Step 1: what Redis delivered (read by the caller) sizes the next read.
        self.observer.read(&entries);
        self.size_next_read(&entries);
        // Step 2: decode and validate; rejects become records marked as rejected.
        let prepared = self.ingest.prepare(&self.log, entries)?;
        for (stream, id) in &prepared.lost {
            tracing::warn!(stream, id = %id, "entry deleted while pending: lost");
            self.observer.lost(stream, 1);
        }
        // Step 3: one durable batch of records, dedup index and cursors.
        self.fence.check()?;
        let records = self.log.append(prepared.records)?;
        crate::failpoint::crash_point("after-append");
        self.observer.appended(records.len(), self.log.head_seq());
        // Step 4: handlers and projections, staged.
        let report = self.dispatcher.dispatch_held(&records, Some(&prepared.decoded))?;
        self.observer.dispatched(report);
        // Step 5: publish outputs and write the state batch, then run effect intents.
        self.publish_held().await?;
        crate::failpoint::crash_point("after-publish");
        self.effects.run_and_report(self.dispatcher.store(), &self.status)?;
        crate::failpoint::crash_point("before-ack");
        // Step 6: acknowledge every delivered entry, new or already recorded.
        self.fence.check()?;
        self.source.ack(&prepared.acks).await?;
        self.observer.acked(prepared.acks.len(), started);
        Ok(())
    }

    /// Every read is sized (its script stops at the budget); COUNT drops to 1 after a read over
    /// the budget all the same, so that the next reads take large entries one by one, and grows
    /// back while reads fit.
    fn size_next_read(&mut self, entries: &[RawEntry]) {
        let bytes: usize = entries.iter().map(RawEntry::size).sum();
        let count = self.source.count();
        let next = if bytes > self.config.max_batch_bytes { 1 } else { (count * 2).min(self.config.read_count) };
        self.source.set_count(next);
    }

    /// Publishes the outputs of the batch just dispatched, then writes its state batch with the
    /// publish mark past them (see `dispatch/held.rs`): a live batch's outputs never pass through
    /// the outbox. When anything older waits to be published, the batch is written first and
    /// everything goes out in order through [`Cycle::publish_outbox`]; when publishing fails, the
    /// batch is written with its outputs in the outbox before the error is returned.
    async fn publish_held(&mut self) -> Result<()> {
        let held = match crate::failpoint::switched("write-before-publish") {
            true => Ok(None),
            false => self.dispatcher.held_outputs(),
        };
        let published = match held {
            Ok(Some(items)) => match self.fence.check() {
                Ok(()) if items.is_empty() => Ok(true),
                Ok(()) => self.source.publish(&items.into_iter().map(outgoing).collect::<Vec<_>>()).await.map(|_| true),
                Err(lost) => Err(lost),
            },
            Ok(None) => Ok(false),
            Err(error) => Err(error),
        };
        match published {
            Ok(true) => {
                // Published, the state batch not yet written: start-up dispatches these records
                // again and the publish guard must make their outputs' second pass a no-op.
                crate::failpoint::crash_point("mid-batch");
                self.dispatcher.commit_published()?;
                self.state_written();
                Ok(())
            }
            Ok(false) => {
                self.dispatcher.flush()?;
                self.state_written();
                self.publish_outbox().await
            }
            Err(error) => {
                self.dispatcher.flush()?;
                Err(error)
            }
        }
    }

    /// The crash points after a state batch is written.
    fn state_written(&self) {
        crate::failpoint::crash_point("after-flush");
        // The state batch is not synced; sled's own flusher may have written it all the same.
        crate::failpoint::crash_point_after("after-flush-written", || drop(self.dispatcher.store().flush()));
    }

    /// Publishes every output not yet published, in log order. The outputs committed since
    /// the last call go out from memory when nothing older waits (the publish mark stands where
    /// they start and the outbox holds nothing older); otherwise [`Cycle::publish_backlog`].
    async fn publish_outbox(&mut self) -> Result<()> {
        self.fence.check()?;
        let store = self.dispatcher.store().clone();
        if let Some(batch) = self.dispatcher.take_committed()
            && store.published_through()?.is_some_and(|mark| mark >= batch.after)
            && store.first_outbox()? == batch.stored.first().copied()
        {
            if !batch.items.is_empty() {
                self.source.publish(&batch.items.iter().map(outgoing).collect::<Vec<_>>()).await?;
                crate::failpoint::crash_point("mid-batch");
            }
            store.remove_outbox_at(&batch.stored, Some(batch.through))?;
        }
        self.publish_backlog().await
    }

    /// Publishes what waits, read back: the outbox entries up to the publish mark, then the log
    /// past the mark a window at a time (its records' outbox entries with the outputs made again
    /// from its records, see [`Dispatcher::regenerated`]), moving the mark with each window;
    /// then any outbox entry past the dispatcher's position.
    async fn publish_backlog(&mut self) -> Result<()> {
        const WINDOW: u64 = 512;
        let store = self.dispatcher.store().clone();
        let mut mark = store.published_through()?.unwrap_or(0);
        let through = self.dispatcher.outputs_through()?;
        self.publish_stored(0, mark).await?;
        while mark < through {
            let end = through.min(mark + WINDOW);
            let (keys, mut items): (Vec<_>, Vec<_>) = store.outbox_between(mark, end, usize::MAX)?.into_iter().unzip();
            let answered: std::collections::HashSet<u64> = items.iter().map(|item| item.seq).collect();
            let records = self.log.range(mark + 1, end).collect::<Result<Vec<_>>>()?;
            let made = self.dispatcher.regenerated(&records);
            items.extend(made.into_iter().filter(|item| !answered.contains(&item.seq)));
            items.sort_unstable_by_key(|item| (item.seq, item.index));
            if !items.is_empty() {
                self.source.publish(&items.iter().map(outgoing).collect::<Vec<_>>()).await?;
                crate::failpoint::crash_point("mid-batch");
            }
            store.remove_outbox(&keys, Some(end))?;
            mark = end;
        }
        self.publish_stored(through, u64::MAX).await
    }

    /// Publishes the outbox entries of the records after seq `after` up to `through`.
    async fn publish_stored(&mut self, after: u64, through: u64) -> Result<()> {
        let store = self.dispatcher.store().clone();
        loop {
            let (keys, items): (Vec<_>, Vec<_>) = store.outbox_between(after, through, 512)?.into_iter().unzip();
            if items.is_empty() {
                return Ok(());
            }
            self.source.publish(&items.iter().map(outgoing).collect::<Vec<_>>()).await?;
            // Published but still in the outbox: the publish guard must make the next pass a no-op.
            crate::failpoint::crash_point("mid-batch");
            store.remove_outbox(&keys, None)?;
        }
    }
}

/// What the publisher needs of an outbox entry.
fn outgoing(item: &OutboxItem) -> Outgoing<'_> {
    Outgoing {
        seq: item.seq,
        index: item.index,
        stream: &item.stream,
        fields: &item.fields,
        maxlen: item.maxlen,
        elapsed_from_ms: item.elapsed_from_ms,
    }
}
