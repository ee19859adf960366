//! The engine's run loop. [`Cycle::run_batch`] is the batch cycle in the order the
//! architecture fixes: decode, append durably, dispatch, publish, acknowledge.
//!
//! Failures are sorted by where they leave us. A damaged log stops the engine with an error
//! that names the record. A storage error (disk full, read-only) drops the open log and
//! reopens it after a back-off: nothing unrecorded was acknowledged. A Redis error drops the
//! connections and retries with a capped back-off; entries delivered but not acknowledged come
//! back from the pending list, and the dedup index keeps them from being recorded twice.

use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::datadir::{DataDir, fresh_consumer_name};
use crate::dispatch::{Decoder, Dispatcher, OutputStamp};
use crate::effects::{Effects, Fact, RunnerContext, RunnerFactory};
use crate::error::{EngineError, Result};
use crate::ingest::Ingest;
use crate::log::Log;
use crate::source::{RawEntry, Source, SourceConfig};
use crate::status::Health;
use maestro_handlers::Handler;
use maestro_schemas::envelope::ORIGIN_PREFIX;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod streams;

/// Stops the engine when it turns `true` (or when its sender is dropped).
pub type Shutdown = watch::Receiver<bool>;

fn stopping(shutdown: &Shutdown) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

async fn sleep_or_stop(shutdown: &mut Shutdown, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}

/// True for errors that a retry cannot fix: the engine reports them and exits.
fn is_fatal(error: &EngineError) -> bool {
    matches!(error, EngineError::Record(_) | EngineError::Damaged(_) | EngineError::Locked(_) | EngineError::Config(_))
}

fn is_storage(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::Storage(_) | EngineError::Sync(_) | EngineError::State(_) | EngineError::DataDir { .. }
    )
}

/// What the engine runs: the domains' handlers, the effect runners each session starts, and
/// the settings handlers depend on, recorded in the log as `(name, value, default)` so that a
/// replay decides as the live run did.
#[derive(Clone)]
pub struct Domains {
    pub handlers: Vec<Arc<dyn Handler>>,
    pub runners: RunnerFactory,
    pub settings: Vec<(String, String, String)>,
    /// Streams whose entries the engine wrote are logged in full, not by reference, because a
    /// projection reads them back.
    pub own_in_full: Vec<String>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.handlers.iter().map(|h| h.name()).collect();
        f.debug_struct("Domains").field("handlers", &names).field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Runs the engine until `shutdown` fires. The caller owns the world: the domains, the status
/// it can watch, and the shutdown signal.
pub async fn run(config: EngineConfig, domains: Domains, status: Arc<Health>, mut shutdown: Shutdown) -> Result<()> {
    config.validate().map_err(EngineError::Config)?;
    let data_dir = DataDir::open(&config.data_dir)?;
    let _address = AddressFile::write(&data_dir, &status)?;
    let consumer = data_dir.consumer_name(fresh_consumer_name)?;
    let client = crate::connect::client(&config)?;
    tracing::info!(consumer, data_dir = %config.data_dir.display(), group = config.group, "engine starting");
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let result = session(&config, &data_dir, &consumer, &client, &domains, &status, &mut shutdown).await;
        Health::set(&status.log_open, false);
        *status.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        match result {
            Ok(()) => {
                tracing::info!("engine stopped");
                return Ok(());
            }
            Err(error) if is_fatal(&error) => return Err(error),
            Err(error) => {
                Health::set(&status.storage_ok, !is_storage(&error));
                status.error(error.to_string());
                tracing::error!(%error, "storage failed; nothing unrecorded was acknowledged; reopening the log");
                sleep_or_stop(&mut shutdown, backoff.next()).await;
                if stopping(&shutdown) {
                    return Ok(());
                }
            }
        }
    }
}

/// The file in the data dir that names the engine's HTTP address while it runs.
pub const HTTP_FILE: &str = "HTTP";

/// The data dir's [`HTTP_FILE`], written once the engine holds the data dir's lock (so a second
/// engine that is refused never overwrites it) and removed when the engine stops.
struct AddressFile(Option<std::path::PathBuf>);

impl AddressFile {
    fn write(data_dir: &DataDir, status: &Health) -> Result<AddressFile> {
        let Some(addr) = *status.http.lock().unwrap_or_else(std::sync::PoisonError::into_inner) else {
            return Ok(AddressFile(None));
        };
        let path = data_dir.path().join(HTTP_FILE);
        std::fs::write(&path, format!("{addr}\n"))
            .map_err(|source| EngineError::DataDir { path: path.clone(), source })?;
        Ok(AddressFile(Some(path)))
    }
}

impl Drop for AddressFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One opening of the log: catch up the projections, then follow Redis until shutdown.
async fn session(
    config: &EngineConfig,
    data_dir: &DataDir,
    consumer: &str,
    client: &redis::Client,
    domains: &Domains,
    status: &Arc<Health>,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let handlers = &domains.handlers;
    let mut log = Log::open_unchecked(data_dir.path(), config.cache_bytes)?;
    crate::anchors::check_local(&mut log, config)?;
    let store = log.store()?;
    let stamp =
        OutputStamp { origin: format!("{ORIGIN_PREFIX}{consumer}"), dead_letter_maxlen: config.dead_letter_maxlen };
    let decoder = Decoder { streams: config.streams.clone(), limits: config.limits };
    let mut dispatcher = Dispatcher::new(handlers.to_vec(), store, &log, stamp, decoder, config.checkpoint_every)?;
    record_config(&mut log, config, &domains.settings)?;
    let caught = dispatcher.catch_up(&mut log, 512, config.max_deliveries)?;
    if caught.records > 0 {
        tracing::info!(records = caught.records, "projections caught up with the log");
    }
    let (facts, fact_receiver) = tokio::sync::mpsc::unbounded_channel();
    let context = RunnerContext { data_dir: data_dir.path().to_path_buf(), facts };
    let runners = (domains.runners)(context).await.map_err(EngineError::Config)?;
    let mut effects = Effects::new(runners);
    effects.resume(dispatcher.store())?;
    effects.run_and_report(dispatcher.store(), status)?;
    crate::value_files::sweep_unreferenced(&log.value_files(), dispatcher.store())?;
    Health::set(&status.log_open, true);
    if !status.storage_ok.swap(true, std::sync::atomic::Ordering::Relaxed) {
        // The log reopened after a storage failure: that error no longer holds.
        status.clear_error();
    }
    status.head_seq.store(log.head_seq(), std::sync::atomic::Ordering::Relaxed);
    let names = handlers.iter().map(|h| h.name()).collect();
    *status.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((dispatcher.store().clone(), names));
    let streams: Vec<String> = config.streams.all().into_iter().map(|(_, key)| key.to_string()).collect();
    let health = streams::StreamHealth::new(&streams, status);
    let source = Source::new(
        client.clone(),
        SourceConfig {
            group: config.group.clone(),
            consumer: consumer.to_string(),
            streams,
            count: config.read_count,
            block: Duration::from_millis(config.block_ms),
            poll: Duration::from_millis(config.poll_ms),
            poll_max: Duration::from_millis(config.poll_max_ms),
            budget: config.max_batch_bytes,
            entry_limit: config.limits.max_entry_bytes,
            published_key: format!("maestro:engine:{}:published", config.group),
            output_key_key: format!("maestro:engine:{}:output-key", config.group),
        },
    );
    let ingest = Ingest {
        streams: config.streams.clone(),
        limits: config.limits,
        max_deliveries: config.max_deliveries,
        output_key: None,
        own_in_full: domains.own_in_full.clone(),
    };
    let mut cycle = Cycle {
        config: config.clone(),
        log,
        dispatcher,
        effects,
        ingest,
        anchored: None,
        sweeper: crate::value_files::Sweeper::new(Duration::from_millis(config.value_sweep_interval_ms)),
        clocked: None,
        facts: fact_receiver,
        unpublished: std::collections::VecDeque::new(),
        source,
        status: status.clone(),
        outage_since: None,
        health,
    };
    cycle.follow(shutdown).await
}

/// Appends a config record when the configuration handlers depend on changed since the last
/// one, so live runs and replays decide with the same configuration.
fn record_config(log: &mut Log, config: &EngineConfig, settings: &[(String, String, String)]) -> Result<()> {
    let mut admins = config.admin_pairs();
    admins.sort();
    admins.dedup();
    let wanted = (admins, config.streams.clone());
    // A fresh log with the default configuration needs no record: replays assume the default.
    let recorded = log.config()?.unwrap_or_else(|| (Vec::new(), maestro_schemas::StreamSet::default()));
    if recorded != wanted {
        let (admins, streams) = wanted;
        tracing::info!(admins = admins.len(), "configuration recorded in the log");
        let body = maestro_schemas::Body::Config { admins, streams };
        log.append(vec![crate::log::NewRecord { body, request: None }])?;
    }
    for (name, value, default) in settings {
        // As above: a setting never recorded has its default value.
        if log.setting(name)?.as_ref().unwrap_or(default) != value {
            tracing::info!(name, value, "setting recorded in the log");
            let body = maestro_schemas::Body::Setting { name: name.clone(), value: value.clone() };
            log.append(vec![crate::log::NewRecord { body, request: None }])?;
        }
    }
    Ok(())
}

/// Everything one batch needs.
#[derive(Debug)]
struct Cycle {
    config: EngineConfig,
    log: Log,
    dispatcher: Dispatcher,
    effects: Effects,
    ingest: Ingest,
    /// When, and at which head `(seq, hash)`, the external anchors were last written.
    anchored: Option<(Instant, (u64, [u8; 32]))>,
    /// Removes value files nothing refers to, between batches.
    sweeper: crate::value_files::Sweeper,
    /// When, and with which time, the last clock record was appended.
    clocked: Option<(Instant, u64)>,
    /// Facts from the effect runners (Kubernetes, file reads), and those not yet published.
    facts: tokio::sync::mpsc::UnboundedReceiver<Fact>,
    unpublished: std::collections::VecDeque<Fact>,
    source: Source,
    status: Arc<Health>,
    /// When the current Redis outage began, if Redis is unavailable.
    outage_since: Option<Instant>,
    /// Streams refused for a reason of their own (`runtime/streams.rs`).
    health: streams::StreamHealth,
}

impl Cycle {
    /// Follows Redis until shutdown. Redis errors never end it; storage errors do.
    async fn follow(&mut self, shutdown: &mut Shutdown) -> Result<()> {
        // Capped at 1 s so the engine resumes within about a second of Redis coming back.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        while !stopping(shutdown) {
            match self.connected(shutdown).await {
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
        let records = self.log.append(vec![crate::log::NewRecord { body, request: None }])?;
        self.clocked = Some((Instant::now(), time_ms));
        Health::add(&self.status.records_appended, 1);
        self.status.head_seq.store(self.log.head_seq(), std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("maestro_records_appended_total").increment(1);
        metrics::counter!("maestro_clock_records_total").increment(1);
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
    pub async fn run_batch(&mut self, entries: Vec<RawEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let bytes: usize = entries.iter().map(RawEntry::size).sum();
        self.note_read(&entries, bytes);
        // Step 2: decode and validate; rejects become records marked as rejected.
        let prepared = self.ingest.prepare(&self.log, entries)?;
        for (stream, id) in &prepared.lost {
            tracing::warn!(stream, id = %id, "entry deleted while pending: lost");
            self.count_lost(stream, 1);
        }
        // Step 3: one durable batch of records, dedup index and cursors.
        let decoded = prepared.decoded;
        let records = self.log.append(prepared.records)?;
        crate::failpoint::crash_point("after-append");
        Health::add(&self.status.records_appended, records.len() as u64);
        self.status.head_seq.store(self.log.head_seq(), std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("maestro_records_appended_total").increment(records.len() as u64);
        // Step 4: handlers, projections and the outbox, in one state batch.
        let report = self.dispatcher.dispatch(&records, Some(&decoded))?;
        crate::failpoint::crash_point("after-flush");
        if report.dead_lettered > 0 {
            Health::add(&self.status.dead_lettered, report.dead_lettered);
            metrics::counter!("maestro_dead_lettered_total").increment(report.dead_lettered);
        }
        for ((stream, reason), n) in report.ignored {
            Health::add(&self.status.ignored, n);
            metrics::counter!("maestro_ignored_total", "stream" => stream, "reason" => reason).increment(n);
        }
        // Step 5: publish outputs, then run effect intents.
        self.publish_outbox().await?;
        crate::failpoint::crash_point("after-publish");
        self.effects.run_and_report(self.dispatcher.store(), &self.status)?;
        crate::failpoint::crash_point("before-ack");
        // Step 6: acknowledge every delivered entry, new or already recorded.
        self.source.ack(&prepared.acks).await?;
        Health::add(&self.status.entries_acked, prepared.acks.len() as u64);
        Health::add(&self.status.batches, 1);
        metrics::counter!("maestro_entries_acked_total").increment(prepared.acks.len() as u64);
        metrics::histogram!("maestro_batch_seconds").record(started.elapsed().as_secs_f64());
        self.status.batch_took(started.elapsed().as_micros() as u64);
        Ok(())
    }

    fn note_read(&mut self, entries: &[RawEntry], bytes: usize) {
        Health::add(&self.status.entries_read, entries.len() as u64);
        let mut per_stream: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for entry in entries {
            *per_stream.entry(&entry.stream).or_default() += 1;
        }
        for (stream, n) in per_stream {
            metrics::counter!("maestro_entries_read_total", "stream" => stream.to_string()).increment(n);
        }
        // Every read is sized (its script stops at the budget); COUNT drops to 1 after a read
        // over the budget all the same, so that the next reads take large entries one by one,
        // and grows back while reads fit.
        let count = self.source.count();
        let next = if bytes > self.config.max_batch_bytes { 1 } else { (count * 2).min(self.config.read_count) };
        self.source.set_count(next);
    }

    async fn publish_outbox(&mut self) -> Result<()> {
        loop {
            let items = self.dispatcher.store().outbox(512)?;
            if items.is_empty() {
                return Ok(());
            }
            let (keys, items): (Vec<_>, Vec<_>) = items.into_iter().unzip();
            self.source.publish(&items).await?;
            // Published but still in the outbox: the publish guard must make the next pass a no-op.
            crate::failpoint::crash_point("mid-batch");
            self.dispatcher.store().remove_outbox(&keys)?;
        }
    }
}
