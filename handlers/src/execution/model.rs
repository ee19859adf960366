//! What the execution projection stores, and under which keys.
//!
//! Keys: `x/<execution>` environments, `p/<execution>` the request as protobuf bytes (to render
//! its manifests again), `a/<execution>` the active set, `q/<arrival>` the wait queue in
//! arrival order (entry id, then stream), `n/queued` its length, `t/<expiry ms>\0<execution>`
//! TTL deadlines, `cfg/max_active` the cap and `cfg/runners` the trusted runners recorded in the
//! log.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where an environment is in its lifecycle (domain.md section 4), plus `queued` while it waits
/// for a slot. The order is the lifecycle's: facts only ever move an environment forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvStatus {
    Queued,
    Requested,
    Provisioning,
    Ready,
    Running,
    Completed,
    Failed,
    Expired,
    Cleaned,
}

impl EnvStatus {
    pub const ALL: [EnvStatus; 9] = [
        EnvStatus::Queued,
        EnvStatus::Requested,
        EnvStatus::Provisioning,
        EnvStatus::Ready,
        EnvStatus::Running,
        EnvStatus::Completed,
        EnvStatus::Failed,
        EnvStatus::Expired,
        EnvStatus::Cleaned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EnvStatus::Queued => "queued",
            EnvStatus::Requested => "requested",
            EnvStatus::Provisioning => "provisioning",
            EnvStatus::Ready => "ready",
            EnvStatus::Running => "running",
            EnvStatus::Completed => "completed",
            EnvStatus::Failed => "failed",
            EnvStatus::Expired => "expired",
            EnvStatus::Cleaned => "cleaned",
        }
    }

    pub fn parse(text: &str) -> Option<EnvStatus> {
        EnvStatus::ALL.into_iter().find(|s| s.name() == text)
    }

    /// Whether the environment holds one of the active slots.
    pub fn is_active(self) -> bool {
        matches!(self, EnvStatus::Requested | EnvStatus::Provisioning | EnvStatus::Ready | EnvStatus::Running)
    }

    /// Completed and failed are both "finished"; a fact of one never overrides the other.
    fn rank(self) -> u8 {
        match self {
            EnvStatus::Failed => EnvStatus::Completed as u8,
            other => other as u8,
        }
    }

    /// Whether a fact saying `next` moves an environment that is `self`.
    pub fn moves_to(self, next: EnvStatus) -> bool {
        next.rank() > self.rank()
    }
}

/// One ephemeral test environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub execution_id: String,
    pub namespace: String,
    pub status: EnvStatus,
    pub app_image: String,
    pub commands: Vec<String>,
    /// The lifetime from admission: `test_config.ttl_minutes` (default 60), or
    /// `test_config.ttl_seconds` when a producer gives that finer one.
    pub ttl_ms: u64,
    pub timeout_minutes: u32,
    /// The request's entry, and its log time.
    pub stream: String,
    pub entry_id: String,
    pub requested_ms: u64,
    /// When it got a slot, and when its TTL runs out (counted from then).
    pub admitted_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    /// Set by `cleanup_environment`: the namespace is being deleted.
    pub cleanup_requested: bool,
    /// Per-job results from the last `execution_result` fact.
    pub results: Vec<Value>,
    /// The last `execution_logs` fact: its size, and when.
    pub logs_bytes: Option<u64>,
    pub logs_ms: Option<u64>,
    /// Why it failed, when the engine decided it.
    pub reason: Option<String>,
    /// What the engine did not take from the request (an unknown database type).
    #[serde(default)]
    pub warning: Option<String>,
    /// Every state it passed through, with the log time.
    pub transitions: Vec<(EnvStatus, u64)>,
}

impl Environment {
    pub fn enter(&mut self, status: EnvStatus, ms: u64) {
        self.status = status;
        self.transitions.push((status, ms));
    }
}

use crate::keys::join;

pub fn env_key(id: &str) -> Vec<u8> {
    join("x/", &[id])
}

pub fn request_key(id: &str) -> Vec<u8> {
    join("p/", &[id])
}

pub const ACTIVE_PREFIX: &[u8] = b"a/";

pub fn active_key(id: &str) -> Vec<u8> {
    join("a/", &[id])
}

pub const QUEUE_PREFIX: &[u8] = b"q/";

pub fn queue_key(arrival: &str) -> Vec<u8> {
    join("q/", &[arrival])
}

pub const EXPIRY_PREFIX: &[u8] = b"t/";

pub fn expiry_key(ms: u64, id: &str) -> Vec<u8> {
    join("t/", &[&format!("{ms:020}"), id])
}

/// The deadline and execution id in an expiry key.
pub fn expiry_of(key: &[u8]) -> Option<(u64, String)> {
    let ms = std::str::from_utf8(key.get(2..22)?).ok()?.parse().ok()?;
    Some((ms, String::from_utf8(key.get(23..)?.to_vec()).ok()?))
}

pub const CAP_KEY: &[u8] = b"cfg/max_active";

/// The trusted runner identities recorded in the log (a JSON list).
pub const RUNNERS_KEY: &[u8] = b"cfg/runners";

/// How many environments wait in the queue.
pub const QUEUED_KEY: &[u8] = b"n/queued";

pub use maestro_schemas::ids::arrival;
