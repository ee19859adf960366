//! One connection's worth of routing: create the router's group, claim what a dead holder left
//! pending, then read, copy into partitions and acknowledge, batch after batch.

use super::{Routing, router_group};
use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::connect::RedisClient;
use crate::error::{EngineError, Result};
use crate::lease::Fence;
use crate::runtime::{Shutdown, stopping};
use crate::source::{Conn, RawEntry, parse_entry_list, parse_read_reply, slot_groups};
use crate::status::Health;
use maestro_schemas::EntryId;
use maestro_schemas::partition::partition_key;
use redis::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// What Redis says to an `XADD` whose explicit id is not above the stream's last id.
const ALREADY_THERE: &str = "equal or smaller than the target stream top item";

/// How long the router waits after a read found nothing new.
const IDLE: Duration = Duration::from_millis(20);

/// Whether `error` is Redis refusing a copy because the partition already holds the entry (or
/// a later one of the same stream, which is only ever copied after it).
fn already_there(error: &redis::RedisError) -> bool {
    error.detail().is_some_and(|detail| detail.contains(ALREADY_THERE))
}

pub(super) struct Copier<'a> {
    config: &'a EngineConfig,
    routing: &'a Routing,
    status: &'a Arc<Health>,
    fence: &'a Fence,
    conn: Conn,
    group: String,
    consumer: String,
}

/// What a copy found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copied {
    /// Copied now.
    Now,
    /// The partition held it already: copied before a crash, not acknowledged.
    Before,
    /// Refused, and not there: a later entry of its stream is in the partition.
    OutOfOrder,
}

/// One batch's outcome per (stream, partition): (copied, already there, out of order).
type Tally = BTreeMap<(String, u32), (u64, u64, u64)>;

impl<'a> Copier<'a> {
    pub(super) async fn connect(
        config: &'a EngineConfig,
        routing: &'a Routing,
        status: &'a Arc<Health>,
        fence: &'a Fence,
        consumer: &str,
        client: &RedisClient,
    ) -> Result<Copier<'a>> {
        let conn = client.connect(Duration::from_secs(5)).await?;
        let group = router_group(&config.group);
        Ok(Copier { config, routing, status, fence, conn, group, consumer: consumer.to_string() })
    }

    /// Creates the group, claims the pending entries, then routes new ones until `shutdown`
    /// (after the batch in hand is acknowledged) or an error.
    pub(super) async fn follow(&mut self, shutdown: &mut Shutdown, backoff: &mut Backoff) -> Result<()> {
        self.fence.check()?;
        for stream in &self.routing.streams {
            self.ensure_group(stream).await?;
        }
        Health::set(&self.status.redis_up, true);
        tracing::info!(group = self.group, consumer = self.consumer, "router connected to redis");
        self.claim_all(0).await?;
        backoff.reset();
        let claim_every = Duration::from_millis(self.config.claim_interval_ms.max(1));
        let mut claimed_at = tokio::time::Instant::now();
        self.status.clear_error();
        let groups = slot_groups(&self.routing.streams, self.conn.is_cluster());
        loop {
            if stopping(shutdown) {
                return Ok(());
            }
            if claimed_at.elapsed() >= claim_every {
                // What a former holder read after the takeover (paused past its lease between
                // a check and a read) would otherwise stay pending in its consumer.
                self.claim_all(self.config.claim_min_idle_ms).await?;
                claimed_at = tokio::time::Instant::now();
            }
            let mut read = 0;
            for keys in &groups {
                self.fence.check()?;
                let entries = self.read_new(keys).await?;
                read += entries.len();
                self.route_batch(entries).await?;
            }
            Health::set(&self.status.caught_up, read == 0);
            if read == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = shutdown.changed() => {}
                    lost = self.fence.lapsed() => return Err(lost),
                }
            }
        }
    }

    async fn ensure_group(&mut self, stream: &str) -> Result<()> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(stream).arg(&self.group).arg("0").arg("MKSTREAM");
        match cmd.query_async::<Value>(&mut self.conn).await {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn claim_all(&mut self, min_idle_ms: u64) -> Result<()> {
        for stream in self.routing.streams.clone() {
            self.claim_pending(&stream, min_idle_ms).await?;
        }
        Ok(())
    }

    /// Takes over the entries pending in the group idle at least `min_idle_ms` (at the start,
    /// 0: a dead holder's, or this process's before a reconnection), oldest first, and routes
    /// them: at the start all of them have lower ids than anything not yet delivered, so each
    /// stream is still routed in id order.
    async fn claim_pending(&mut self, stream: &str, min_idle_ms: u64) -> Result<()> {
        let mut start = "0-0".to_string();
        loop {
            self.fence.check()?;
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(stream).arg(&self.group).arg(&self.consumer).arg(min_idle_ms).arg(&start);
            cmd.arg("COUNT").arg(self.config.read_count);
            let reply: Value = cmd.query_async(&mut self.conn).await?;
            let (next, entries, deleted) = claim_reply(stream, reply)?;
            if !entries.is_empty() || !deleted.is_empty() {
                tracing::info!(
                    stream,
                    claimed = entries.len(),
                    deleted = deleted.len(),
                    "router claimed pending entries"
                );
            }
            for id in &deleted {
                tracing::warn!(stream, %id, "a pending entry was deleted from the stream before it was routed");
            }
            self.route_batch(entries).await?;
            if next == "0-0" {
                return Ok(());
            }
            start = next;
        }
    }

    async fn read_new(&mut self, keys: &[String]) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.group).arg(&self.consumer).arg("COUNT").arg(self.config.read_count);
        cmd.arg("STREAMS").arg(keys);
        for _ in keys {
            cmd.arg(">");
        }
        let reply: Value = cmd.query_async(&mut self.conn).await?;
        parse_read_reply(reply)
    }

    /// Copies each entry into its partition under its own id, in the order given (id order per
    /// stream), stopping at the first error; then acknowledges them all.
    async fn route_batch(&mut self, entries: Vec<RawEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let partitions = self.config.partitions;
        let mut acks: Vec<(String, EntryId)> = Vec::with_capacity(entries.len());
        let mut targets: BTreeSet<String> = BTreeSet::new();
        let mut tally = Tally::new();
        for entry in entries {
            let Some(fields) = &entry.fields else {
                tracing::warn!(stream = entry.stream, id = %entry.id, "an entry was deleted before it was routed");
                acks.push((entry.stream, entry.id));
                continue;
            };
            let partition = (self.routing.partition_of)(&entry.stream, entry.id, fields, partitions);
            let target = partition_key(&entry.stream, partition, partitions);
            self.fence.check()?;
            let copied = self.copy(&target, entry.id, fields).await?;
            tracing::debug!(stream = entry.stream, id = %entry.id, partition, target, ?copied, "routed");
            let counts = tally.entry((entry.stream.clone(), partition)).or_default();
            match copied {
                Copied::Now => counts.0 += 1,
                Copied::Before => counts.1 += 1,
                Copied::OutOfOrder => {
                    counts.2 += 1;
                    tracing::error!(
                        stream = entry.stream,
                        id = %entry.id,
                        target,
                        "not routed: its partition already holds a later entry of the stream (a former router acted past its lease); the entry stays in its stream"
                    );
                }
            }
            targets.insert(target);
            acks.push((entry.stream, entry.id));
        }
        self.wait_replicas(&targets).await?;
        crate::failpoint::crash_point("router-before-ack");
        self.fence.check()?;
        self.ack(&acks).await?;
        self.report(tally);
        Ok(())
    }

    /// `XADD target id fields...`, and what became of the entry.
    async fn copy(&mut self, target: &str, id: EntryId, fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Copied> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(target).arg(id.to_string());
        for (name, value) in fields {
            cmd.arg(name.as_slice()).arg(value.as_slice());
        }
        match cmd.query_async::<Value>(&mut self.conn).await {
            Ok(_) => Ok(Copied::Now),
            Err(error) if already_there(&error) => self.check_there(target, id).await,
            Err(error) => Err(error.into()),
        }
    }

    /// After a refusal: the entry is there (copied before a crash), or a later entry of its
    /// stream reached the partition first, which only a former holder acting past its lease
    /// can cause; the entry cannot be put in order behind it then, and is named, not copied.
    async fn check_there(&mut self, target: &str, id: EntryId) -> Result<Copied> {
        let id = id.to_string();
        let found: Value = redis::cmd("XRANGE").arg(target).arg(&id).arg(&id).query_async(&mut self.conn).await?;
        Ok(match found {
            Value::Array(entries) if !entries.is_empty() => Copied::Before,
            _ => Copied::OutOfOrder,
        })
    }

    /// On a cluster, a copy a master acknowledged and lost in a failover before its replica
    /// had it would be gone after the source entry is acknowledged: wait for the replicas of
    /// every partition written, as publishing does.
    async fn wait_replicas(&mut self, targets: &BTreeSet<String>) -> Result<()> {
        let (wanted, timeout) = (self.config.cluster_wait_replicas, self.config.cluster_wait_ms);
        for target in targets {
            let got = self.conn.wait_replicas(target, wanted, timeout).await?;
            if got < wanted {
                return Err(EngineError::Reply(format!(
                    "{got} of {wanted} replicas acknowledged the copies into {target} within {timeout} ms"
                )));
            }
        }
        Ok(())
    }

    async fn ack(&mut self, acks: &[(String, EntryId)]) -> Result<()> {
        let mut by_stream: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (stream, id) in acks {
            by_stream.entry(stream).or_default().push(id.to_string());
        }
        for (stream, ids) in by_stream {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(stream).arg(&self.group).arg(&ids);
            cmd.query_async::<Value>(&mut self.conn).await?;
        }
        Ok(())
    }

    fn report(&self, tally: Tally) {
        for ((stream, partition), (routed, already, out_of_order)) in tally {
            let label = partition.to_string();
            for (outcome, n) in [("routed", routed), ("already_routed", already), ("out_of_order", out_of_order)] {
                metrics::counter!("maestro_routed_total", "stream" => stream.clone(), "partition" => label.clone(), "outcome" => outcome)
                    .increment(n);
            }
            self.status.route(&stream, partition, [routed, already, out_of_order]);
            if already > 0 {
                tracing::info!(stream, partition, routed, already, "entries already in their partition acknowledged");
            } else {
                tracing::debug!(stream, partition, routed, "entries routed");
            }
        }
    }
}

/// An `XAUTOCLAIM` reply: where to continue, the claimed entries, and the ids Redis reports
/// deleted while pending (Redis 7 drops those from the pending list itself).
fn claim_reply(stream: &str, reply: Value) -> Result<(String, Vec<RawEntry>, Vec<String>)> {
    let Value::Array(parts) = reply else {
        return Err(EngineError::Reply(format!("XAUTOCLAIM reply is not an array: {reply:?}")));
    };
    let mut parts = parts.into_iter();
    let next = match parts.next() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(Value::SimpleString(s)) => s,
        other => return Err(EngineError::Reply(format!("XAUTOCLAIM cursor: {other:?}"))),
    };
    let entries = parse_entry_list(stream, parts.next().unwrap_or(Value::Array(Vec::new())))?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids
            .into_iter()
            .filter_map(|id| match id {
                Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((next, entries, deleted))
}
