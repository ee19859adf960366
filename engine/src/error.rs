//! The engine's one error type.

use maestro_schemas::RecordError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("data dir {0} is locked by another process (is an engine running on it? stop it, or point at a copy)")]
    Locked(PathBuf),
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("log storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("log storage sync: {0}")]
    Sync(std::io::Error),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("log damaged: {0}")]
    Damaged(String),
    #[error("state store: {0}")]
    State(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis reply: {0}")]
    Reply(String),
    #[error("config: {0}")]
    Config(String),
    #[error("member's lease lost: {0}")]
    LeaseLost(String),
    #[error("http: {0}")]
    Http(std::io::Error),
}

impl EngineError {
    /// True when the error is Redis saying it no longer has the consumer group (it lost its
    /// data, or someone destroyed the group): the engine recreates it and carries on.
    pub fn is_no_group(&self) -> bool {
        matches!(self, EngineError::Redis(e) if e.code() == Some("NOGROUP"))
    }

    /// True when Redis refused a command for a reason of one key's own: it holds another type
    /// (`WRONGTYPE`) or the user may not touch it (`NOPERM`, an ACL key pattern). Such an
    /// error stops that stream only; every other error is about the connection or the server
    /// (OOM, MISCONF, READONLY, LOADING, ...) and stops them all.
    pub fn belongs_to_stream(&self) -> bool {
        matches!(self, EngineError::Redis(e) if matches!(e.code(), Some("WRONGTYPE" | "NOPERM")))
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The message of a caught panic (its payload is a `&str` or a `String` in practice).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into())
}
