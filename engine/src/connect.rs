//! The Redis client the engine connects with: one server (`redis://`, or TLS `rediss://` checked
//! against the configured certificate authorities), or a Redis Cluster reached through its seed
//! nodes (`cluster_nodes`). Only a server whose certificate chains to one of the configured
//! authorities is accepted; the CA file is read once, at start, and never logged.

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::source::Conn;
use redis::AsyncConnectionConfig;
use redis::cluster::{ClusterClient, ClusterConfig};
use std::time::Duration;

/// Where the engine's Redis is: one server, or a cluster (MOVED/ASK and failover followed by
/// redis-rs's cluster client).
#[derive(Clone, Debug)]
pub enum RedisClient {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl From<redis::Client> for RedisClient {
    fn from(client: redis::Client) -> RedisClient {
        RedisClient::Single(Box::new(client))
    }
}

impl RedisClient {
    /// Whether commands go to a Redis Cluster: then every script touches one slot only.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisClient::Cluster(_))
    }

    /// A new connection whose replies may take up to `response_timeout`.
    pub async fn connect(&self, response_timeout: Duration) -> Result<Conn> {
        let connection_timeout = Duration::from_secs(2);
        match self {
            RedisClient::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connection_timeout))
                    .set_response_timeout(Some(response_timeout));
                Ok(Conn::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            RedisClient::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(connection_timeout)
                    .set_response_timeout(response_timeout);
                Ok(Conn::Cluster(client.get_async_connection_with_config(config).await?))
            }
        }
    }
}

/// The root certificates of `config.redis_ca_file`, when it is set.
fn certificates(config: &EngineConfig, urls: &[&str]) -> Result<Option<redis::TlsCertificates>> {
    let Some(path) = &config.redis_ca_file else { return Ok(None) };
    if let Some(url) = urls.iter().find(|url| !url.starts_with("rediss://")) {
        return Err(EngineError::Config(format!(
            "redis_ca_file is set ({}) but {url} is not a rediss:// (TLS) URL",
            path.display()
        )));
    }
    let root_cert =
        std::fs::read(path).map_err(|e| EngineError::Config(format!("redis_ca_file {}: {e}", path.display())))?;
    Ok(Some(redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) }))
}

/// A client for `config.cluster_nodes` when any is set, else for `config.redis_url`, trusting
/// `config.redis_ca_file` when it is set.
pub fn client(config: &EngineConfig) -> Result<RedisClient> {
    if !config.cluster_nodes.is_empty() {
        let urls: Vec<&str> = config.cluster_nodes.iter().map(String::as_str).collect();
        let mut builder = ClusterClient::builder(urls.iter().copied());
        if let Some(certificates) = certificates(config, &urls)? {
            builder = builder.certs(certificates);
        }
        return Ok(RedisClient::Cluster(Box::new(builder.build()?)));
    }
    let url = config.redis_url.as_str();
    Ok(RedisClient::from(match certificates(config, &[url])? {
        None => redis::Client::open(url)?,
        Some(certificates) => redis::Client::build_with_tls(url, certificates)?,
    }))
}
