//! The projection store: every handler's key/value state, its log position, checkpoint hashes
//! and the outbox of entries waiting to be published, in the sled tree `state`.
//!
//! Keys: `p` + name + 0 + key (state), `s` + name (position), `d` + name (state digest, kept
//! current by every commit), `h` + name + 0 + seq (checkpoint hash), `o` + seq + index
//! (outbox), `e` + seq + index (effect intents waiting to run), `g` (dispatch guard), `r` +
//! name (a swap in progress). A commit writes state, positions, outbox entries and intents in one batch,
//! so a projection never runs ahead of its outputs or its effects.
//! The store is derived: it can be deleted and rebuilt from the log.

use crate::error::{EngineError, Result};
use maestro_handlers::{Intent, StateView};
use maestro_schemas::codec;
use maestro_schemas::digest::StateDigest;
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

fn digest_key(name: &str) -> Vec<u8> {
    [b"d", name.as_bytes()].concat()
}

/// The projection name of a state key (`p` + name + 0 + key).
fn name_of(state_key: &[u8]) -> Option<&[u8]> {
    let rest = state_key.strip_prefix(b"p")?;
    Some(&rest[..rest.iter().position(|b| *b == 0)?])
}

/// Present while projection `name` is being swapped in (see [`Store::replace_projection`]).
fn swap_key(name: &str) -> Vec<u8> {
    [b"r", name.as_bytes()].concat()
}

/// Keys per batch of a swap: bounds its memory.
const SWAP_CHUNK: usize = 10_000;

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

    fn scan_limit(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let full = state_key(self.name, prefix);
        let strip = state_key(self.name, b"").len();
        // The batch's own changes win over what the store holds.
        let under = || self.pending.overlay.range(full.clone()..).take_while(|(k, _)| k.starts_with(&full));
        let deletes = under().filter(|(_, v)| v.is_none()).count();
        let stored = self
            .store
            .tree
            .scan_prefix(&full)
            .flatten()
            .take(limit.saturating_add(deletes))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        maestro_handlers::contract::merge_scan(stored, under(), limit)
            .into_iter()
            .map(|(k, v)| (k[strip..].to_vec(), v))
            .collect()
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
        let store = Store { tree: db.open_tree(name)? };
        store.recover_swaps()?;
        Ok(store)
    }

    /// The last log seq applied to projection `name` (0 when none).
    pub fn position(&self, name: &str) -> Result<u64> {
        self.tree.get(position_key(name))?.map(|v| u64_value(&v)).transpose().map(|p| p.unwrap_or(0))
    }

    /// Writes a batch of changes, positions and outbox entries atomically. Not fsynced: the
    /// store is derived, and after a crash the engine re-dispatches the log's tail.
    pub fn commit(&self, pending: Pending) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut digests: BTreeMap<Vec<u8>, StateDigest> = BTreeMap::new();
        for (key, value) in pending.overlay {
            let old = self.tree.get(&key)?;
            if old.as_deref() == value.as_deref() {
                continue;
            }
            if let Some(name) = name_of(&key) {
                let digest = match digests.entry(name.to_vec()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(self.digest(&String::from_utf8_lossy(name))?)
                    }
                };
                let short = &key[name.len() + 2..];
                if let Some(old) = &old {
                    digest.remove(short, old);
                }
                if let Some(new) = &value {
                    digest.add(short, new);
                }
            }
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        for (name, digest) in digests {
            batch.insert([b"d".as_slice(), &name].concat(), &digest.to_bytes());
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

    /// The state hash of projection `name` (see `maestro_schemas::digest`): the same state
    /// always hashes the same, however it was built. Kept current by every commit, so a
    /// checkpoint costs one read, not a scan of the state.
    pub fn state_hash(&self, name: &str) -> Result<[u8; 32]> {
        Ok(self.digest(name)?.to_bytes())
    }

    /// The kept digest, or, for a store written before digests were kept, one computed from
    /// the state (and kept from then on).
    fn digest(&self, name: &str) -> Result<StateDigest> {
        if let Some(bytes) = self.tree.get(digest_key(name))? {
            return StateDigest::from_bytes(&bytes)
                .ok_or_else(|| EngineError::State(format!("state digest of {name} is damaged")));
        }
        let digest = self.scan_digest(name)?;
        if digest != StateDigest::default() {
            self.tree.insert(digest_key(name), &digest.to_bytes())?;
        }
        Ok(digest)
    }

    /// The digest of projection `name` computed from every key, ignoring the kept one.
    pub fn scan_digest(&self, name: &str) -> Result<StateDigest> {
        let prefix = state_key(name, b"");
        let mut digest = StateDigest::default();
        for item in self.tree.scan_prefix(&prefix) {
            let (key, value) = item?;
            digest.add(&key[prefix.len()..], &value);
        }
        Ok(digest)
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

    /// Replaces projection `name` (state, digest, checkpoints, position) with `other`'s, in
    /// chunks, so that memory stays bounded whatever the projection's size. A swap marker and a
    /// cleared position go first: a crash in the middle leaves the marker, and the next
    /// [`Store::open`] clears the half-swapped projection so that catch-up rebuilds it from the
    /// log. (Only a holder of the data dir's lock swaps, so no reader sees the middle.) Outbox
    /// entries and intents are not moved: what `other` queued was published and run long ago.
    pub fn replace_projection(&self, name: &str, other: &Store) -> Result<u64> {
        let mut start = sled::Batch::default();
        start.insert(swap_key(name), b"swapping".as_slice());
        start.remove(position_key(name));
        start.remove(digest_key(name));
        self.tree.apply_batch(start)?;
        self.tree.flush()?;
        self.clear_projection_keys(name)?;
        let mut written = 0;
        for prefix in [state_key(name, b""), [b"h", name.as_bytes(), &[0]].concat()] {
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for item in other.tree.scan_prefix(&prefix) {
                let (key, value) = item?;
                batch.insert(key, value);
                in_batch += 1;
                written += 1;
                if in_batch == SWAP_CHUNK {
                    self.tree.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            self.tree.apply_batch(batch)?;
        }
        let mut finish = sled::Batch::default();
        finish.insert(position_key(name), &other.position(name)?.to_be_bytes());
        finish.insert(digest_key(name), &other.digest(name)?.to_bytes());
        finish.remove(swap_key(name));
        self.tree.apply_batch(finish)?;
        self.tree.flush()?;
        Ok(written)
    }

    /// Deletes projection `name`'s state and checkpoints, in bounded batches.
    fn clear_projection_keys(&self, name: &str) -> Result<()> {
        for prefix in [state_key(name, b""), [b"h", name.as_bytes(), &[0]].concat()] {
            loop {
                let keys: Vec<sled::IVec> =
                    self.tree.scan_prefix(&prefix).keys().take(SWAP_CHUNK).collect::<std::result::Result<_, _>>()?;
                if keys.is_empty() {
                    break;
                }
                let mut batch = sled::Batch::default();
                keys.into_iter().for_each(|key| batch.remove(key));
                self.tree.apply_batch(batch)?;
            }
        }
        Ok(())
    }

    /// Clears every projection a crash left half swapped (its position is gone already, so
    /// catch-up rebuilds it from the log). Returns their names.
    fn recover_swaps(&self) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .tree
            .scan_prefix(b"r")
            .keys()
            .map(|key| key.map(|k| String::from_utf8_lossy(&k[1..]).into_owned()))
            .collect::<std::result::Result<_, _>>()?;
        for name in &names {
            tracing::warn!(projection = name, "a swap was interrupted: the projection is rebuilt from the log");
            self.clear_projection_keys(name)?;
            let mut batch = sled::Batch::default();
            batch.remove(position_key(name));
            batch.remove(digest_key(name));
            batch.remove(swap_key(name));
            self.tree.apply_batch(batch)?;
        }
        Ok(names)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(store: &Store, name: &str, n: u32, seq: u64) {
        let mut pending = Pending::default();
        for i in 0..n {
            pending.put(name, format!("k{i:06}").as_bytes(), format!("v{i}-{seq}").into_bytes());
        }
        pending.advance(name, seq);
        store.commit(pending).unwrap();
    }

    /// The kept digest always equals one computed from scratch, through puts, overwrites and
    /// deletes, and a swap moves state, position and digest.
    #[test]
    fn digest_stays_exact_and_a_swap_moves_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(tmp.path()).open().unwrap();
        let live = Store::open(&db).unwrap();
        fill(&live, "p", 25_000, 7);
        let mut pending = Pending::default();
        pending.delete("p", b"k000003");
        pending.put("p", b"k000004", b"changed".to_vec());
        pending.put("p", b"k000005", b"v5-7".to_vec()); // unchanged value: no digest change
        live.commit(pending).unwrap();
        assert_eq!(live.digest("p").unwrap(), live.scan_digest("p").unwrap());
        let shadow = Store::open_tree(&db, "shadow").unwrap();
        fill(&shadow, "p", 12_000, 9);
        let written = live.replace_projection("p", &shadow).unwrap();
        assert_eq!(written, 12_000);
        assert_eq!(live.position("p").unwrap(), 9);
        assert_eq!(live.entries("p").unwrap(), shadow.entries("p").unwrap());
        assert_eq!(live.state_hash("p").unwrap(), shadow.state_hash("p").unwrap());
        assert_eq!(live.digest("p").unwrap(), live.scan_digest("p").unwrap());
    }

    /// A swap interrupted after its marker leaves a projection that the next open clears, so
    /// that catch-up rebuilds it from the log.
    #[test]
    fn an_interrupted_swap_is_cleared_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(tmp.path()).open().unwrap();
        let live = Store::open(&db).unwrap();
        fill(&live, "p", 100, 5);
        fill(&live, "q", 10, 5);
        live.tree.insert(swap_key("p"), b"swapping".as_slice()).unwrap();
        let reopened = Store::open(&db).unwrap();
        assert_eq!(reopened.position("p").unwrap(), 0);
        assert!(reopened.entries("p").unwrap().is_empty());
        assert_eq!(reopened.entries("q").unwrap().len(), 10, "other projections are untouched");
        assert_eq!(reopened.position("q").unwrap(), 5);
    }
}
