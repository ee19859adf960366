//! Rebuilding projections from the log, offline: every record dispatched again to the same
//! handlers into a scratch store (to compare with the live one, or to answer a question about
//! the past) or into the next generation of the data dir's store (`replay rebuild`). Outputs
//! are never kept (the live run published them); intents only when the caller will run them
//! (the history repository rebuild).

use crate::Result;
use maestro_engine::config::EngineConfig;
use maestro_engine::dispatch::{DISPATCHER, Decoder, Dispatcher, Keep, OutputStamp};
use maestro_engine::effects::Effects;
use maestro_engine::effects::git::GitHistory;
use maestro_engine::log::Log;
use maestro_engine::log::VALUE_FILES_DIR;
use maestro_engine::store::{Pending, Store};
use maestro_engine::value_files::ValueFiles;
use maestro_handlers::Handler;
use maestro_schemas::record::hex;
use maestro_schemas::{Record, TypedEvent};
use std::path::Path;
use std::sync::Arc;

/// Records read, decoded and handed to the dispatching thread at once.
const BATCH: u64 = 4096;

/// A scratch store rebuilt from a log, in its own sled database.
#[derive(Debug)]
pub struct Rebuilt {
    pub store: Store,
    pub records: u64,
    _db: sled::Db,
}

/// Dispatches records `1..=until` of `log` to `handlers` into a fresh store under `scratch`,
/// keeping what `keep` names besides state.
pub fn rebuild(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    until: u64,
    keep: Keep,
    scratch: &Path,
) -> Result<Rebuilt> {
    rebuild_from(log, config, handlers, until, keep, scratch, None)
}

/// A projection's state at a log position, to start a rebuild from instead of the log's start.
#[derive(Debug)]
pub struct Seed<'a> {
    pub projection: &'a str,
    pub position: u64,
    pub entries: maestro_engine::store::Entries,
}

/// Like [`rebuild`], but when `seed` is given, its projection starts from the seed's state and
/// only records after its position are dispatched.
pub fn rebuild_from(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    until: u64,
    keep: Keep,
    scratch: &Path,
    seed: Option<Seed<'_>>,
) -> Result<Rebuilt> {
    let db = sled::Config::new().path(scratch).cache_capacity(64 << 20).open().map_err(engine_error)?;
    // The scratch store keeps its value files in the scratch dir too, so nothing is written
    // into the data dir.
    let store = Store::open(&db, ValueFiles::new(scratch.join(VALUE_FILES_DIR)))?;
    if let Some(seed) = seed {
        let mut pending = Pending::default();
        for (key, value) in seed.entries {
            store.stage(&mut pending, seed.projection, &key, Some(value))?;
        }
        pending.advance(seed.projection, seed.position);
        store.load(pending)?;
    }
    let records = dispatch_into(log, config, handlers, &store, until, keep, &|_, _| {})?;
    Ok(Rebuilt { store, records, _db: db })
}

/// Staged changes a rebuild holds before it writes them. Measured on the 1M-record bench log
/// (three runs each): 8 MiB 14.9 s and 357 MiB peak RSS, 32 MiB 12.0-12.9 s and 345-355 MiB,
/// 64 MiB 11.1-11.6 s and 399-409 MiB, 128 MiB 9.8-10.6 s and 429-452 MiB. Below 32 MiB the
/// peak is sled's own; above it each second saved costs about 40 MiB.
const LOAD_BYTES: usize = 32 << 20;

/// Read-ahead between the thread that reads and decodes the log and the one that dispatches.
const READ_AHEAD: usize = 4;

/// Records and their typed events, as the reading thread hands them over.
type Decoded = (Vec<Record>, Vec<Option<TypedEvent>>);

/// Dispatches records `1..=until` into `store` (those after the store's positions), reporting
/// (done, total) after each batch. One thread reads, checks and decodes records while this one
/// dispatches them.
pub(crate) fn dispatch_into(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    store: &Store,
    until: u64,
    keep: Keep,
    progress: &dyn Fn(u64, u64),
) -> Result<u64> {
    let stamp = OutputStamp { origin: "maestro-replay".into(), dead_letter_maxlen: config.dead_letter_maxlen };
    let decoder = Decoder { streams: config.streams.clone(), limits: config.limits };
    let mut dispatcher =
        Dispatcher::new(handlers, store.clone(), log, stamp, decoder.clone(), config.checkpoint_every)?
            .keeping(keep)
            .loading_every(LOAD_BYTES);
    let until = until.min(log.head_seq());
    let from = dispatcher.position()?.saturating_add(1);
    std::thread::scope(|scope| {
        let (sender, batches) = std::sync::mpsc::sync_channel::<Result<Decoded>>(READ_AHEAD);
        scope.spawn(move || read_batches(log, &decoder, from, until, &sender));
        let mut records = 0;
        for batch in batches {
            let (batch, typed) = batch?;
            records += dispatcher.dispatch(&batch, Some(typed))?.records;
            progress(batch.last().map_or(until, |r| r.seq), until);
        }
        dispatcher.flush()?;
        // The reader stops early only on an error, which it sent: reaching here means all of
        // `from..=until` was dispatched.
        Ok(records)
    })
}

/// Reads records `from..=until` in batches and decodes them, until done, a read fails (the
/// error is sent) or the dispatching side hangs up.
fn read_batches(
    log: &Log,
    decoder: &Decoder,
    from: u64,
    until: u64,
    sender: &std::sync::mpsc::SyncSender<Result<Decoded>>,
) {
    let mut next = from;
    while next <= until {
        let last = until.min(next + BATCH - 1);
        let batch = log
            .range(next, last)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(|records| {
                let typed = records.iter().map(|r| decoder.typed(r)).collect();
                (records, typed)
            })
            .map_err(crate::ReplayError::from);
        let failed = batch.is_err();
        if sender.send(batch).is_err() || failed {
            return;
        }
        next = last + 1;
    }
}

/// One projection rebuilt in place: its state hash before (from the old store's keys, not its
/// kept digest, so a state changed behind the engine's back shows; `None` when the old state
/// could not be read, such as a damaged value file, which is what a rebuild repairs) and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuiltProjection {
    pub projection: String,
    pub before: Option<[u8; 32]>,
    pub after: [u8; 32],
}

/// Rebuilds `handlers`' projections from the log into the next generation of the data dir's
/// store, then makes it the live one in one flushed write (see [`Store::replace_live`]); until
/// then the live store is untouched. The rebuild goes as far as the live engine dispatched:
/// records it logged but never dispatched (it stopped, or a damaged store stopped its batch)
/// are left to the engine, which publishes their answers when it dispatches them. A store that
/// never dispatched anything is rebuilt to the log's head, without answers, as before.
pub fn rebuild_in_place(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<RebuiltProjection>> {
    let db = log.db();
    let live = log.store()?;
    let dispatched = live.position(DISPATCHER)?;
    let until = if dispatched == 0 { log.head_seq() } else { dispatched.min(log.head_seq()) };
    let names: Vec<&'static str> = handlers.iter().map(|h| h.name()).collect();
    // Hashed before the rebuild: after it, the pages of the old state come on top of the
    // rebuild's own (measured: 378-385 MiB peak against 352-360).
    let before: Vec<_> = names.iter().map(|name| live.scan_digest(name).ok().map(|d| d.to_bytes())).collect();
    let next = Store::next_generation(db, log.value_files())?;
    dispatch_into(log, config, handlers, &next, until, Keep::STATE_ONLY, progress)?;
    let outcome = names
        .iter()
        .zip(before)
        .map(|(name, before)| {
            Ok(RebuiltProjection { projection: name.to_string(), before, after: next.state_hash(name)? })
        })
        .collect::<Result<Vec<_>>>()?;
    next.replace_live(db, &live, &names)?;
    Ok(outcome)
}

fn engine_error(error: sled::Error) -> crate::ReplayError {
    crate::ReplayError::Engine(error.into())
}

/// One projection compared: live and rebuilt state hashes at the same position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub projection: String,
    pub position: u64,
    /// The live state's hash, from its stored keys.
    pub live: String,
    pub rebuilt: String,
    /// Whether the digest the live store keeps (and checkpoints from) matches its stored keys.
    pub kept_matches: bool,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.live == self.rebuilt && self.kept_matches
    }
}

/// Compares every projection's state hash in the live store with a rebuild up to the live
/// position (the lowest over the projections, so all are compared at the same seq). The live
/// hash is computed from the state as it is stored, not taken from the kept digest, so a
/// changed state store is caught too; a kept digest that disagrees with its state differs too.
pub fn replay_equals_live(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    scratch: &Path,
) -> Result<Vec<Comparison>> {
    let live = log.store()?;
    let mut position = u64::MAX;
    for handler in &handlers {
        position = position.min(live.position(handler.name())?);
    }
    let names: Vec<&'static str> = handlers.iter().map(|h| h.name()).collect();
    let rebuilt = rebuild(log, config, handlers, position, Keep::STATE_ONLY, scratch)?;
    names
        .into_iter()
        .map(|name| {
            let stored = live.scan_digest(name)?.to_bytes();
            Ok(Comparison {
                projection: name.to_string(),
                position,
                live: hex(&stored),
                rebuilt: hex(&rebuilt.store.state_hash(name)?),
                kept_matches: stored == live.state_hash(name)?,
            })
        })
        .collect()
}

/// Writes the template history of a store rebuilt with [`Keep::INTENTS`] into a fresh bare repository at `into` and
/// returns its branch heads.
pub fn history(rebuilt: &Rebuilt, into: &Path) -> Result<Vec<(String, String)>> {
    let git = GitHistory::open(into).map_err(|e| crate::ReplayError::History(e.to_string()))?;
    let mut effects = Effects::new(vec![Box::new(git)]);
    let report = effects.run_pending(&rebuilt.store)?;
    if let Some((id, reason)) = report.failed {
        return Err(crate::ReplayError::History(format!("commit {id}: {reason}")));
    }
    heads(into)
}

/// The branch heads of a history repository.
pub fn heads(repo: &Path) -> Result<Vec<(String, String)>> {
    let git = GitHistory::open(repo).map_err(|e| crate::ReplayError::History(e.to_string()))?;
    git.heads().map_err(|e| crate::ReplayError::History(e.to_string()))
}
