//! The projection store: every handler's key/value state, its log position, checkpoint hashes
//! and the outbox of entries waiting to be published, in the sled tree `state`.
//!
//! Keys: `p` + name + 0 + key (state), `s` + name (position), `h` + name + 0 + seq (checkpoint
//! hash), `o` + seq + index (outbox), `e` + seq + index (effect intents waiting to run), `g`
//! (dispatch guard). A commit writes state, positions, outbox entries and intents in one batch,
//! so a projection never runs ahead of its outputs or its effects.
//! The store is derived: it can be deleted and rebuilt from the log.

use crate::error::{EngineError, Result};
use maestro_handlers::{Intent, StateView};
use maestro_schemas::codec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn state_key(name: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + name.len() + key.len());
    out.push(b'p');
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(key);
    out
}

fn position_key(name: &str) -> Vec<u8> {
    [b"s", name.as_bytes()].concat()
}

fn checkpoint_key(name: &str, seq: u64) -> Vec<u8> {
    [b"h", name.as_bytes(), &[0], &seq.to_be_bytes()].concat()
}

fn outbox_key(seq: u64, index: u32) -> Vec<u8> {
    [b"o".as_slice(), &seq.to_be_bytes(), &index.to_be_bytes()].concat()
}

fn effect_key(seq: u64, index: u32) -> Vec<u8> {
    [b"e".as_slice(), &seq.to_be_bytes(), &index.to_be_bytes()].concat()
}

const GUARD_KEY: &[u8] = b"g";

fn u64_value(value: &[u8]) -> Result<u64> {
    value
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| EngineError::State(format!("position of {} bytes", value.len())))
}

/// An entry waiting to be published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub seq: u64,
    pub index: u32,
    pub stream: String,
    pub fields: Vec<(String, Vec<u8>)>,
    /// Approximate cap on the target stream's length (dead-letter streams are capped).
    pub maxlen: Option<u64>,
}

/// The catch-up guard: which record dispatch was about to start, and how many times a
/// dispatch starting there has begun without finishing (a crash counts as a delivery).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub from_seq: u64,
    pub attempts: u32,
    /// After a crash, records up to this seq are dispatched one at a time.
    pub slow_until: u64,
}

/// Changes gathered while dispatching one batch, committed at once.
#[derive(Debug, Default)]
pub struct Pending {
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    positions: BTreeMap<String, u64>,
    outbox: Vec<OutboxItem>,
    effects: Vec<(u64, u32, Intent)>,
}

impl Pending {
    pub fn put(&mut self, name: &str, key: &[u8], value: Vec<u8>) {
        self.overlay.insert(state_key(name, key), Some(value));
    }

    pub fn delete(&mut self, name: &str, key: &[u8]) {
        self.overlay.insert(state_key(name, key), None);
    }

    pub fn advance(&mut self, name: &str, seq: u64) {
        self.positions.insert(name.to_string(), seq);
    }

    pub fn publish(&mut self, item: OutboxItem) {
        self.outbox.push(item);
    }

    pub fn outbox(&self) -> &[OutboxItem] {
        &self.outbox
    }

    /// Queues an effect intent of the record at `seq`.
    pub fn effect(&mut self, seq: u64, index: u32, intent: Intent) {
        self.effects.push((seq, index, intent));
    }
}

/// A handler's view of its state: the pending batch first, then the store.
#[derive(Debug)]
pub struct View<'a> {
    pub store: &'a Store,
    pub pending: &'a Pending,
    pub name: &'a str,
}

impl StateView for View<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let full = state_key(self.name, key);
        match self.pending.overlay.get(&full) {
            Some(value) => value.clone(),
            // A read error here is a storage failure, not a missing key; the commit of the same
            // batch will hit it too and stop the batch before anything is acknowledged.
            None => self.store.tree.get(&full).ok().flatten().map(|v| v.to_vec()),
        }
    }

    fn scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let full = state_key(self.name, prefix);
        let strip = state_key(self.name, b"").len();
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (key, value) in self.store.tree.scan_prefix(&full).flatten() {
            merged.insert(key.to_vec(), Some(value.to_vec()));
        }
        // The batch's own changes win over what the store holds.
        for (key, value) in self.pending.overlay.range(full.clone()..).take_while(|(k, _)| k.starts_with(&full)) {
            merged.insert(key.clone(), value.clone());
        }
        merged.into_iter().filter_map(|(k, v)| Some((k[strip..].to_vec(), v?))).collect()
    }
}

/// The projection store.
#[derive(Clone, Debug)]
pub struct Store {
    tree: sled::Tree,
}

impl Store {
    pub fn open(db: &sled::Db) -> Result<Store> {
        Store::open_tree(db, "state")
    }

    /// A store in sled tree `name`: a second, independent set of projections over the same log
    /// (a shadow rebuild, or a comparison in tests).
    pub fn open_tree(db: &sled::Db, name: &str) -> Result<Store> {
        Ok(Store { tree: db.open_tree(name)? })
    }

    /// The last log seq applied to projection `name` (0 when none).
    pub fn position(&self, name: &str) -> Result<u64> {
        self.tree.get(position_key(name))?.map(|v| u64_value(&v)).transpose().map(|p| p.unwrap_or(0))
    }

    /// Writes a batch of changes, positions and outbox entries atomically. Not fsynced: the
    /// store is derived, and after a crash the engine re-dispatches the log's tail.
    pub fn commit(&self, pending: Pending) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (key, value) in pending.overlay {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        for (name, seq) in &pending.positions {
            batch.insert(position_key(name), &seq.to_be_bytes());
        }
        for item in &pending.outbox {
            let bytes = codec::encode(item).map_err(|e| EngineError::State(e.to_string()))?;
            batch.insert(outbox_key(item.seq, item.index), bytes);
        }
        for (seq, index, intent) in &pending.effects {
            let bytes = codec::encode(intent).map_err(|e| EngineError::State(e.to_string()))?;
            batch.insert(effect_key(*seq, *index), bytes);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Canonical hash of projection `name`'s state: every (key, value) in key order, each
    /// length-prefixed. The same state always hashes the same, however it was built.
    pub fn state_hash(&self, name: &str) -> Result<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        let prefix = state_key(name, b"");
        for item in self.tree.scan_prefix(&prefix) {
            let (key, value) = item?;
            let key = &key[prefix.len()..];
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(key);
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(&value);
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// One key of projection `name`.
    pub fn value(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(state_key(name, key))?.map(|v| v.to_vec()))
    }

    /// Every (key, value) of projection `name`, in key order.
    pub fn entries(&self, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = state_key(name, b"");
        self.tree
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item?;
                Ok((key[prefix.len()..].to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// Replaces projection `name` (state, position, checkpoints) with `other`'s, in one atomic
    /// batch: a reader sees the old projection or the new one, never a mix. Outbox entries and
    /// intents are not moved: what `other` queued was published and run long ago.
    pub fn replace_projection(&self, name: &str, other: &Store) -> Result<u64> {
        let prefixes = [state_key(name, b""), position_key(name), [b"h", name.as_bytes(), &[0]].concat()];
        let mut batch = sled::Batch::default();
        let mut written = 0;
        for prefix in &prefixes {
            // The position key is also a prefix of other names' positions (`s` + name): exact only.
            let exact = prefix[0] == b's';
            for item in self.tree.scan_prefix(prefix) {
                let (key, _) = item?;
                if !exact || key.as_ref() == prefix.as_slice() {
                    batch.remove(key);
                }
            }
            for item in other.tree.scan_prefix(prefix) {
                let (key, value) = item?;
                if !exact || key.as_ref() == prefix.as_slice() {
                    batch.insert(key, value);
                    written += 1;
                }
            }
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(written)
    }

    /// Records the state hash of `name` at `seq`.
    pub fn checkpoint(&self, name: &str, seq: u64) -> Result<[u8; 32]> {
        let hash = self.state_hash(name)?;
        self.tree.insert(checkpoint_key(name, seq), &hash)?;
        Ok(hash)
    }

    /// The checkpoints of `name`: (seq, state hash), in seq order.
    pub fn checkpoints(&self, name: &str) -> Result<Vec<(u64, [u8; 32])>> {
        let prefix = [b"h", name.as_bytes(), &[0]].concat();
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

    /// Outbox entries in publishing order, with the keys to remove once they are published.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(sled::IVec, OutboxItem)>> {
        self.tree
            .scan_prefix(b"o")
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                let item = codec::decode(&value).map_err(|e| EngineError::State(format!("outbox entry: {e}")))?;
                Ok((key, item))
            })
            .collect()
    }

    /// Forgets published outbox entries.
    pub fn remove_outbox(&self, keys: &[sled::IVec]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.clone());
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Effect intents waiting to run, in log order, with their keys.
    pub fn effects(&self, limit: usize) -> Result<Vec<(sled::IVec, Intent)>> {
        self.tree
            .scan_prefix(b"e")
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                let intent = codec::decode(&value).map_err(|e| EngineError::State(format!("effect intent: {e}")))?;
                Ok((key, intent))
            })
            .collect()
    }

    /// Forgets an effect intent that has run (or can never run).
    pub fn remove_effect(&self, key: &sled::IVec) -> Result<()> {
        self.tree.remove(key)?;
        Ok(())
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
