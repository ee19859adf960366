//! One connection type for both deployments: a multiplexed connection to one server, or a
//! cluster connection that routes each command to the master of its key's slot and follows
//! MOVED/ASK and failovers. Both speak `redis::aio::ConnectionLike`, so commands, scripts and
//! pipelines are written once; what differs is only what a cluster refuses (a command or
//! script whose keys span slots), which the callers split by [`slot_groups`].

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_cluster() { "Conn::Cluster" } else { "Conn::Single" })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// `WAIT replicas timeout_ms` on the master that holds `key`'s slot: how many of its
    /// replicas acknowledged every write made on it so far. On one server, `replicas` itself
    /// (nothing to wait for: its durability is its own `appendfsync`).
    pub async fn wait_replicas(&mut self, key: &str, replicas: u32, timeout_ms: u64) -> RedisResult<u32> {
        let Conn::Cluster(conn) = self else { return Ok(replicas) };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        let route =
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)));
        let value = conn.route_command(cmd, route).await?;
        Ok(redis::from_redis_value(value)?)
    }
}

/// The hash tag that puts a key in `key`'s slot: `key`'s own `{tag}` when it has one (Redis
/// hashes only that part), else the whole key in braces. `None` for a key with a `}` but no
/// tag: no tag can reproduce its hash (the engine refuses such keys on a cluster).
pub fn slot_tag(key: &str) -> Option<String> {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return Some(key[open..open + len + 2].to_string());
    }
    (!key.contains('}')).then(|| format!("{{{key}}}"))
}

/// `keys` in groups that share a hash slot, in the order each group's first key comes: one
/// group of them all on one server.
pub fn slot_groups(keys: &[String], cluster: bool) -> Vec<Vec<String>> {
    if !cluster {
        return vec![keys.to_vec()];
    }
    let mut groups: Vec<(Slot, Vec<String>)> = Vec::new();
    for key in keys {
        let slot = Slot::for_key(key.as_bytes());
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(key.clone()),
            None => groups.push((slot, vec![key.clone()])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_shares_the_slot_of_the_key_it_comes_from() {
        for key in ["maestro:streams:templates:results", "{p3}:maestro:streams:x", "x{y}z{w}", "a{b"] {
            let guard = format!("maestro:engine:g:published:{}", slot_tag(key).unwrap());
            assert_eq!(Slot::for_key(guard.as_bytes()), Slot::for_key(key.as_bytes()), "{key} vs {guard}");
        }
    }

    #[test]
    fn keys_are_grouped_by_slot_only_on_a_cluster() {
        let keys: Vec<String> = ["{a}1", "b", "{a}2", "c"].map(String::from).to_vec();
        assert_eq!(slot_groups(&keys, false), vec![keys.clone()]);
        let groups = slot_groups(&keys, true);
        assert_eq!(groups[0], ["{a}1", "{a}2"]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 4);
    }

    #[test]
    fn a_key_whose_hash_no_tag_reproduces_has_none() {
        assert_eq!(slot_tag("a{}b"), None);
        assert_eq!(slot_tag("a}b"), None);
    }
}
