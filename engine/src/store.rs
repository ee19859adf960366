//! The projection store: every handler's key/value state, its log position, checkpoint hashes
//! and the outbox of entries waiting to be published, in one sled tree: `state` at first, then
//! `state.1`, `state.2`, ... as rebuilds replace it whole (tree `store` names the live one).
//!
//! Keys: `p` + name + 0 + key (state), `s` + name (position), `d` + name (state digest, kept
//! current by every commit), `h` + name + 0 + seq (checkpoint hash), `o` + seq + index
//! (outbox), `e` + seq + index (effect intents queued; [`effect_queue`] also keeps those waiting
//! for a runner and those in flight), `g` (dispatch guard). A commit
//! writes state, positions, outbox entries and intents in one batch, so a projection never runs
//! ahead of its outputs or its effects. State values of 4 KiB and more are files beside sled
//! (see [`crate::value_files`]); every read here resolves them, so callers see values only.
//! The store is derived: it can be deleted and rebuilt from the log.

use crate::error::{EngineError, Result};
use crate::value_files::ValueFiles;
use maestro_handlers::Intent;
use maestro_schemas::codec;
use maestro_schemas::digest::StateDigest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, btree_map};
use std::hash::Hasher;
use std::sync::{Arc, RwLock};

mod chunked;
mod effect_queue;
mod outbox;
mod view;
use chunked::{Chunked, LOAD_CHUNK, copy_except};
pub use effect_queue::IntentKey;
pub use outbox::OutboxItem;
pub use view::View;

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

/// The tree that names the live state tree (under [`LIVE_KEY`]); until a rebuild replaces the
/// live store, it is [`FIRST_GENERATION`].
const POINTER_TREE: &str = "store";
const LIVE_KEY: &[u8] = b"live";
const FIRST_GENERATION: &str = "state";
/// Later generations are `state.1`, `state.2`, ...
const GENERATION_PREFIX: &str = "state.";

fn live_tree_name(db: &sled::Db) -> Result<String> {
    Ok(match db.open_tree(POINTER_TREE)?.get(LIVE_KEY)? {
        Some(name) => String::from_utf8_lossy(&name).into_owned(),
        None => FIRST_GENERATION.to_string(),
    })
}

fn position_key(name: &str) -> Vec<u8> {
    [b"s", name.as_bytes()].concat()
}

fn checkpoint_prefix(name: &str) -> Vec<u8> {
    [b"h", name.as_bytes(), &[0]].concat()
}

fn checkpoint_key(name: &str, seq: u64) -> Vec<u8> {
    [checkpoint_prefix(name).as_slice(), &seq.to_be_bytes()].concat()
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

/// Changes gathered while dispatching, committed at once. Each projection's digest change is
/// brought up to date at checkpoints and commits (see [`Store::stage`]), so a checkpoint needs
/// no commit and a commit needs no second read of the values it replaces.
#[derive(Debug, Default)]
pub struct Pending {
    overlay: BTreeMap<Vec<u8>, Staged>,
    /// Per projection, what its staged changes add to the stored digest, as of the last time
    /// they were brought up to date ([`Pending::count_changes`]).
    deltas: BTreeMap<String, StateDigest>,
    positions: BTreeMap<String, u64>,
    checkpoints: Vec<(String, u64, [u8; 32])>,
    outbox: Vec<OutboxItem>,
    effects: Vec<(u64, u32, Intent)>,
    /// Bytes of the keys and values staged (a change staged again replaces the earlier one).
    bytes: usize,
}

/// A staged change of one state key.
#[derive(Debug)]
struct Staged {
    value: Option<Vec<u8>>,
    /// While the change is not yet counted in its projection's delta: what the key counted
    /// there before (the zero digest for a key that was absent). A key staged many times
    /// between checkpoints (a counter) is hashed twice per checkpoint, not twice per change.
    counted_before: Option<StateDigest>,
}

impl Pending {
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

    /// About how many bytes a commit of this batch writes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts the staged changes of the state keys that start with `prefix` (one projection's,
    /// or all) in their projections' deltas: each takes out what its key counted before and
    /// adds its new value.
    fn count_changes(&mut self, prefix: &[u8]) {
        let under = self.overlay.range_mut(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix));
        for (full, staged) in under {
            let Some(before) = staged.counted_before.take() else { continue };
            // `p` + name + 0 + key, and names hold no zero byte.
            let Some(name_len) = full[1..].iter().position(|b| *b == 0) else { continue };
            let (name, key) = (&full[1..1 + name_len], &full[2 + name_len..]);
            let now = StateDigest::of_entry(key, staged.value.as_deref());
            let name = String::from_utf8_lossy(name);
            let delta = match self.deltas.get_mut(name.as_ref()) {
                Some(delta) => delta,
                None => self.deltas.entry(name.into_owned()).or_default(),
            };
            delta.unmerge(&before);
            delta.merge(&now);
        }
    }
}

/// The projection store.
#[derive(Clone, Debug)]
pub struct Store {
    tree: sled::Tree,
    files: ValueFiles,
    /// The state keys written so far, as 64-bit hashes, while the store is known to hold no
    /// others (see [`Store::knowing_its_keys`]); `None` otherwise.
    written: Arc<RwLock<Option<HashSet<u64>>>>,
}

fn key_hash(full: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(full);
    hasher.finish()
}

impl Store {
    /// The live store, after dropping any other generation a rebuild left behind.
    pub fn open(db: &sled::Db, files: ValueFiles) -> Result<Store> {
        let live = live_tree_name(db)?;
        for name in db.tree_names() {
            if name.starts_with(GENERATION_PREFIX.as_bytes()) && name != live.as_bytes() {
                tracing::warn!(tree = %String::from_utf8_lossy(&name), "dropping a state tree a rebuild left behind");
                db.drop_tree(name)?;
            }
        }
        Store::open_tree(db, &live, files)
    }

    /// A store in sled tree `name`: a second, independent set of projections over the same log
    /// (a rebuild's scratch, or a comparison in tests).
    pub fn open_tree(db: &sled::Db, name: &str, files: ValueFiles) -> Result<Store> {
        Ok(Store { tree: db.open_tree(name)?, files, written: Arc::default() })
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

    /// Stages a change of projection `name` in `pending`: the value it replaces (staged or
    /// stored) will leave the projection's digest and the new one enter it, when the change is
    /// counted (at the next checkpoint or write). A change to the value already there stages
    /// nothing.
    pub fn stage(&self, pending: &mut Pending, name: &str, key: &[u8], value: Option<Vec<u8>>) -> Result<()> {
        let full = state_key(name, key);
        let key_len = full.len();
        let size = |value: Option<&[u8]>| key_len + value.map_or(0, <[u8]>::len);
        // One look-up of the staged changes, and no copy of the value replaced: this runs for
        // every change a handler makes.
        match pending.overlay.entry(full) {
            btree_map::Entry::Occupied(mut slot) => {
                let staged = slot.get_mut();
                if staged.value == value {
                    return Ok(());
                }
                pending.bytes = pending.bytes + size(value.as_deref()) - size(staged.value.as_deref());
                if staged.counted_before.is_none() {
                    staged.counted_before = Some(StateDigest::of_entry(key, staged.value.as_deref()));
                }
                staged.value = value;
            }
            btree_map::Entry::Vacant(slot) => {
                let old = self.stored(slot.key())?.map(|stored| self.resolved(stored)).transpose()?;
                if old.as_deref() == value.as_deref() {
                    return Ok(());
                }
                pending.bytes += size(value.as_deref());
                slot.insert(Staged { value, counted_before: Some(StateDigest::of_entry(key, old.as_deref())) });
            }
        }
        Ok(())
    }

    /// The position of projection `name` with `pending` applied.
    pub fn position_with(&self, pending: &Pending, name: &str) -> Result<u64> {
        match pending.positions.get(name) {
            Some(seq) => Ok(*seq),
            None => self.position(name),
        }
    }

    /// Records in `pending` the state hash of `name` at `seq`, as it is with `pending` applied.
    pub fn stage_checkpoint(&self, pending: &mut Pending, name: &str, seq: u64) -> Result<()> {
        pending.count_changes(&state_key(name, b""));
        let mut digest = self.digest(name)?;
        if let Some(delta) = pending.deltas.get(name) {
            digest.merge(delta);
        }
        pending.checkpoints.push((name.to_string(), seq, digest.to_bytes()));
        Ok(())
    }

    /// Writes `pending` like [`Store::commit`], but its state changes in chunks of
    /// [`LOAD_CHUNK`] keys (see [`Chunked`]) and the rest (digests, positions, checkpoints,
    /// outbox, intents) with the last chunk. Chunks are not atomic together: only for a store
    /// nobody reads until the writer is done and that is thrown away if it stops half way (a
    /// rebuild's scratch store or the next generation).
    pub fn load(&self, pending: Pending) -> Result<()> {
        self.write(pending, LOAD_CHUNK)
    }

    /// Writes a batch of changes, digests, positions, checkpoints, outbox entries and intents
    /// atomically. Not fsynced: the store is derived, and after a crash the engine re-dispatches
    /// the log's tail.
    pub fn commit(&self, pending: Pending) -> Result<()> {
        self.write(pending, usize::MAX)
    }

    fn write(&self, mut pending: Pending, chunk: usize) -> Result<()> {
        // Read before any state is written: a store without a kept digest computes one from
        // its state.
        pending.count_changes(b"p");
        let digests = self.digests_after(&pending)?;
        let mut writer = Chunked::new(&self.tree, chunk);
        self.remember_written(&pending);
        for (key, staged) in std::mem::take(&mut pending.overlay) {
            writer.write(key, staged.value.map(|v| self.files.stored_form(v)).transpose()?)?;
        }
        self.apply_rest(writer.rest(), digests, &pending)
    }

    /// Adds the keys `pending` writes to those the store knows it holds, if it knows them.
    fn remember_written(&self, pending: &Pending) {
        if let Ok(mut written) = self.written.write()
            && let Some(keys) = written.as_mut()
        {
            keys.extend(pending.overlay.iter().filter(|(_, s)| s.value.is_some()).map(|(k, _)| key_hash(k)));
        }
    }

    /// The digest of each projection `pending` changes, as it will be once it is written.
    fn digests_after(&self, pending: &Pending) -> Result<Vec<(String, StateDigest)>> {
        pending
            .deltas
            .iter()
            .map(|(name, delta)| {
                let mut digest = self.digest(name)?;
                digest.merge(delta);
                Ok((name.clone(), digest))
            })
            .collect()
    }

    /// Adds to `batch` everything of `pending` but its state changes, and applies it.
    fn apply_rest(&self, mut batch: sled::Batch, digests: Vec<(String, StateDigest)>, pending: &Pending) -> Result<()> {
        for (name, digest) in digests {
            batch.insert(digest_key(&name), &digest.to_bytes());
        }
        for (name, seq) in &pending.positions {
            batch.insert(position_key(name), &seq.to_be_bytes());
        }
        for (name, seq, hash) in &pending.checkpoints {
            batch.insert(checkpoint_key(name, *seq), hash);
        }
        let noted = self.files.take_noted();
        let index = noted.index();
        for item in &pending.outbox {
            batch.insert(outbox_key(item.seq, item.index), item.encode(&index)?);
        }
        for (seq, index, intent) in &pending.effects {
            let bytes = codec::encode(intent).map_err(|e| EngineError::State(e.to_string()))?;
            batch.insert(effect_key(*seq, *index), bytes);
        }
        if !pending.checkpoints.is_empty() {
            // Value files written, the batch that refers to them and the checkpoint not yet.
            crate::failpoint::crash_point("during-checkpoint");
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
            digest.add(&key[prefix.len()..], &self.files.load(&value)?);
        }
        Ok(digest)
    }

    /// The value files the state of every projection and the outbox refer to.
    pub fn referenced_files(&self) -> Result<HashSet<[u8; 32]>> {
        let mut out = HashSet::new();
        for item in self.tree.scan_prefix(b"p") {
            if let Some(hash) = ValueFiles::reference(&item?.1) {
                out.insert(hash);
            }
        }
        for item in self.tree.scan_prefix(b"o") {
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

    /// Every (key, value) of projection `name` if they hash to its kept digest; `None` when
    /// they do not (the state was changed behind the engine's back, or, read beside a running
    /// engine, a commit landed during the scan).
    pub fn entries_if_kept(&self, name: &str) -> Result<Option<Entries>> {
        let kept = self.digest(name)?;
        let entries = self.entries(name)?;
        let scanned = StateDigest::of(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        Ok((scanned == kept).then_some(entries))
    }

    /// A fresh, empty store in the next generation's tree, to be filled (by a rebuild) and
    /// then made live with [`Store::replace_live`]; until then the live store is untouched.
    pub fn next_generation(db: &sled::Db, files: ValueFiles) -> Result<Store> {
        let live = live_tree_name(db)?;
        let generation = live.strip_prefix(GENERATION_PREFIX).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        let name = format!("{GENERATION_PREFIX}{}", generation + 1);
        db.drop_tree(name.as_bytes())?;
        Ok(Store::open_tree(db, &name, files)?.knowing_its_keys())
    }

    /// Makes this store, made by [`Store::next_generation`] and filled with `rebuilt`'s
    /// projections, the live one: every key of `live` that is not of those projections (the
    /// other projections, the outbox, intents, the guard) is copied over, then one flushed write
    /// names this tree live, and the old tree is dropped. A crash before that write leaves the
    /// old store live; after it, the new one. Either way [`Store::open`] drops the other tree.
    /// Returns how many keys were copied.
    pub fn replace_live(&self, db: &sled::Db, live: &Store, rebuilt: &[&str]) -> Result<u64> {
        let mut skip_prefixes: Vec<Vec<u8>> = Vec::new();
        let mut skip_keys: Vec<Vec<u8>> = Vec::new();
        for name in rebuilt {
            skip_prefixes.push(state_key(name, b""));
            skip_prefixes.push(checkpoint_prefix(name));
            skip_keys.push(position_key(name));
            skip_keys.push(digest_key(name));
        }
        // The copied keys are not among those this store wrote: it no longer knows its keys.
        if let Ok(mut written) = self.written.write() {
            *written = None;
        }
        let copied = copy_except(&live.tree, &self.tree, &skip_prefixes, &skip_keys)?;
        let name = String::from_utf8_lossy(&self.tree.name()).into_owned();
        db.open_tree(POINTER_TREE)?.insert(LIVE_KEY, name.as_bytes())?;
        db.flush()?;
        db.drop_tree(live.tree.name())?;
        Ok(copied)
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

    /// Outbox entries in publishing order, with the keys to remove once they are published.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(sled::IVec, OutboxItem)>> {
        let mut read = HashMap::new();
        self.tree
            .scan_prefix(b"o")
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((key, OutboxItem::load(&value, &self.files, &mut read)?))
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
    use maestro_handlers::StateView;

    #[test]
    fn outbox_entries_written_before_elapsed_times_still_decode() {
        #[derive(Serialize)]
        struct Old {
            seq: u64,
            index: u32,
            stream: String,
            fields: Vec<(String, Vec<u8>)>,
            maxlen: Option<u64>,
        }
        // Field names were `String`s then: they read back as the same bytes.
        let old_fields = vec![("data".to_string(), b"{}".to_vec())];
        let old = Old { seq: 9, index: 1, stream: "s".into(), fields: old_fields, maxlen: Some(10) };
        let item = OutboxItem::decode(&codec::encode(&old).unwrap()).unwrap();
        let fields = vec![(b"data".to_vec(), b"{}".to_vec())];
        let expected =
            OutboxItem { seq: 9, index: 1, stream: "s".into(), fields, maxlen: Some(10), elapsed_from_ms: None };
        assert_eq!(item, expected);
        let timed = OutboxItem { elapsed_from_ms: Some(1_795_851_623_000), ..expected };
        assert_eq!(OutboxItem::decode(&codec::encode(&timed).unwrap()).unwrap(), timed);
    }

    /// A sled database in a temp dir (kept while the first element lives), its value files and
    /// its live store.
    fn fresh() -> (tempfile::TempDir, sled::Db, ValueFiles, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(tmp.path()).open().unwrap();
        let files = ValueFiles::new(tmp.path().join("files"));
        let live = Store::open(&db, files.clone()).unwrap();
        (tmp, db, files, live)
    }

    fn fill(store: &Store, name: &str, n: u32, seq: u64) {
        let mut pending = Pending::default();
        for i in 0..n {
            store
                .stage(&mut pending, name, format!("k{i:06}").as_bytes(), Some(format!("v{i}-{seq}").into_bytes()))
                .unwrap();
        }
        pending.advance(name, seq);
        store.commit(pending).unwrap();
    }

    /// The kept digest always equals one computed from scratch, through puts, overwrites and
    /// deletes, committed or loaded.
    #[test]
    fn the_kept_digest_stays_exact() {
        let (_tmp, _db, files, live) = fresh();
        fill(&live, "p", 25_000, 7);
        let mut pending = Pending::default();
        live.stage(&mut pending, "p", b"k000003", None).unwrap();
        live.stage(&mut pending, "p", b"k000004", Some(b"changed".to_vec())).unwrap();
        live.stage(&mut pending, "p", b"k000005", Some(b"v5-7".to_vec())).unwrap(); // unchanged: nothing staged
        live.stage(&mut pending, "p", b"k000006", Some(b"twice".to_vec())).unwrap();
        live.stage(&mut pending, "p", b"k000006", Some(b"v6-7".to_vec())).unwrap(); // back to the stored value
        // Values kept as files count by their bytes, not by their references.
        for (key, byte) in [(&b"big1"[..], b'a'), (b"big2", b'b'), (b"big3", b'c')] {
            live.stage(&mut pending, "p", key, Some(vec![byte; 10_000])).unwrap();
        }
        live.commit(pending).unwrap();
        assert_eq!(live.digest("p").unwrap(), live.scan_digest("p").unwrap());
        let mut pending = Pending::default();
        live.stage(&mut pending, "p", b"big1", None).unwrap();
        live.stage(&mut pending, "p", b"big2", Some(vec![b'z'; 5_000])).unwrap();
        live.stage(&mut pending, "p", b"big3", Some(vec![b'c'; 10_000])).unwrap(); // unchanged: nothing staged
        assert_eq!(pending.bytes(), "pp\0big1".len() + "pp\0big2".len() + 5_000);
        live.commit(pending).unwrap();
        assert_eq!(live.digest("p").unwrap(), live.scan_digest("p").unwrap());
        assert_eq!(live.value("p", b"big2").unwrap(), Some(vec![b'z'; 5_000]));
        let pending = Pending::default();
        let view = View::new(&live, &pending, "p");
        assert_eq!(view.get(b"big3"), Some(vec![b'c'; 10_000]));
        assert_eq!(
            view.scan(b"big"),
            vec![(b"big2".to_vec(), vec![b'z'; 5_000]), (b"big3".to_vec(), vec![b'c'; 10_000])]
        );
        assert_eq!(view.unreadable(), None);
        // A value file gone: the view says so, instead of only answering that there is no value.
        let reference = |key: &[u8]| ValueFiles::reference(&live.tree.get(state_key("p", key)).unwrap().unwrap());
        let (big2, big3) = (reference(b"big2").unwrap(), reference(b"big3").unwrap());
        // Gone: big3's file, and those of big1 and of big2's first value, which nothing refers to.
        assert_eq!(files.sweep(&HashSet::from([big2])).unwrap().0, 3);
        assert_eq!(view.get(b"big3"), None);
        let why = view.unreadable().unwrap();
        assert!(why.contains(&maestro_schemas::record::hex(&big3)) && why.contains("replay rebuild"), "{why}");
        // Storing the same bytes again (as a rebuild does) brings it back.
        files.stored_form(vec![b'c'; 10_000]).unwrap();
        assert_eq!(view.get(b"big3"), Some(vec![b'c'; 10_000]));
        // A load writes state before the digest: the digest must not count it twice.
        let mut pending = Pending::default();
        for i in 0..2_500u32 {
            live.stage(&mut pending, "q", &i.to_be_bytes(), Some(vec![1; 40])).unwrap();
        }
        live.stage(&mut pending, "p", b"k000007", None).unwrap();
        live.load(pending).unwrap();
        for name in ["p", "q"] {
            assert_eq!(live.digest(name).unwrap(), live.scan_digest(name).unwrap(), "{name}");
        }
    }

    /// A store that knows its keys (a rebuild's target) answers reads of keys it never wrote
    /// without sled, and reads every key once others were copied in by the swap.
    #[test]
    fn a_store_that_knows_its_keys_reads_them_and_forgets_them_when_others_come_in() {
        let (_tmp, db, files, live) = fresh();
        fill(&live, "p", 100, 7);
        fill(&live, "q", 50, 7);
        let knows = |store: &Store| store.written.read().unwrap().is_some();
        assert!(!knows(&Store::open(&db, files.clone()).unwrap().knowing_its_keys()), "not empty: it cannot know");
        let next = Store::next_generation(&db, files.clone()).unwrap();
        assert!(knows(&next));
        fill(&next, "p", 10, 9);
        let pending = Pending::default();
        assert_eq!(View::new(&next, &pending, "p").get(b"k000003"), Some(b"v3-9".to_vec()));
        assert_eq!(View::new(&next, &pending, "p").get(b"k000050"), None);
        // Written behind its back (not through the store): not seen, which is why only a store
        // that nobody else writes may know its keys.
        next.tree.insert(state_key("p", b"k000050"), b"behind".as_slice()).unwrap();
        assert_eq!(View::new(&next, &pending, "p").get(b"k000050"), None);
        next.replace_live(&db, &live, &["p"]).unwrap();
        assert!(!knows(&next));
        assert_eq!(View::new(&next, &pending, "q").get(b"k000003"), Some(b"v3-7".to_vec()), "copied from live");
        let mut pending = Pending::default();
        next.stage(&mut pending, "q", b"k000004", None).unwrap();
        next.commit(pending).unwrap();
        assert_eq!(next.digest("q").unwrap(), next.scan_digest("q").unwrap(), "the copied value left the digest");
    }

    /// A new generation replaces the live store whole: the rebuilt projections come from it,
    /// everything else is copied from the old one, which is dropped; a generation left behind
    /// by an interrupted rebuild is dropped at the next open.
    #[test]
    fn a_new_generation_replaces_the_live_store() {
        let (_tmp, db, files, live) = fresh();
        fill(&live, "p", 3_000, 7);
        fill(&live, "pq", 1_500, 7); // a name that starts like "p": must be copied, not skipped
        let mut pending = Pending::default();
        live.stage(&mut pending, "pq", b"large", Some(vec![7; 8_000])).unwrap();
        live.commit(pending).unwrap();
        let mut pending = Pending::default();
        pending.advance("_dispatch", 7);
        pending.publish(OutboxItem {
            seq: 7,
            index: 0,
            stream: "s".into(),
            fields: vec![],
            maxlen: None,
            elapsed_from_ms: None,
        });
        live.commit(pending).unwrap();
        let next = Store::next_generation(&db, files.clone()).unwrap();
        fill(&next, "p", 1_200, 9);
        let rebuilt = next.entries("p").unwrap();
        let copied = next.replace_live(&db, &live, &["p"]).unwrap();
        assert!(copied >= 1_500 + 2, "copied {copied}");
        let reopened = Store::open(&db, files.clone()).unwrap();
        assert_eq!(reopened.entries("p").unwrap(), rebuilt);
        assert_eq!(reopened.position("p").unwrap(), 9);
        assert_eq!(reopened.digest("p").unwrap(), reopened.scan_digest("p").unwrap());
        assert_eq!(reopened.entries("pq").unwrap().len(), 1_501);
        assert_eq!(reopened.value("pq", b"large").unwrap(), Some(vec![7; 8_000]), "a value file survives the swap");
        assert_eq!(reopened.position("_dispatch").unwrap(), 7);
        assert_eq!(reopened.outbox(10).unwrap().len(), 1);
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"state"), "the old generation is dropped");
        // An interrupted rebuild: a next generation that was never made live.
        let stray = Store::next_generation(&db, files.clone()).unwrap();
        fill(&stray, "p", 10, 11);
        drop(stray);
        let reopened = Store::open(&db, files.clone()).unwrap();
        assert_eq!(reopened.position("p").unwrap(), 9);
        assert_eq!(db.tree_names().iter().filter(|n| n.starts_with(b"state")).count(), 1);
    }
}
