//! Engine settings. The binary fills them from defaults, `maestro.toml`, `MAESTRO_*` variables
//! and flags, in that order of precedence (lowest first).

use maestro_schemas::{Limits, StreamSet};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The most partitions a stream may have: each is a key per stream, read and leased apart.
pub const MAX_PARTITIONS: u32 = 1024;

/// The engine's settings. Unknown keys are refused by the binary's settings loader, which
/// reads these and the domains' settings from one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Redis to read from and publish to.
    pub redis_url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, repeatable): when any is set the
    /// engine works against the cluster and `redis_url` is not used. Reads, publishes and
    /// acknowledgements then stay within one hash slot per command (see `source.rs`).
    pub cluster_nodes: Vec<String>,
    /// On a cluster, replicas that must hold a publication before it counts as done (`WAIT`):
    /// a master killed before its replica copied an output would otherwise take the output
    /// with it, and the publish guard with it too, after the outbox entry was already let go.
    pub cluster_wait_replicas: u32,
    /// How long one such `WAIT` may take before the publication is retried (milliseconds).
    pub cluster_wait_ms: u64,
    /// PEM file of the certificate authorities trusted for a `rediss://` URL; without it the
    /// system's trust store is used.
    pub redis_ca_file: Option<PathBuf>,
    /// Where the log and projections live.
    pub data_dir: PathBuf,
    /// Consumer group name.
    pub group: String,
    /// Stream keys by role.
    pub streams: StreamSet,
    /// Size limits of one entry.
    pub limits: Limits,
    /// Entries per stream per read (the in-flight budget is this times the stream count).
    pub read_count: usize,
    /// The most bytes of entries one read brings (Redis stops delivering there; an entry over
    /// the size limit stays in Redis).
    pub max_batch_bytes: usize,
    /// The longest a read waits for new entries before the batch loop runs its idle work.
    pub block_ms: u64,
    /// How soon the reader asks Redis again after a read that brought nothing: reads are sized
    /// inside Redis to hold memory to `max_batch_bytes`, and a sized read cannot block. The wait
    /// doubles while reads stay empty, up to `poll_max_ms`: an idle engine asks about a hundred
    /// times a second, a busy one never waits long.
    pub poll_ms: u64,
    pub poll_max_ms: u64,
    /// Deliveries (a crash counts as one) after which an entry is parked as poison.
    pub max_deliveries: u32,
    /// Entries idle this long in another consumer's pending list are claimed.
    pub claim_min_idle_ms: u64,
    /// How often the claim janitor runs.
    pub claim_interval_ms: u64,
    /// How often consumer-group gauges (pending, lag) are refreshed.
    pub info_interval_ms: u64,
    /// The log's sled page cache; sled's default grows past 600 MiB on large logs.
    pub cache_bytes: u64,
    /// The projection store's sled page cache (its own database, `store/`).
    pub store_cache_bytes: u64,
    /// Projection state hashes are recorded at every multiple of this seq.
    pub checkpoint_every: u64,
    /// Approximate cap of each dead-letter stream.
    pub dead_letter_maxlen: u64,
    /// A file outside the data dir where the engine keeps `<seq> <hash>` of the log's head, for
    /// `maestro verify --anchor-file` to catch truncation or a rewritten chain.
    pub anchor_file: Option<PathBuf>,
    /// Whether the head is also kept in Redis, at `maestro:engine:<group>:anchor:<consumer>`.
    pub anchor_redis: bool,
    /// How often the external anchors are written (and at every clean stop).
    pub anchor_interval_ms: u64,
    /// Start on a log that is shorter than, or disagrees with, an anchor (recorded in the log).
    /// Only the `run --accept-truncated-log` flag sets it: a settings file or variable that
    /// kept it on would accept every later loss without anyone choosing to.
    #[serde(skip)]
    pub accept_truncated_log: bool,
    /// How often the running engine removes value files nothing refers to (also at start).
    pub value_sweep_interval_ms: u64,
    /// How often a clock record with the Redis server's time is appended to the log, so that
    /// time-outs and expiries are decided on logged time; 0 appends none.
    pub clock_interval_ms: u64,
    /// What to do when a stream's consumer group stands past entries this log never recorded
    /// (someone created it at `$` or moved it with `XGROUP SETID`): by default the engine moves
    /// it back to the log's cursor and reads them; `true` leaves it there, the skip logged and
    /// counted.
    pub accept_group_skip: bool,
    /// Records per sealed segment of the log: complete ranges this long move from sled into
    /// immutable segment files between batches (see `segments/`).
    pub segment_records: u64,
    /// `I/N`: run as engine I of N members, writing only while holding member I's lease in
    /// Redis (see `lease.rs`); unset, the engine writes whenever it runs.
    pub member: Option<String>,
    /// How long a member's lease lasts unless renewed (renewed every quarter of it; writes
    /// stop a quarter of it before it could expire). A dead holder is replaced after this.
    pub lease_ttl_ms: u64,
    /// Partitions of each stream (`maestro_schemas::partition`): 1 keeps today's keys. The
    /// router (`maestro route`) moves entries from the unpartitioned keys into this many.
    pub partitions: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_ca_file: None,
            cluster_nodes: Vec::new(),
            cluster_wait_replicas: 1,
            cluster_wait_ms: 2_000,
            data_dir: PathBuf::from("./maestro-data"),
            group: "maestro-engine".into(),
            streams: StreamSet::default(),
            limits: Limits::default(),
            read_count: 100,
            max_batch_bytes: 16 * 1024 * 1024,
            block_ms: 1000,
            poll_ms: 1,
            poll_max_ms: 10,
            max_deliveries: 5,
            claim_min_idle_ms: 30_000,
            claim_interval_ms: 5_000,
            info_interval_ms: 5_000,
            cache_bytes: 64 * 1024 * 1024,
            store_cache_bytes: crate::datadir::DEFAULT_STORE_CACHE_BYTES,
            checkpoint_every: 10_000,
            dead_letter_maxlen: 100_000,
            anchor_file: None,
            anchor_redis: true,
            anchor_interval_ms: 10_000,
            accept_truncated_log: false,
            value_sweep_interval_ms: 600_000,
            clock_interval_ms: 10_000,
            accept_group_skip: false,
            segment_records: crate::segments::DEFAULT_SEGMENT_RECORDS,
            member: None,
            lease_ttl_ms: 10_000,
            partitions: 1,
        }
    }
}

impl EngineConfig {
    /// The Redis key of a consumer's external anchor.
    pub fn anchor_key(&self, consumer: &str) -> String {
        format!("maestro:engine:{}:anchor:{consumer}", self.group)
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(key) = self.streams.duplicate_key() {
            return Err(format!("streams: key {key:?} is configured for two roles"));
        }
        if !self.cluster_nodes.is_empty()
            && let Some((_, key)) =
                self.streams.all().into_iter().find(|(_, key)| crate::source::slot_tag(key).is_none())
        {
            return Err(format!(
                "streams: key {key:?} has a `}}` but no hash tag: on a cluster no other key can share its slot"
            ));
        }
        if self.read_count == 0 {
            return Err("read_count: must be at least 1".into());
        }
        if self.group.is_empty() {
            return Err("group: must not be empty".into());
        }
        if self.segment_records == 0 {
            return Err("segment_records: must be at least 1".into());
        }
        if let Some(member) = &self.member {
            crate::lease::Member::parse(member)?;
        }
        if self.lease_ttl_ms < 100 {
            return Err("lease_ttl_ms: must be at least 100".into());
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(format!("partitions: must be 1 to {MAX_PARTITIONS}"));
        }
        if self.max_deliveries == 0 {
            return Err("max_deliveries: must be at least 1".into());
        }
        Ok(())
    }
}
