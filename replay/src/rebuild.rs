//! Rebuilding projections from the log, offline: every record dispatched again to the same
//! handlers into a scratch store, which is then compared with the live one. Outputs are never
//! kept (the live run published them); intents only when the caller will run them (the history
//! repository rebuild).

use crate::Result;
use maestro_engine::config::EngineConfig;
use maestro_engine::dispatch::{Decoder, Dispatcher, Keep, OutputStamp};
use maestro_engine::effects::Effects;
use maestro_engine::effects::git::GitHistory;
use maestro_engine::log::Log;
use maestro_engine::store::Store;
use maestro_handlers::Handler;
use maestro_schemas::record::hex;
use std::path::Path;
use std::sync::Arc;

/// Records dispatched per store commit while rebuilding.
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
    let db = sled::Config::new().path(scratch).cache_capacity(64 << 20).open().map_err(engine_error)?;
    let store = Store::open(&db)?;
    let records = dispatch_into(log, config, handlers, &store, until, keep, &|_, _| {})?;
    Ok(Rebuilt { store, records, _db: db })
}

/// Dispatches records `1..=until` into `store`, reporting (done, total) after each batch.
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
        Dispatcher::new(handlers, store.clone(), log, stamp, decoder, config.checkpoint_every)?.keeping(keep);
    let mut next = 1;
    let until = until.min(log.head_seq());
    let mut records = 0;
    while next <= until {
        let last = until.min(next + BATCH - 1);
        let batch = log.range(next, last).collect::<std::result::Result<Vec<_>, _>>()?;
        records += dispatcher.dispatch(&batch, None)?.records;
        next = last + 1;
        progress(last, until);
    }
    Ok(records)
}

/// The shadow tree a rebuild in place writes before the swap.
const SHADOW: &str = "state-rebuild";

/// Rebuilds `handlers`' projections from the whole log into a shadow tree of the data dir's
/// own database, then swaps each into the live state in one atomic batch; until the swap the
/// live state is untouched. Returns (projection, keys written) per projection.
pub fn rebuild_in_place(
    log: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    progress: &dyn Fn(u64, u64),
) -> Result<Vec<(String, u64)>> {
    let db = log.db();
    db.drop_tree(SHADOW).map_err(engine_error)?;
    let shadow = Store::open_tree(db, SHADOW)?;
    let names: Vec<&'static str> = handlers.iter().map(|h| h.name()).collect();
    dispatch_into(log, config, handlers, &shadow, log.head_seq(), Keep::STATE_ONLY, progress)?;
    let live = Store::open(db)?;
    let mut swapped = Vec::new();
    for name in names {
        swapped.push((name.to_string(), live.replace_projection(name, &shadow)?));
    }
    drop(shadow);
    db.drop_tree(SHADOW).map_err(engine_error)?;
    Ok(swapped)
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
    let live = Store::open(log.db())?;
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
