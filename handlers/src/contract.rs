//! The handler contract: state and event in; state changes, outputs and effect intents out.

use maestro_schemas::{Record, TypedEvent};
use std::collections::BTreeMap;

/// One log record, as a handler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// The record as stored (raw fields, status, entry id and time).
    pub record: &'a Record,
    /// What an accepted entry means, decoded once by the engine; `None` for records that are
    /// not accepted input (rejected, duplicate, own output, clock, quarantine).
    pub typed: Option<&'a TypedEvent>,
}

impl Event<'_> {
    /// The record's position in the log.
    pub fn seq(&self) -> u64 {
        self.record.seq
    }
}

/// Read access to a handler's own projection, as of just before the event.
pub trait StateView {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// The first `limit` (key, value) pairs whose key starts with `prefix`, in key order: a
    /// queue's head without reading the whole queue.
    fn scan_limit(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// Every (key, value) whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan_limit(prefix, usize::MAX)
    }
    /// The first (key, value) under `prefix`.
    fn first(&self, prefix: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        self.scan_limit(prefix, 1).into_iter().next()
    }
}

/// Merges a base scan with writes laid over it (`None` deletes), keeping the first `limit`.
/// `base` must hold the base's first `limit` + (deletes under the prefix) pairs, so that the
/// deleted ones cannot push a live key out.
pub fn merge_scan<'w>(
    base: Vec<(Vec<u8>, Vec<u8>)>,
    writes: impl Iterator<Item = (&'w Vec<u8>, &'w Option<Vec<u8>>)>,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
    for (key, value) in writes {
        match value {
            Some(value) => merged.insert(key.clone(), value.clone()),
            None => merged.remove(key),
        };
    }
    merged.into_iter().take(limit).collect()
}

/// A map is a state view: handy for tests and for folding a log in memory.
impl StateView for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }

    fn scan_limit(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One change to a projection's key/value state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// An entry to publish on a stream. The engine adds the `origin` and `output_id` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stream: String,
    pub fields: Vec<(String, String)>,
    /// When set (Unix milliseconds, a request's entry time), the engine replaces the first
    /// [`ELAPSED_MS`] in the fields with the milliseconds from then to the moment it publishes
    /// the entry: the old services' `duration_ms`, which no pure function can know. What was
    /// published is read back and logged like every entry, so replays see the same figure.
    pub elapsed_from_ms: Option<u64>,
}

/// The placeholder of an output's elapsed milliseconds (see [`Output::elapsed_from_ms`]). A
/// JSON encoder escapes U+0001 inside strings, so the raw byte can only be this marker.
pub const ELAPSED_MS: &str = "\u{1}elapsed_ms\u{1}";

impl Output {
    pub fn new(stream: impl Into<String>, fields: Vec<(String, String)>) -> Output {
        Output { stream: stream.into(), fields, elapsed_from_ms: None }
    }
}

/// A side effect for the engine to run after the log append (a git commit, a Kubernetes apply).
/// `id` is deterministic, so that running an intent twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Intent {
    pub kind: String,
    pub id: String,
    pub payload: Vec<u8>,
}

/// What a handler decided for one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub changes: Vec<Change>,
    pub outputs: Vec<Output>,
    pub intents: Vec<Intent>,
    /// A valid entry that refers to something this projection does not know (a fact for an
    /// unknown execution, an outcome for an unknown repair): the reason, a short snake_case
    /// code. The engine counts it per stream and reason; it is never a dead letter, which is
    /// for entries the engine cannot process.
    pub ignored: Option<String>,
}

impl Decision {
    /// Nothing to do for a valid entry, for `reason`.
    pub fn ignored(reason: impl Into<String>) -> Decision {
        Decision { ignored: Some(reason.into()), ..Decision::default() }
    }
}

/// A handler's refusal to take an event. The engine sends the event to the dead-letter stream
/// with this reason; the handler's state stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("{0}")]
    Invalid(String),
}

/// A pure function from (state, event) to a decision, owning one projection.
pub trait Handler: Send + Sync {
    /// The projection's name: a stable key prefix in the state store and a CLI name.
    fn name(&self) -> &'static str;
    /// Decides what one event means for this projection.
    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> Result<Decision, HandlerError>;
    /// Whether the handler also sees the engine's own outputs read back from the streams.
    /// Off by default: an output is never new input, or a handler could answer itself forever.
    fn sees_own_outputs(&self) -> bool {
        false
    }
}

/// Applies a decision's changes to an in-memory state, as the engine's store does on disk.
pub fn apply_changes(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, changes: &[Change]) {
    for change in changes {
        match change {
            Change::Put { key, value } => {
                state.insert(key.clone(), value.clone());
            }
            Change::Delete { key } => {
                state.remove(key);
            }
        }
    }
}

/// A state view with the writes of the event being handled laid over it, for handlers that
/// read back what they changed earlier in the same event (a repair finished, then the next one
/// started). [`Overlay::into_changes`] gives the net changes in key order.
pub struct Overlay<'a> {
    base: &'a dyn StateView,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl std::fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay").field("writes", &self.writes.len()).finish_non_exhaustive()
    }
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn StateView) -> Overlay<'a> {
        Overlay { base, writes: BTreeMap::new() }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    pub fn into_changes(self) -> Vec<Change> {
        self.writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => Change::Put { key, value },
                None => Change::Delete { key },
            })
            .collect()
    }
}

impl StateView for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(written) => written.clone(),
            None => self.base.get(key),
        }
    }

    fn scan_limit(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let under = || self.writes.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix));
        let deletes = under().filter(|(_, v)| v.is_none()).count();
        merge_scan(self.base.scan_limit(prefix, limit.saturating_add(deletes)), under(), limit)
    }
}
