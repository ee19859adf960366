//! The effect intents the store keeps, in three places, each keyed by the seq and index of the
//! record that produced the intent (so each place is in log order):
//!
//! - `e` + seq + index: queued, to be run;
//! - `w` + kind + 0 + seq + index: waiting for a runner of its kind (none is registered);
//! - `f` + seq + index: in flight, started by a runner whose task has not reported its end.
//!
//! An intent moves between them with one sled batch, so it is always in exactly one of them.

use super::{Store, effect_key};
use crate::error::{EngineError, Result};
use maestro_handlers::Intent;
use maestro_schemas::codec;

const QUEUED: &[u8] = b"e";
const WAITING: &[u8] = b"w";
const IN_FLIGHT: &[u8] = b"f";

/// Bytes of seq and index that end every intent key.
const SUFFIX: usize = 12;

fn suffix(key: &[u8]) -> &[u8] {
    &key[key.len().saturating_sub(SUFFIX)..]
}

fn waiting_prefix(kind: &str) -> Vec<u8> {
    [WAITING, kind.as_bytes(), &[0]].concat()
}

/// Where an intent is kept, by its log position: the key's last twelve bytes, the same in
/// every place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntentKey(Vec<u8>);

impl IntentKey {
    /// The key of the intent `index` of the record at `seq`.
    pub fn new(seq: u64, index: u32) -> IntentKey {
        IntentKey(suffix(&effect_key(seq, index)).to_vec())
    }

    fn of(key: &[u8]) -> IntentKey {
        IntentKey(suffix(key).to_vec())
    }

    fn queued(&self) -> Vec<u8> {
        [QUEUED, &self.0].concat()
    }

    fn in_flight(&self) -> Vec<u8> {
        [IN_FLIGHT, &self.0].concat()
    }

    fn waiting(&self, kind: &str) -> Vec<u8> {
        [waiting_prefix(kind).as_slice(), &self.0].concat()
    }
}

fn decode(value: &[u8]) -> Result<Intent> {
    codec::decode(value).map_err(|e| EngineError::State(format!("effect intent: {e}")))
}

impl Store {
    fn intents_under(&self, prefix: &[u8], limit: usize) -> Result<Vec<(IntentKey, Intent)>> {
        self.tree
            .scan_prefix(prefix)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((IntentKey::of(&key), decode(&value)?))
            })
            .collect()
    }

    /// Queued effect intents, in log order.
    pub fn effects(&self, limit: usize) -> Result<Vec<(IntentKey, Intent)>> {
        self.intents_under(QUEUED, limit)
    }

    /// Forgets a queued intent that has run.
    pub fn remove_effect(&self, key: &IntentKey) -> Result<()> {
        self.tree.remove(key.queued())?;
        Ok(())
    }

    /// Moves a queued intent to the intents waiting for a runner of its kind.
    pub fn park_effect(&self, key: &IntentKey, intent: &Intent) -> Result<()> {
        self.move_intent(&key.queued(), key.waiting(&intent.kind))
    }

    /// Moves a queued intent to the intents in flight: its runner's task goes on after `run`.
    pub fn start_effect(&self, key: &IntentKey) -> Result<()> {
        self.move_intent(&key.queued(), key.in_flight())
    }

    /// Forgets an intent in flight whose task reported its end.
    pub fn finish_effect(&self, key: &IntentKey) -> Result<()> {
        self.tree.remove(key.in_flight())?;
        Ok(())
    }

    /// Forgets a waiting intent.
    pub fn drop_waiting_effect(&self, key: &IntentKey, kind: &str) -> Result<()> {
        self.tree.remove(key.waiting(kind))?;
        Ok(())
    }

    /// Intents waiting for a runner, of every kind (in log order per kind).
    pub fn waiting_effects(&self) -> Result<Vec<(IntentKey, Intent)>> {
        self.intents_under(WAITING, usize::MAX)
    }

    /// Intents in flight, in log order.
    pub fn effects_in_flight(&self) -> Result<Vec<(IntentKey, Intent)>> {
        self.intents_under(IN_FLIGHT, usize::MAX)
    }

    /// Queues again every intent in flight: their tasks ended with the process that ran them.
    pub fn requeue_in_flight(&self) -> Result<u64> {
        let mut moved = 0;
        for item in self.tree.scan_prefix(IN_FLIGHT) {
            let (key, _) = item?;
            self.move_intent(&key, IntentKey::of(&key).queued())?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Queues again every intent waiting for a runner of `kind`, in log order with the rest.
    pub fn requeue_waiting(&self, kind: &str) -> Result<u64> {
        let mut moved = 0;
        for item in self.tree.scan_prefix(waiting_prefix(kind)) {
            let (key, _) = item?;
            self.move_intent(&key, IntentKey::of(&key).queued())?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Moves the intent at `from` to `to` in one batch; nothing when `from` is gone.
    fn move_intent(&self, from: &[u8], to: Vec<u8>) -> Result<()> {
        let Some(value) = self.tree.get(from)? else { return Ok(()) };
        let mut batch = sled::Batch::default();
        batch.remove(from);
        batch.insert(to, value);
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}
