//! Session wiring: what the engine runs ([`Domains`]), the address file, the config records,
//! and one opening of the log (catch up the projections, start the effect runners, build the
//! Redis source) handed to the [`Cycle`].

use super::Shutdown;
use super::cycle::Cycle;
use super::observer::BatchObserver;
use super::streams::StreamHealth;
use crate::config::EngineConfig;
use crate::datadir::DataDir;
use crate::dispatch::{Decoder, Dispatcher, OutputStamp};
use crate::effects::{Effects, RunnerContext, RunnerFactory};
use crate::error::{EngineError, Result};
use crate::ingest::Ingest;
use crate::log::Log;
use crate::source::{Source, SourceConfig};
use crate::status::Health;
use maestro_handlers::Handler;
use maestro_schemas::envelope::ORIGIN_PREFIX;
use std::sync::Arc;
use std::time::Duration;

/// What the engine runs: the domains' handlers, the effect runners each session starts, and
/// the settings handlers depend on, recorded in the log as `(name, value, default)` so that a
/// replay decides as the live run did.
#[derive(Clone)]
pub struct Domains {
    pub handlers: Vec<Arc<dyn Handler>>,
    pub runners: RunnerFactory,
    pub settings: Vec<(String, String, String)>,
    /// The config record's bootstrap admins (tenant, user), sorted and each once: a field of the
    /// schema's config record, which the engine appends when it or the streams changed.
    pub admins: Vec<(String, String)>,
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

/// The file in the data dir that names the engine's HTTP address while it runs.
pub const HTTP_FILE: &str = "HTTP";

/// The data dir's [`HTTP_FILE`], written once the engine holds the data dir's lock (so a second
/// engine that is refused never overwrites it) and removed when the engine stops.
pub(super) struct AddressFile(Option<std::path::PathBuf>);

impl AddressFile {
    pub(super) fn write(data_dir: &DataDir, status: &Health) -> Result<AddressFile> {
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

/// What every session of one run shares, set up once by [`super::run`].
#[derive(Clone, Copy)]
pub(super) struct RunWorld<'a> {
    pub(super) config: &'a EngineConfig,
    pub(super) data_dir: &'a DataDir,
    /// The stable consumer name, from the data dir.
    pub(super) consumer: &'a str,
    pub(super) client: &'a crate::connect::RedisClient,
    pub(super) domains: &'a Domains,
    pub(super) status: &'a Arc<Health>,
}

/// One opening of the log: catch up the projections, then follow Redis until shutdown (or
/// until `fence` fails: a member that lost its lease).
pub(super) async fn session(run: RunWorld<'_>, fence: &crate::lease::Fence, shutdown: &mut Shutdown) -> Result<()> {
    let RunWorld { config, data_dir, consumer, client, domains, status } = run;
    // A member whose lease lapsed while the log was closed (a storage error's back-off) starts
    // nothing: effect intents would run again at the session's start.
    fence.check()?;
    let handlers = &domains.handlers;
    let mut log = Log::open_unchecked(data_dir.path(), config.cache_bytes)?;
    crate::anchors::check_local(&mut log, config)?;
    let store = log.store_with_cache(config.store_cache_bytes)?;
    let stamp =
        OutputStamp { origin: format!("{ORIGIN_PREFIX}{consumer}"), dead_letter_maxlen: config.dead_letter_maxlen };
    let decoder = Decoder { streams: config.streams.clone(), limits: config.limits };
    let mut dispatcher = Dispatcher::new(handlers.to_vec(), store, &log, stamp, decoder, config.checkpoint_every)?;
    record_config(&mut log, config, domains)?;
    dispatcher.start_publish_mark()?;
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
    let health = StreamHealth::new(&streams, status);
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
            wait_replicas: config.cluster_wait_replicas,
            wait_ms: config.cluster_wait_ms,
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
        observer: BatchObserver::new(status.clone()),
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
        fence: fence.clone(),
    };
    cycle.follow(shutdown).await
}

/// Appends a config record when the configuration handlers depend on changed since the last
/// one, so live runs and replays decide with the same configuration.
fn record_config(log: &mut Log, config: &EngineConfig, domains: &Domains) -> Result<()> {
    let wanted = (domains.admins.clone(), config.streams.clone());
    // A fresh log with the default configuration needs no record: replays assume the default.
    let recorded = log.config()?.unwrap_or_else(|| (Vec::new(), maestro_schemas::StreamSet::default()));
    if recorded != wanted {
        let (admins, streams) = wanted;
        tracing::info!(admins = admins.len(), "configuration recorded in the log");
        let body = maestro_schemas::Body::Config { admins, streams };
        log.append(vec![crate::log::NewRecord { body, request: None }])?;
    }
    for (name, value, default) in &domains.settings {
        // As above: a setting never recorded has its default value.
        if log.setting(name)?.as_ref().unwrap_or(default) != value {
            tracing::info!(name, value, "setting recorded in the log");
            let body = maestro_schemas::Body::Setting { name: name.clone(), value: value.clone() };
            log.append(vec![crate::log::NewRecord { body, request: None }])?;
        }
    }
    Ok(())
}
