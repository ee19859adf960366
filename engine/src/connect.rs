//! The Redis client the engine connects with: plain `redis://`, or TLS (`rediss://`) checked
//! against the configured certificate authorities. Only a server whose certificate chains to
//! one of them is accepted; the CA file is read once, at start, and never logged.

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};

/// A client for `config.redis_url`, trusting `config.redis_ca_file` when it is set.
pub fn client(config: &EngineConfig) -> Result<redis::Client> {
    let Some(path) = &config.redis_ca_file else {
        return Ok(redis::Client::open(config.redis_url.as_str())?);
    };
    if !config.redis_url.starts_with("rediss://") {
        return Err(EngineError::Config(format!(
            "redis_ca_file is set ({}) but redis_url is not a rediss:// (TLS) URL",
            path.display()
        )));
    }
    let root_cert =
        std::fs::read(path).map_err(|e| EngineError::Config(format!("redis_ca_file {}: {e}", path.display())))?;
    let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
    Ok(redis::Client::build_with_tls(config.redis_url.as_str(), certificates)?)
}
