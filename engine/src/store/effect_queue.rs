//! The effect intents the store keeps, in three [`Queue`]s, each keyed by the seq and index of
//! the record that produced the intent (so each is in log order):
//!
//! - `e` + seq + index: queued, to be run;
//! - `w` + kind + 0 + seq + index: waiting for a runner of its kind (none is registered);
//! - `f` + seq + index: in flight, started by a runner whose task has not reported its end.
//!
//! An intent moves between them with one sled batch, so it is always in exactly one of them.

use super::Store;
use super::keys::{EFFECTS_IN_FLIGHT, EFFECTS_QUEUED, EFFECTS_WAITING, log_position};
use super::queue::Queue;
use crate::error::Result;
use maestro_handlers::Intent;

/// Bytes of seq and index that end every intent key.
const SUFFIX: usize = 12;

pub(super) fn queued() -> Queue<Intent> {
    Queue::new(EFFECTS_QUEUED)
}

fn in_flight() -> Queue<Intent> {
    Queue::new(EFFECTS_IN_FLIGHT)
}

/// The intents waiting for a runner of `kind`; of every kind when `kind` is `None`.
fn waiting(kind: Option<&str>) -> Queue<Intent> {
    match kind {
        Some(kind) => Queue::new([EFFECTS_WAITING, kind.as_bytes(), &[0]].concat()),
        None => Queue::new(EFFECTS_WAITING),
    }
}

/// Where an intent is kept, by its log position: the key's last twelve bytes, the same in
/// every queue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntentKey(Vec<u8>);

impl IntentKey {
    /// The key of the intent `index` of the record at `seq`.
    pub fn new(seq: u64, index: u32) -> IntentKey {
        IntentKey(log_position(seq, index).to_vec())
    }

    fn of(key: &[u8]) -> IntentKey {
        IntentKey(key[key.len().saturating_sub(SUFFIX)..].to_vec())
    }
}

impl Store {
    fn intents(&self, queue: Queue<Intent>, limit: usize) -> Result<Vec<(IntentKey, Intent)>> {
        Ok(queue.scan(&self.tree, limit)?.into_iter().map(|(key, intent)| (IntentKey::of(&key), intent)).collect())
    }

    /// Queued effect intents, in log order.
    pub fn effects(&self, limit: usize) -> Result<Vec<(IntentKey, Intent)>> {
        self.intents(queued(), limit)
    }

    /// Forgets a queued intent that has run.
    pub fn remove_effect(&self, key: &IntentKey) -> Result<()> {
        let queued = queued();
        queued.remove(&self.tree, &[queued.key(&key.0)])
    }

    /// Moves a queued intent to the intents waiting for a runner of its kind.
    pub fn park_effect(&self, key: &IntentKey, intent: &Intent) -> Result<()> {
        self.move_intent(key, &queued(), &waiting(Some(&intent.kind)))
    }

    /// Moves a queued intent to the intents in flight: its runner's task goes on after `run`.
    pub fn start_effect(&self, key: &IntentKey) -> Result<()> {
        self.move_intent(key, &queued(), &in_flight())
    }

    /// Forgets an intent in flight whose task reported its end.
    pub fn finish_effect(&self, key: &IntentKey) -> Result<()> {
        let in_flight = in_flight();
        in_flight.remove(&self.tree, &[in_flight.key(&key.0)])
    }

    /// Forgets a waiting intent.
    pub fn drop_waiting_effect(&self, key: &IntentKey, kind: &str) -> Result<()> {
        let waiting = waiting(Some(kind));
        waiting.remove(&self.tree, &[waiting.key(&key.0)])
    }

    /// Intents waiting for a runner, of every kind (in log order per kind).
    pub fn waiting_effects(&self) -> Result<Vec<(IntentKey, Intent)>> {
        self.intents(waiting(None), usize::MAX)
    }

    /// Intents in flight, in log order.
    pub fn effects_in_flight(&self) -> Result<Vec<(IntentKey, Intent)>> {
        self.intents(in_flight(), usize::MAX)
    }

    /// Queues again every intent in flight: their tasks ended with the process that ran them.
    pub fn requeue_in_flight(&self) -> Result<u64> {
        self.requeue_all(&in_flight())
    }

    /// Queues again every intent waiting for a runner of `kind`, in log order with the rest.
    pub fn requeue_waiting(&self, kind: &str) -> Result<u64> {
        self.requeue_all(&waiting(Some(kind)))
    }

    fn requeue_all(&self, from: &Queue<Intent>) -> Result<u64> {
        let keys = from.keys(&self.tree)?;
        for key in &keys {
            self.move_intent(&IntentKey::of(key), from, &queued())?;
        }
        Ok(keys.len() as u64)
    }

    /// Moves the intent at `key` from one queue to another in one batch; nothing when it is
    /// gone.
    fn move_intent(&self, key: &IntentKey, from: &Queue<Intent>, to: &Queue<Intent>) -> Result<()> {
        let from = from.key(&key.0);
        let Some(value) = self.tree.get(&from)? else { return Ok(()) };
        let mut batch = sled::Batch::default();
        batch.remove(from);
        batch.insert(to.key(&key.0), value);
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}
