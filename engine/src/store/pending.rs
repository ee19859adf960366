//! Staged changes: what a dispatch gathers ([`Pending`]) and how it is written, state,
//! digests, positions, checkpoints, outbox entries and intents together, so a projection never
//! runs ahead of its outputs or its effects.

use super::chunked::{Chunked, LOAD_CHUNK};
use super::keys::{PUBLISHED_KEY, STATE, checkpoint_key, digest_key, position_key, state_key};
use super::outbox::OutboxItem;
use super::{Store, key_hash};
use crate::error::Result;
use maestro_handlers::Intent;
use maestro_schemas::digest::StateDigest;
use std::collections::{BTreeMap, btree_map};

/// Changes gathered while dispatching, committed at once. Each projection's digest change is
/// brought up to date at checkpoints and commits (see [`Store::stage`]), so a checkpoint needs
/// no commit and a commit needs no second read of the values it replaces.
#[derive(Debug, Default)]
pub struct Pending {
    pub(super) overlay: BTreeMap<Vec<u8>, Staged>,
    /// Per projection, what its staged changes add to the stored digest, as of the last time
    /// they were brought up to date ([`Pending::count_changes`]).
    deltas: BTreeMap<String, StateDigest>,
    positions: BTreeMap<String, u64>,
    checkpoints: Vec<(String, u64, [u8; 32])>,
    outbox: Vec<OutboxItem>,
    /// Outputs made again from their record when needed, never written (see [`super::queue`]).
    regenerable: Vec<OutboxItem>,
    effects: Vec<(u64, u32, Intent)>,
    /// Set when every staged output was published before the batch is written: the publish
    /// mark moves up to this seq in the same batch, and no output goes to the outbox.
    published_through: Option<u64>,
    /// Bytes of the keys and values staged (a change staged again replaces the earlier one).
    bytes: usize,
}

/// The outputs of one commit, each list in log order.
#[derive(Debug, Default)]
pub struct CommittedOutputs {
    /// Written to the outbox.
    pub stored: Vec<OutboxItem>,
    /// Not written: made again from their records past the publish mark.
    pub regenerable: Vec<OutboxItem>,
}

/// A staged change of one state key.
#[derive(Debug)]
pub(super) struct Staged {
    pub(super) value: Option<Vec<u8>>,
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

    /// Queues an output that is a function of its record alone: published like the others,
    /// but not written to the outbox.
    pub fn publish_regenerable(&mut self, item: OutboxItem) {
        self.regenerable.push(item);
    }

    pub fn outbox(&self) -> &[OutboxItem] {
        &self.outbox
    }

    /// Every staged output, in log order: what a publisher sends before the batch is written.
    pub fn outputs_in_order(&self) -> Vec<&OutboxItem> {
        let mut all: Vec<&OutboxItem> = self.outbox.iter().chain(&self.regenerable).collect();
        all.sort_unstable_by_key(|item| (item.seq, item.index));
        all
    }

    /// Notes that every staged output is published: none is written to the outbox, and the
    /// publish mark moves up to `through` with the batch.
    pub fn mark_published(&mut self, through: u64) {
        self.outbox.clear();
        self.regenerable.clear();
        self.published_through = Some(through);
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

impl Store {
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
        self.write(pending, LOAD_CHUNK).map(drop)
    }

    /// Writes a batch of changes, digests, positions, checkpoints, outbox entries and intents
    /// atomically. Not fsynced: the store is derived, and after a crash the engine re-dispatches
    /// the log's tail. Returns the outputs of the batch, so that they can be published without
    /// reading them back.
    pub fn commit(&self, pending: Pending) -> Result<CommittedOutputs> {
        self.write(pending, usize::MAX)
    }

    fn write(&self, mut pending: Pending, chunk: usize) -> Result<CommittedOutputs> {
        // Read before any state is written: a store without a kept digest computes one from
        // its state.
        pending.count_changes(STATE);
        let digests = self.digests_after(&pending)?;
        let mut writer = Chunked::new(&self.tree, chunk);
        self.remember_written(&pending);
        for (key, staged) in std::mem::take(&mut pending.overlay) {
            writer.write(key, staged.value.map(|v| self.files.stored_form(v)).transpose()?)?;
        }
        self.apply_rest(writer.rest(), digests, &pending)?;
        Ok(CommittedOutputs { stored: pending.outbox, regenerable: pending.regenerable })
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
        self.stage_queued(&mut batch, &pending.outbox, &pending.effects)?;
        if let Some(through) = pending.published_through
            && self.published_through()?.is_none_or(|mark| mark < through)
        {
            batch.insert(PUBLISHED_KEY, &through.to_be_bytes());
        }
        if !pending.checkpoints.is_empty() {
            // Value files written, the batch that refers to them and the checkpoint not yet.
            crate::failpoint::crash_point("during-checkpoint");
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}
