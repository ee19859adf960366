//! What the engine tells the outside world about itself: readiness flags and counters shared
//! between the batch loop, the HTTP server and in-process callers such as `demo`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    pub redis_up: AtomicBool,
    pub log_open: AtomicBool,
    pub storage_ok: AtomicBool,
    /// The last read found nothing new and nothing is waiting to be published.
    pub caught_up: AtomicBool,
    pub head_seq: AtomicU64,
    pub entries_read: AtomicU64,
    pub records_appended: AtomicU64,
    pub entries_acked: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Valid entries a handler had nothing to do for (per stream and reason in `/metrics`).
    pub ignored: AtomicU64,
    pub lost: AtomicU64,
    pub batches: AtomicU64,
    pub last_error: Mutex<String>,
    /// Durations of the most recent batches, in microseconds (at most [`LATENCY_SAMPLES`]).
    pub batch_latency: Mutex<std::collections::VecDeque<u64>>,
    /// The store and the projections' names while a session has the log open and the
    /// projections caught up: what `/state/<projection>` reads.
    pub store: Mutex<Option<(crate::store::Store, Vec<&'static str>)>>,
    /// Where the HTTP server listens, if it does: the runtime writes it into the data dir, so
    /// that the replay tools, kept out by the lock, can ask the engine instead.
    pub http: Mutex<Option<std::net::SocketAddr>>,
    /// Effect intents waiting for a runner of their kind, per kind (none listed: none wait).
    pub effects_waiting: Mutex<BTreeMap<String, u64>>,
    /// Effect intents whose runner's task is still going.
    pub effects_in_flight: AtomicU64,
    /// Per stream key: whether it is read, why not, and group skips found on it.
    pub streams: Mutex<BTreeMap<String, StreamState>>,
    /// The member's lease, when the engine runs as a member (the router's, in a router).
    pub lease: Mutex<Option<LeaseState>>,
    /// A router's counts per source stream and partition.
    pub routed: Mutex<BTreeMap<String, BTreeMap<u32, RouteCounts>>>,
}

/// What a router did with one source stream's entries for one partition, in `/status`.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RouteCounts {
    /// Entries copied into the partition's key.
    pub routed: u64,
    /// Entries the partition's key already held (copied before a crash, acknowledged after).
    pub already_routed: u64,
    /// Entries not routed because the partition held a later entry of their stream (only a
    /// former router acting past its lease causes it); each is logged as an error.
    pub out_of_order: u64,
}

/// A member's lease in `/status`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LeaseState {
    /// `I/N`.
    pub member: String,
    pub key: String,
    /// Whether this engine holds it (and so reads and writes).
    pub held: bool,
    /// The holder's token (host, pid, start time): ours while held, the other's while waiting,
    /// empty when unknown.
    pub holder: String,
    /// When it was taken, or when this engine began waiting (ms since the Unix epoch).
    pub since_ms: u64,
}

/// One stream's state in `/status`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StreamState {
    /// Read with the others; false while an error of its own (wrong type, no permission, a
    /// group that cannot be created) stops it.
    pub up: bool,
    /// The error that stopped it (empty while it is up).
    pub error: String,
    /// Times an error of its own stopped it.
    pub errors: u64,
    /// Entries the consumer group's position would have skipped (see `runtime/streams.rs`).
    pub group_skipped: u64,
}

/// How many batch durations [`Health`] keeps.
pub const LATENCY_SAMPLES: usize = 100_000;

/// A point-in-time copy of [`Health`], as `/status` serves it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub ready: bool,
    pub redis_up: bool,
    pub log_open: bool,
    pub storage_ok: bool,
    pub caught_up: bool,
    pub head_seq: u64,
    pub entries_read: u64,
    pub records_appended: u64,
    pub entries_acked: u64,
    pub dead_lettered: u64,
    pub ignored: u64,
    pub lost: u64,
    pub batches: u64,
    pub last_error: String,
    pub effects_waiting: BTreeMap<String, u64>,
    pub effects_in_flight: u64,
    pub streams: BTreeMap<String, StreamState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseState>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub routed: BTreeMap<String, BTreeMap<u32, RouteCounts>>,
}

impl Health {
    pub fn snapshot(&self) -> HealthSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let flag = |a: &AtomicBool| a.load(Ordering::Relaxed);
        let mut snap = HealthSnapshot {
            redis_up: flag(&self.redis_up),
            log_open: flag(&self.log_open),
            storage_ok: flag(&self.storage_ok),
            caught_up: flag(&self.caught_up),
            head_seq: get(&self.head_seq),
            entries_read: get(&self.entries_read),
            records_appended: get(&self.records_appended),
            entries_acked: get(&self.entries_acked),
            dead_lettered: get(&self.dead_lettered),
            ignored: get(&self.ignored),
            lost: get(&self.lost),
            batches: get(&self.batches),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
            effects_waiting: self.effects_waiting.lock().map(|w| w.clone()).unwrap_or_default(),
            effects_in_flight: get(&self.effects_in_flight),
            streams: self.streams.lock().map(|s| s.clone()).unwrap_or_default(),
            lease: self.lease.lock().map(|l| l.clone()).unwrap_or_default(),
            routed: self.routed.lock().map(|r| r.clone()).unwrap_or_default(),
            ready: false,
        };
        snap.ready = snap.redis_up && snap.log_open && snap.storage_ok && snap.caught_up;
        snap
    }

    pub fn set(flag: &AtomicBool, value: bool) {
        flag.store(value, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes one batch's duration.
    pub fn batch_took(&self, micros: u64) {
        if let Ok(mut samples) = self.batch_latency.lock() {
            if samples.len() == LATENCY_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(micros);
        }
    }

    /// The kept batch durations, oldest first.
    pub fn batch_micros(&self) -> Vec<u64> {
        self.batch_latency.lock().map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Changes one stream's entry in `/status`.
    pub fn stream(&self, key: &str, change: impl FnOnce(&mut StreamState)) {
        if let Ok(mut streams) = self.streams.lock() {
            change(streams.entry(key.to_string()).or_default());
        }
    }

    /// Counts routing decisions of entries of `stream` into `partition`.
    /// `[routed, already routed, out of order]`.
    pub fn route(&self, stream: &str, partition: u32, [routed, already, out_of_order]: [u64; 3]) {
        if let Ok(mut counts) = self.routed.lock() {
            let counts = counts.entry(stream.to_string()).or_default().entry(partition).or_default();
            counts.routed += routed;
            counts.already_routed += already;
            counts.out_of_order += out_of_order;
        }
    }

    pub fn error(&self, text: impl Into<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = text.into();
        }
    }

    /// Notes the effect intents waiting for a runner, per kind, and those in flight.
    pub fn effects<'a>(&self, waiting: impl Iterator<Item = (&'a String, &'a u64)>, in_flight: u64) {
        if let Ok(mut kept) = self.effects_waiting.lock() {
            *kept = waiting.map(|(kind, n)| (kind.clone(), *n)).collect();
        }
        self.effects_in_flight.store(in_flight, Ordering::Relaxed);
    }

    /// The error was recovered from: `last_error` names only a problem that still holds.
    pub fn clear_error(&self) {
        self.error(String::new());
    }
}
