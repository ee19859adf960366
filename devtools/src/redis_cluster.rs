//! A private Redis Cluster on loopback: `redis-server --cluster-enabled yes` processes on free
//! ports, each in a temporary directory of its own (see [`RedisServer`]), joined with
//! `redis-cli --cluster create ... --cluster-replicas R --cluster-yes`, and ready once every
//! node reports `cluster_state:ok` and every replica is linked to its master. Every process is
//! killed when the cluster is dropped. A missing tool is an error that says how to install it.

use crate::redis_server::{RedisOptions, RedisServer, ServerError};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the nodes wait for a silent master before its replica takes over (milliseconds):
/// short, so that a test's failover takes seconds, not the default 15 s.
pub const NODE_TIMEOUT_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("redis-cli was not found on PATH; install it with: sudo apt-get install -y redis-tools")]
    MissingCli,
    #[error("redis-cli --cluster create failed: {0}")]
    Create(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the cluster was not ready within {0:?}: {1}")]
    NotReady(Duration, String),
}

/// A running cluster; its nodes are killed when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

fn info(addr: &str, section: &str) -> Option<String> {
    let mut conn = redis::Client::open(format!("redis://{addr}")).ok()?.get_connection().ok()?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    match section {
        "cluster" => redis::cmd("CLUSTER").arg("INFO").query(&mut conn).ok(),
        other => redis::cmd("INFO").arg(other).query(&mut conn).ok(),
    }
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and joins them.
    pub fn start(masters: usize, replicas: usize) -> Result<RedisCluster, ClusterError> {
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let extra = [
                ("cluster-enabled", "yes".to_string()),
                ("cluster-config-file", "nodes.conf".to_string()),
                ("cluster-node-timeout", NODE_TIMEOUT_MS.to_string()),
            ];
            let extra = extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            nodes.push(RedisServer::start(RedisOptions { durable: false, extra })?);
        }
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(cluster.nodes.iter().map(RedisServer::addr));
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = create.output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClusterError::MissingCli,
            _ => ClusterError::Create(e.to_string()),
        })?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            return Err(ClusterError::Create(said));
        }
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Waits until every running node says `cluster_state:ok`, every replica's link to its
    /// master is up, and the masters have the expected replicas.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.not_ready() {
                None => return Ok(()),
                Some(why) if Instant::now() >= deadline => return Err(ClusterError::NotReady(timeout, why)),
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Why the cluster is not ready yet, or `None` when it is.
    fn not_ready(&self) -> Option<String> {
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let addr = node.addr();
            let cluster = info(&addr, "cluster").unwrap_or_default();
            if !cluster.contains("cluster_state:ok") {
                return Some(format!("{addr}: {}", cluster.lines().next().unwrap_or("no answer")));
            }
            let replication = info(&addr, "replication").unwrap_or_default();
            if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
                return Some(format!("{addr}: replica not linked to its master"));
            }
        }
        None
    }

    /// Every node's `redis://` URL (seed nodes for a client).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A cluster client over every node.
    pub fn client(&self) -> Result<redis::cluster::ClusterClient, ClusterError> {
        Ok(redis::cluster::ClusterClient::new(self.urls())?)
    }

    /// The index (in [`RedisCluster::nodes`]) of the master that serves `key` now, as the
    /// first running node that answers `CLUSTER KEYSLOT` and `CLUSTER NODES` sees it.
    pub fn master_of(&self, key: &str) -> Result<usize, ClusterError> {
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let Ok(mut conn) = redis::Client::open(node.url())?.get_connection() else { continue };
            let Ok(slot) = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query::<i64>(&mut conn) else { continue };
            let Ok(table) = redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut conn) else { continue };
            for line in table.lines() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let is_master = parts.get(2).is_some_and(|flags| flags.contains("master") && !flags.contains("fail"));
                let serves = parts.iter().skip(8).any(|range| match range.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<i64>().is_ok_and(|a| a <= slot) && b.parse::<i64>().is_ok_and(|b| slot <= b)
                    }
                    None => range.parse::<i64>().is_ok_and(|s| s == slot),
                });
                let port = parts.get(1).and_then(|a| a.split('@').next()).and_then(|a| a.rsplit(':').next());
                if is_master
                    && serves
                    && let Some(index) = self.nodes.iter().position(|n| Some(n.port().to_string().as_str()) == port)
                {
                    return Ok(index);
                }
            }
        }
        Err(ClusterError::NotReady(Duration::ZERO, format!("no running node names the master of {key}")))
    }

    /// The index of a replica of master `master`, as the first running node that answers
    /// `CLUSTER NODES` sees it.
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        let port = self.nodes.get(master)?.port().to_string();
        let port_of = |addr: &str| addr.split('@').next().and_then(|a| a.rsplit(':').next()).map(str::to_string);
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let Ok(mut conn) = redis::Client::open(node.url()).and_then(|c| c.get_connection()) else { continue };
            let Ok(table) = redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut conn) else { continue };
            let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
            let Some(id) = rows.iter().find(|r| r.get(1).and_then(|a| port_of(a)) == Some(port.clone())) else {
                continue;
            };
            let replica = rows.iter().find(|r| r.get(3) == id.first() && r.get(2).is_some_and(|f| f.contains("slave")));
            let replica_port = replica.and_then(|r| r.get(1)).and_then(|a| port_of(a));
            return self.nodes.iter().position(|n| Some(n.port().to_string()) == replica_port);
        }
        None
    }

    /// SIGKILLs node `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index) {
            node.kill();
        }
    }

    /// Starts node `index` again on its port and directory: its `nodes.conf` makes it rejoin
    /// (as a replica, when its slots moved to another master meanwhile).
    pub fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        if let Some(node) = self.nodes.get_mut(index) {
            node.restart()?;
        }
        Ok(())
    }

    /// Waits until a node other than `old` serves `key` as master, and the cluster is ready.
    pub fn wait_failover(&self, key: &str, old: usize, timeout: Duration) -> Result<usize, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(master) = self.master_of(key)
                && master != old
                && self.not_ready().is_none()
            {
                return Ok(master);
            }
            if Instant::now() >= deadline {
                let why = self.not_ready().unwrap_or_else(|| "the old master still serves the slot".into());
                return Err(ClusterError::NotReady(timeout, why));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
