//! One queue type for what the store keeps in log order under a key prefix: the outbox, and
//! the effect intents queued, waiting for a runner and in flight. Each item's key is the
//! prefix and the seq and index of the record that produced it.
//!
//! Beside the outbox, the publish mark: every output of the records up to it is published.
//! Outputs that are a function of their record alone (the dead-letter copy of a rejected
//! entry) are never written to the outbox; past the mark they are made again from the log.

use super::Store;
use super::keys::{OUTBOX, PUBLISHED_KEY, log_position, parse_log_position, u64_value};
use super::outbox::OutboxItem;
use crate::error::{EngineError, Result};
use maestro_handlers::Intent;
use maestro_schemas::codec;
use std::borrow::Cow;
use std::collections::HashMap;
use std::marker::PhantomData;

/// An item a [`Queue`] keeps: how it is stored.
pub(super) trait Queued: Sized {
    fn encode(&self) -> Result<Vec<u8>>;
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl Queued for Intent {
    fn encode(&self) -> Result<Vec<u8>> {
        codec::encode(self).map_err(|e| EngineError::State(e.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<Intent> {
        codec::decode(bytes).map_err(|e| EngineError::State(format!("effect intent: {e}")))
    }
}

/// The items of type `T` under one key prefix, in log order.
pub(super) struct Queue<T> {
    prefix: Cow<'static, [u8]>,
    item: PhantomData<fn() -> T>,
}

impl<T: Queued> Queue<T> {
    pub(super) fn new(prefix: impl Into<Cow<'static, [u8]>>) -> Queue<T> {
        Queue { prefix: prefix.into(), item: PhantomData }
    }

    /// The key of the item at log position `position` (see [`log_position`]).
    pub(super) fn key(&self, position: &[u8]) -> Vec<u8> {
        [self.prefix.as_ref(), position].concat()
    }

    /// Adds item `index` of the record at `seq` to `batch`.
    pub(super) fn stage(&self, batch: &mut sled::Batch, seq: u64, index: u32, item: &T) -> Result<()> {
        batch.insert(self.key(&log_position(seq, index)), item.encode()?);
        Ok(())
    }

    /// The first `limit` items, in log order, with their keys.
    pub(super) fn scan(&self, tree: &sled::Tree, limit: usize) -> Result<Vec<(sled::IVec, T)>> {
        self.scan_with(tree, limit, T::decode)
    }

    /// Like [`Queue::scan`], each item read with `decode`.
    pub(super) fn scan_with(
        &self,
        tree: &sled::Tree,
        limit: usize,
        mut decode: impl FnMut(&[u8]) -> Result<T>,
    ) -> Result<Vec<(sled::IVec, T)>> {
        tree.scan_prefix(self.prefix.as_ref())
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((key, decode(&value)?))
            })
            .collect()
    }

    /// The first `limit` items of the records after seq `after` up to seq `through`, in log
    /// order, with their keys.
    pub(super) fn scan_between(
        &self,
        tree: &sled::Tree,
        (after, through): (u64, u64),
        limit: usize,
        mut decode: impl FnMut(&[u8]) -> Result<T>,
    ) -> Result<Vec<(sled::IVec, T)>> {
        let from = self.key(&log_position(after.saturating_add(1), 0));
        let to = self.key(&log_position(through, u32::MAX));
        tree.range(from..=to)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((key, decode(&value)?))
            })
            .collect()
    }

    /// The keys of every item, in log order.
    pub(super) fn keys(&self, tree: &sled::Tree) -> Result<Vec<sled::IVec>> {
        self.keys_from(tree).collect()
    }

    /// The keys of every item, in log order, as they are read.
    pub(super) fn keys_from(&self, tree: &sled::Tree) -> impl Iterator<Item = Result<sled::IVec>> {
        tree.scan_prefix(self.prefix.as_ref()).keys().map(|key| Ok(key?))
    }

    /// Removes the items at `keys`, in one batch.
    pub(super) fn remove<K: AsRef<[u8]>>(&self, tree: &sled::Tree, keys: &[K]) -> Result<()> {
        tree.apply_batch(self.removal(keys))?;
        Ok(())
    }

    fn removal<K: AsRef<[u8]>>(&self, keys: &[K]) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.as_ref());
        }
        batch
    }
}

fn outbox() -> Queue<OutboxItem> {
    Queue::new(OUTBOX)
}

impl Store {
    /// Outbox entries in publishing order, with the keys to remove once they are published;
    /// the runs an entry holds by reference are read back from their value files.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(sled::IVec, OutboxItem)>> {
        let mut read = HashMap::new();
        outbox().scan_with(&self.tree, limit, |bytes| OutboxItem::load(bytes, &self.files, &mut read))
    }

    /// Like [`Store::outbox`], the entries of the records after seq `after` up to `through`.
    pub fn outbox_between(&self, after: u64, through: u64, limit: usize) -> Result<Vec<(sled::IVec, OutboxItem)>> {
        let mut read = HashMap::new();
        outbox()
            .scan_between(&self.tree, (after, through), limit, |bytes| OutboxItem::load(bytes, &self.files, &mut read))
    }

    /// The (seq, index) of the first outbox entry, if any.
    pub fn first_outbox(&self) -> Result<Option<(u64, u32)>> {
        let Some(key) = outbox().keys_from(&self.tree).next().transpose()? else { return Ok(None) };
        Ok(key.get(OUTBOX.len()..).and_then(parse_log_position))
    }

    /// Forgets published outbox entries and, with `through`, moves the publish mark up to that
    /// seq (never down), in one batch: after a crash the mark never claims an entry published
    /// that is still in the outbox.
    pub fn remove_outbox(&self, keys: &[sled::IVec], through: Option<u64>) -> Result<()> {
        let mut batch = outbox().removal(keys);
        let raised = match through {
            Some(through) if self.published_through()?.is_none_or(|mark| mark < through) => Some(through),
            _ => None,
        };
        match raised {
            Some(through) => batch.insert(PUBLISHED_KEY, &through.to_be_bytes()),
            None if keys.is_empty() => return Ok(()),
            None => {}
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Like [`Store::remove_outbox`], the entries at these (seq, index).
    pub fn remove_outbox_at(&self, positions: &[(u64, u32)], through: Option<u64>) -> Result<()> {
        let outbox = outbox();
        let keys: Vec<sled::IVec> =
            positions.iter().map(|(seq, index)| outbox.key(&log_position(*seq, *index)).into()).collect();
        self.remove_outbox(&keys, through)
    }

    /// The publish mark: every output of the records up to this seq is published. `None`
    /// until [`Store::start_publish_mark`].
    pub fn published_through(&self) -> Result<Option<u64>> {
        self.tree.get(PUBLISHED_KEY)?.map(|v| u64_value(&v)).transpose()
    }

    /// Sets the publish mark to `seq` unless it is set: a store that has none wrote every
    /// output of the records up to its position to the outbox.
    pub fn start_publish_mark(&self, seq: u64) -> Result<()> {
        if self.published_through()?.is_none() {
            self.tree.insert(PUBLISHED_KEY, &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Adds the outbox entries and effect intents of a commit to `batch`. An outbox entry that
    /// repeats a run of a value the handlers read since the last commit holds it by reference.
    pub(super) fn stage_queued(
        &self,
        batch: &mut sled::Batch,
        outputs: &[OutboxItem],
        intents: &[(u64, u32, Intent)],
    ) -> Result<()> {
        let outbox = outbox();
        let noted = self.files.take_noted();
        let index = noted.index();
        for item in outputs {
            batch.insert(outbox.key(&log_position(item.seq, item.index)), item.encode(&index)?);
        }
        let queued = super::effect_queue::queued();
        for (seq, index, intent) in intents {
            queued.stage(batch, *seq, *index, intent)?;
        }
        Ok(())
    }
}
