//! The projection store: every handler's key/value state, its log position, checkpoint hashes,
//! the outbox of entries waiting to be published and the effect intents, in one sled tree (the
//! live generation, see [`generations`]; the key layout is in [`keys`]). A commit ([`pending`])
//! writes state, positions, outbox entries and intents in one batch, so a projection never runs
//! ahead of its outputs or its effects. State values of 4 KiB and more are files beside sled
//! (see [`crate::value_files`]); every read here resolves them, so callers see values only.
//! The store is derived: it can be deleted and rebuilt from the log.

use crate::error::{EngineError, Result};
use crate::value_files::ValueFiles;
use keys::{GUARD_KEY, STATE, checkpoint_prefix, position_key, state_key, u64_value};
use maestro_schemas::codec;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::hash::Hasher;
use std::sync::{Arc, RwLock};

mod chunked;
mod digests;
mod effect_queue;
mod generations;
mod keys;
mod outbox;
mod pending;
mod queue;
mod view;
pub use effect_queue::IntentKey;
pub use outbox::OutboxItem;
pub use pending::{CommittedOutputs, Pending};
pub use view::View;

/// Key/value pairs of one projection, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The catch-up guard: which record dispatch was about to start, and how many times a
/// dispatch starting there has begun without finishing (a crash counts as a delivery).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub from_seq: u64,
    pub attempts: u32,
    /// After a crash, records up to this seq are dispatched one at a time.
    pub slow_until: u64,
}

/// The projection store.
#[derive(Clone, Debug)]
pub struct Store {
    tree: sled::Tree,
    files: ValueFiles,
    /// The state keys written so far, as 64-bit hashes, while the store is known to hold no
    /// others (see [`Store::knowing_its_keys`]); `None` otherwise.
    written: Arc<RwLock<Option<HashSet<u64>>>>,
    /// sled's data file of the store's database, fsynced by [`Store::make_durable`]; `None`
    /// for a store nobody keeps (a rebuild's scratch, a tool's copy).
    sync_file: Option<Arc<std::fs::File>>,
}

fn key_hash(full: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(full);
    hasher.finish()
}

impl Store {
    /// A store in sled tree `name`: a second, independent set of projections over the same log
    /// (a rebuild's scratch, or a comparison in tests).
    pub fn open_tree(db: &sled::Db, name: &str, files: ValueFiles) -> Result<Store> {
        Ok(Store { tree: db.open_tree(name)?, files, written: Arc::default(), sync_file: None })
    }

    /// This store, with `file` (sled's data file of its database) fsynced by
    /// [`Store::make_durable`].
    pub fn syncing(self, file: std::fs::File) -> Store {
        Store { sync_file: Some(Arc::new(file)), ..self }
    }

    /// Writes everything committed so far out of the process (sled's flush: `sync_file_range`,
    /// no fsync), so a crash of the process loses none of it.
    pub fn flush(&self) -> Result<()> {
        self.tree.flush()?;
        Ok(())
    }

    /// [`Store::flush`], then an fsync of sled's data file, so a power loss loses none of it
    /// either. Commits are not synced (the store is derived: the log's tail is dispatched again
    /// after a crash); this is for a step that must not run ahead of the store on disk.
    pub fn make_durable(&self) -> Result<()> {
        self.flush()?;
        if let Some(file) = &self.sync_file {
            file.sync_data().map_err(EngineError::Sync)?;
        }
        Ok(())
    }

    /// For a store that starts empty and is written only through this handle and its clones
    /// (a rebuild's target), remembers the state keys it writes, so that reading any other key
    /// needs no look-up in sled. A rebuild mostly reads keys that do not exist yet (every new
    /// job, event and execution), and each such look-up walked sled's tree: 15% of a rebuild's
    /// dispatching thread. A store that is not empty is returned unchanged.
    pub fn knowing_its_keys(self) -> Store {
        if self.tree.is_empty()
            && let Ok(mut written) = self.written.write()
        {
            *written = Some(HashSet::new());
        }
        self
    }

    /// The stored form of state key `full`: known absent when the store knows its keys and
    /// never wrote it.
    fn stored(&self, full: &[u8]) -> Result<Option<sled::IVec>> {
        if let Ok(written) = self.written.read()
            && let Some(keys) = written.as_ref()
            && !keys.contains(&key_hash(full))
        {
            return Ok(None);
        }
        Ok(self.tree.get(full)?)
    }

    /// Like [`ValueFiles::load`], without copying a value that is not a reference: this runs
    /// for every change a handler stages.
    fn resolved(&self, stored: sled::IVec) -> Result<sled::IVec> {
        match ValueFiles::reference(&stored) {
            Some(_) => Ok(self.files.load(&stored)?.into()),
            None => Ok(stored),
        }
    }

    /// The last log seq applied to projection `name` (0 when none).
    pub fn position(&self, name: &str) -> Result<u64> {
        self.tree.get(position_key(name))?.map(|v| u64_value(&v)).transpose().map(|p| p.unwrap_or(0))
    }

    /// The value files the state of every projection and the outbox refer to.
    pub fn referenced_files(&self) -> Result<HashSet<[u8; 32]>> {
        let mut out = HashSet::new();
        for item in self.tree.scan_prefix(STATE) {
            if let Some(hash) = ValueFiles::reference(&item?.1) {
                out.insert(hash);
            }
        }
        for item in self.tree.scan_prefix(keys::OUTBOX) {
            out.extend(OutboxItem::references(&item?.1)?);
        }
        Ok(out)
    }

    /// One key of projection `name`.
    pub fn value(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.tree.get(state_key(name, key))?.map(|stored| self.files.load(&stored)).transpose()
    }

    /// Every (key, value) of projection `name`, in key order.
    pub fn entries(&self, name: &str) -> Result<Entries> {
        let prefix = state_key(name, b"");
        self.tree
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item?;
                Ok((key[prefix.len()..].to_vec(), self.files.load(&value)?))
            })
            .collect()
    }

    /// The checkpoints of `name`: (seq, state hash), in seq order.
    pub fn checkpoints(&self, name: &str) -> Result<Vec<(u64, [u8; 32])>> {
        let prefix = checkpoint_prefix(name);
        self.tree
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item?;
                let seq = u64_value(&key[prefix.len()..])?;
                let hash: [u8; 32] =
                    value.as_ref().try_into().map_err(|_| EngineError::State("checkpoint hash".into()))?;
                Ok((seq, hash))
            })
            .collect()
    }

    pub fn guard(&self) -> Result<Guard> {
        match self.tree.get(GUARD_KEY)? {
            Some(bytes) => codec::decode(&bytes).map_err(|e| EngineError::State(format!("guard: {e}"))),
            None => Ok(Guard::default()),
        }
    }

    /// Stores the guard and flushes it, so that a crash right after still finds it.
    pub fn set_guard(&self, guard: Guard) -> Result<()> {
        let bytes = codec::encode(&guard).map_err(|e| EngineError::State(e.to_string()))?;
        self.tree.insert(GUARD_KEY, bytes)?;
        self.tree.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
