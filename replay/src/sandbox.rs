//! `maestro replay sandbox`: one tenant's records copied into a data dir of their own, replayed
//! there (projections and template history), to be compared with the live state.

use crate::Result;
use crate::rebuild::{Replay, write_history};
use maestro_effects::HISTORY_DIR;
use maestro_engine::config::EngineConfig;
use maestro_engine::datadir::DataDir;
use maestro_engine::dispatch::Keep;
use maestro_engine::log::{Log, NewRecord};
use maestro_handlers::Handler;
use maestro_schemas::Body;
use std::path::Path;
use std::sync::Arc;

/// What a sandbox holds.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: DataDir,
    pub log: Log,
    /// Records copied from the live log.
    pub records: u64,
}

/// Copies the config records and every entry naming `tenant` from `live` into a new data dir
/// at `into`, in log order (a new chain: the sandbox's seqs are its own), then dispatches them
/// to `handlers` and writes the template history the sandbox's projections ask for.
pub fn sandbox(
    live: &Log,
    config: &EngineConfig,
    handlers: Vec<Arc<dyn Handler>>,
    tenant: &str,
    into: &Path,
) -> Result<Sandbox> {
    if into.exists() {
        return Err(crate::ReplayError::Usage(format!("{} exists already: a sandbox starts empty", into.display())));
    }
    let dir = DataDir::open(into)?;
    let mut log = Log::open(dir.path(), 64 << 20)?;
    let mut records = 0;
    let mut batch = Vec::new();
    for record in live.range(1, live.head_seq()) {
        let record = record?;
        let keep = matches!(record.body, Body::Config { .. } | Body::Setting { .. })
            || crate::export::record_tenant(&record).as_deref() == Some(tenant);
        if keep {
            batch.push(NewRecord { body: record.body, request: None });
        }
        if batch.len() == 1024 {
            records += log.append(std::mem::take(&mut batch))?.len() as u64;
        }
    }
    records += log.append(batch)?.len() as u64;
    let store = log.store()?;
    Replay::new(&log, config, handlers).keeping(Keep::INTENTS).into_store(&store, &|_, _| {})?;
    write_history(&store, &dir.path().join(HISTORY_DIR))?;
    Ok(Sandbox { dir, log, records })
}
