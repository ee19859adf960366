//! The Redis side of the batch cycle: consumer-group reads (step 1), publishing (step 5) and
//! acknowledgement (step 6).
//!
//! Blocking reads get their own connection, whose response timeout is above the BLOCK time:
//! on a shared connection a `BLOCK` read stalls every other command, and redis-rs's default
//! 500 ms response timeout would drop replies that Redis has already moved to the pending list.
//! Everything else goes over a second connection. Both are re-made after any error.
//!
//! On a Redis Cluster (`cluster_nodes`) the same commands go through a cluster connection
//! ([`Conn`]), and every script and pipeline stays within one hash slot: reads are split by
//! slot (`read_ahead.rs`), acknowledgements by stream, and outputs are published per target
//! stream with a guard in that stream's slot (`publish.rs`). One server keeps its single calls.

use crate::connect::RedisClient;
use crate::error::{EngineError, Result};
use maestro_schemas::own::OutputKey;
use maestro_schemas::{EntryId, Fields};
use redis::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod conn;
mod groups;
mod publish;
mod read_ahead;
mod sized;

pub use conn::{Conn, slot_groups, slot_tag};

pub use groups::{GroupPosition, Skipped};
pub use read_ahead::{Read, ReadAhead};

/// An entry to publish: the log position it answers (its publish guard and its mark), the
/// stream, the fields, the stream's approximate length cap, and where the elapsed milliseconds
/// are counted from (see `maestro_handlers::Output::elapsed_from_ms`).
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    pub seq: u64,
    pub index: u32,
    pub stream: &'a str,
    pub fields: &'a [(Vec<u8>, Vec<u8>)],
    pub maxlen: Option<u64>,
    pub elapsed_from_ms: Option<u64>,
}

/// One entry as Redis delivered it, field names and values as the bytes Redis held. `fields`
/// is `None` when the entry was deleted (trimmed) while it sat in a pending list: Redis then
/// delivers only its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub stream: String,
    pub id: EntryId,
    pub fields: Option<Fields>,
    /// Times Redis delivered it to a consumer of the group (1 for a first delivery).
    pub deliveries: u32,
    /// The bytes of an entry over the size limit whose fields Redis was asked to keep (see
    /// [`ReadAhead`]): `fields` is then empty, and the entry is rejected as `too_large`.
    pub withheld: Option<usize>,
}

impl RawEntry {
    /// Bytes of field names and values.
    pub fn size(&self) -> usize {
        self.fields.as_ref().map(|f| maestro_schemas::envelope::entry_bytes(f)).unwrap_or(0)
    }
}

/// Consumer-group settings.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub group: String,
    pub consumer: String,
    pub streams: Vec<String>,
    /// Entries per stream per read.
    pub count: usize,
    /// The longest a read waits for something new before the batch loop gets an empty one.
    pub block: Duration,
    /// How soon the reader asks again after an empty read (a sized read cannot block); the wait
    /// doubles while reads stay empty, up to `poll_max`.
    pub poll: Duration,
    pub poll_max: Duration,
    /// Bytes one read may bring (`max_batch_bytes`): reads stop there.
    pub budget: usize,
    /// Entries over this many bytes (the entry size limit) are left in Redis: a read answers
    /// them by id and size only.
    pub entry_limit: usize,
    /// Hash key for the publish guard (see `publish.rs`); on a cluster, the prefix of one
    /// guard per target stream.
    pub published_key: String,
    /// On a cluster, replicas that must hold a publication before it counts as done, and how
    /// long to wait for them (`WAIT`); unused on one server.
    pub wait_replicas: u32,
    pub wait_ms: u64,
    /// Key of the group's output key (see [`Source::load_output_key`]).
    pub output_key_key: String,
}

fn reply(what: &str, value: &Value) -> EngineError {
    EngineError::Reply(format!("unexpected {what}: {value:?}").chars().take(300).collect())
}

fn into_bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        _ => Vec::new(),
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    bytes(value).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Parses one `[id, [field, value, ...]]` (or `[id, nil]` for a deleted entry), taking the
/// values out of the reply rather than copying them.
fn parse_entry(stream: &str, value: Value) -> Result<RawEntry> {
    let Value::Array(parts) = value else { return Err(reply("entry", &value)) };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EngineError::Reply("entry is not [id, fields]".into()));
    };
    let id = text(&id).ok_or_else(|| reply("entry id", &id))?;
    let id = EntryId::parse(&id).map_err(|e| EngineError::Reply(e.to_string()))?;
    let fields = match fields {
        Value::Nil => None,
        Value::Map(pairs) => Some(pairs.into_iter().map(|(k, v)| (into_bytes(k), into_bytes(v))).collect()),
        Value::Array(flat) => {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let Some(name) = flat.next() {
                out.push((into_bytes(name), flat.next().map(into_bytes).unwrap_or_default()));
            }
            Some(out)
        }
        other => return Err(reply("entry fields", &other)),
    };
    Ok(RawEntry { stream: stream.to_string(), id, fields, deliveries: 1, withheld: None })
}

/// Parses a list of `[id, fields]` entries of `stream` (an `XRANGE` or `XAUTOCLAIM` list).
pub fn parse_entry_list(stream: &str, value: Value) -> Result<Vec<RawEntry>> {
    match value {
        Value::Array(entries) => entries.into_iter().map(|e| parse_entry(stream, e)).collect(),
        other => Err(reply("entry list", &other)),
    }
}

/// Parses an `XREADGROUP` reply (RESP2 array or RESP3 map; nil when the BLOCK timed out).
pub fn parse_read_reply(value: Value) -> Result<Vec<RawEntry>> {
    let mut out = Vec::new();
    let streams: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(out),
        Value::Map(streams) => streams,
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Ok((pair.next().unwrap_or_default(), pair.next().unwrap_or_default()))
                }
                other => Err(reply("stream", &other)),
            })
            .collect::<Result<_>>()?,
        other => return Err(reply("read reply", &other)),
    };
    for (key, entries) in streams {
        let key = text(&key).ok_or_else(|| reply("stream key", &key))?;
        out.extend(parse_entry_list(&key, entries)?);
    }
    Ok(out)
}

/// Consumer-group state of one stream, from `XINFO GROUPS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    pub pending: u64,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
}

/// Redis reads, acks and publishes for one consumer of one group.
pub struct Source {
    client: RedisClient,
    /// Whether `client` is a cluster's: scripts and pipelines then stay within one slot.
    cluster: bool,
    config: SourceConfig,
    publish_script: redis::Script,
    cluster_publish_script: redis::Script,
    skipped_script: redis::Script,
    sized_pending: redis::Script,
    sized_claim: redis::Script,
    /// Entries per stream per read; shared with the read-ahead task.
    count: Arc<AtomicUsize>,
    writer: Option<Conn>,
    /// The key that marks this group's outputs, once loaded from Redis.
    output_key: Option<OutputKey>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Source {
    pub fn new(client: RedisClient, config: SourceConfig) -> Source {
        let count = Arc::new(AtomicUsize::new(config.count));
        Source {
            cluster: client.is_cluster(),
            client,
            config,
            count,
            writer: None,
            publish_script: redis::Script::new(publish::PUBLISH_SCRIPT),
            cluster_publish_script: redis::Script::new(publish::CLUSTER_PUBLISH_SCRIPT),
            output_key: None,
            skipped_script: groups::script(),
            sized_pending: redis::Script::new(sized::SIZED_PENDING),
            sized_claim: redis::Script::new(sized::SIZED_CLAIM),
        }
    }

    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// Entries per stream per read now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn set_count(&mut self, count: usize) {
        self.count.store(count.max(1), Ordering::Relaxed);
    }

    async fn connection(&self, response_timeout: Duration) -> Result<Conn> {
        self.client.connect(response_timeout).await
    }

    async fn writer(&mut self) -> Result<Conn> {
        if self.writer.is_none() {
            self.writer = Some(self.connection(Duration::from_secs(10)).await?);
        }
        self.writer.clone().ok_or_else(|| EngineError::Reply("no connection".into()))
    }

    /// Runs a command on the writer connection, dropping the connection after an I/O error.
    pub(crate) async fn run<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.writer().await?;
        let result = cmd.query_async::<T>(&mut conn).await;
        self.forget_on_io_error(result)
    }

    async fn run_pipe<T: redis::FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> Result<T> {
        let mut conn = self.writer().await?;
        let result = pipe.query_async::<T>(&mut conn).await;
        self.forget_on_io_error(result)
    }

    fn forget_on_io_error<T>(&mut self, result: redis::RedisResult<T>) -> Result<T> {
        if let Err(e) = &result
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error())
        {
            self.writer = None;
        }
        Ok(result?)
    }

    /// Sets `key` to `value` (the external chain anchor).
    pub async fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let _: () = self.run(redis::cmd("SET").arg(key).arg(value)).await?;
        Ok(())
    }

    /// Reads the group's output key, creating it when no engine of the group has yet (a random
    /// key, `SET NX`, so that every engine of the group ends up with the same one). It marks
    /// every output this engine publishes and proves which entries read back are outputs of
    /// an engine of the group (`maestro_schemas::own`). Read at every connection: an engine
    /// follows a key that was replaced (Redis restarted empty) once it reconnects.
    pub async fn load_output_key(&mut self) -> Result<OutputKey> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| EngineError::Reply(format!("no random bytes for the output key: {e}")))?;
        let key = self.config.output_key_key.clone();
        let fresh = OutputKey::new(fresh).to_hex();
        // One command, so no MULTI for the ACL to allow: `SET NX GET` answers the key already
        // there, or nil when this call stored the fresh one.
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(&fresh).arg("NX").arg("GET");
        let stored: Option<Vec<u8>> = self.run(&set).await?;
        let stored = stored.unwrap_or_else(|| fresh.into_bytes());
        let loaded = OutputKey::from_hex(&stored).ok_or_else(|| {
            EngineError::Reply(format!(
                "the output key at {key} is not 64 hex digits (delete it to have a new one made; every engine of \
                 the group then needs a restart)"
            ))
        })?;
        self.output_key = Some(loaded.clone());
        Ok(loaded)
    }

    /// Appends one entry as any producer would (no origin): the effect runners' facts.
    pub async fn xadd(&mut self, stream: &str, fields: &[(String, String)]) -> Result<()> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value);
        }
        let _: String = self.run(&cmd).await?;
        Ok(())
    }

    /// The Redis server's time in Unix milliseconds: the clock entry ids are stamped with.
    pub async fn time_ms(&mut self) -> Result<u64> {
        let (seconds, micros): (u64, u64) = self.run(&redis::cmd("TIME")).await?;
        Ok(seconds * 1000 + micros / 1000)
    }

    /// Answers PING.
    pub async fn ping(&mut self) -> Result<()> {
        let _: String = self.run(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// Reads this consumer's own pending entries of `stream` after `after` (id `0` = from the
    /// start), with their delivery counts, sized as new entries are (see [`sized`]).
    pub async fn read_pending(&mut self, stream: &str, after: EntryId) -> Result<Vec<RawEntry>> {
        let mut conn = self.writer().await?;
        let mut invocation = self.sized_pending.key(stream);
        invocation.arg(&self.config.group).arg(&self.config.consumer).arg(self.count());
        invocation.arg(self.config.entry_limit.max(1)).arg(self.config.budget.max(1)).arg(after.to_string());
        let result = invocation.invoke_async::<Value>(&mut conn).await;
        drop(invocation);
        let mut entries = sized::sized_entries(stream, self.forget_on_io_error(result)?)?;
        self.add_delivery_counts(stream, &mut entries).await?;
        Ok(entries)
    }

    async fn add_delivery_counts(&mut self, stream: &str, entries: &mut [RawEntry]) -> Result<()> {
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let counts = self.delivery_counts(stream, first.id, last.id, entries.len()).await?;
            for entry in entries {
                entry.deliveries = counts.get(&entry.id).copied().unwrap_or(1);
            }
        }
        Ok(())
    }

    async fn delivery_counts(
        &mut self,
        stream: &str,
        first: EntryId,
        last: EntryId,
        count: usize,
    ) -> Result<HashMap<EntryId, u32>> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(&self.config.group).arg(first.to_string()).arg(last.to_string()).arg(count);
        cmd.arg(&self.config.consumer);
        let value: Value = self.run(&cmd).await?;
        let mut out = HashMap::new();
        for row in items(&value).unwrap_or_default() {
            if let Some([id, _, _, deliveries]) = items(row) {
                let id = text(id).and_then(|t| EntryId::parse(&t).ok());
                let deliveries = match deliveries {
                    Value::Int(n) => u32::try_from(*n).ok(),
                    other => text(other).and_then(|t| t.parse().ok()),
                };
                if let (Some(id), Some(deliveries)) = (id, deliveries) {
                    out.insert(id, deliveries);
                }
            }
        }
        Ok(out)
    }

    /// Starts reading new entries of `streams` ahead on a connection of its own (see
    /// [`ReadAhead`]): reads stop at the configured `budget` bytes and leave entries over
    /// `entry_limit` bytes in Redis.
    pub async fn read_ahead(&self, streams: Vec<String>) -> Result<ReadAhead> {
        let conn = self.connection(self.config.block + Duration::from_secs(5)).await?;
        let config = SourceConfig { streams, ..self.config.clone() };
        Ok(ReadAhead::spawn(conn, config, self.count.clone()))
    }

    /// Claims entries of `stream` idle for at least `min_idle` from any consumer (a dead engine's
    /// pending list), sized as new entries are (see [`sized`]). Returns the claimed entries,
    /// where to continue, and the ids Redis reports as deleted while pending (lost: the caller
    /// counts and logs them).
    pub async fn claim(
        &mut self,
        stream: &str,
        min_idle: Duration,
        start: &str,
    ) -> Result<(Vec<RawEntry>, String, Vec<EntryId>)> {
        let mut conn = self.writer().await?;
        let mut invocation = self.sized_claim.key(stream);
        invocation.arg(&self.config.group).arg(&self.config.consumer);
        invocation.arg(min_idle.as_millis() as u64).arg(start).arg(self.count());
        invocation.arg(self.config.entry_limit.max(1)).arg(self.config.budget.max(1));
        let result = invocation.invoke_async::<Value>(&mut conn).await;
        drop(invocation);
        let (mut claimed, next, deleted) = sized::claim_reply(stream, self.forget_on_io_error(result)?)?;
        self.add_delivery_counts(stream, &mut claimed).await?;
        Ok((claimed, next, deleted))
    }

    /// Acknowledges entries, one XACK per stream, in one pipeline (on a cluster, where the
    /// streams lie in different slots, one command per stream). A stream whose group Redis
    /// no longer has (it restarted empty) has nothing left to acknowledge.
    pub async fn ack(&mut self, ids: &[(String, EntryId)]) -> Result<()> {
        let mut by_stream: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (stream, id) in ids {
            by_stream.entry(stream).or_default().push(id.to_string());
        }
        if self.cluster {
            return self.ack_each(by_stream).await;
        }
        let mut pipe = redis::pipe();
        for (stream, ids) in &by_stream {
            pipe.cmd("XACK").arg(stream).arg(&self.config.group).arg(ids);
        }
        match self.run_pipe::<Value>(&pipe).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_no_group() || e.belongs_to_stream() => {
                // Redis lost the group, or a key changed type or permission under us: nothing
                // is pending there any more. Acknowledge stream by stream so that streams which
                // still have it are not skipped.
                self.ack_each(by_stream).await
            }
            Err(e) => Err(e),
        }
    }

    /// One XACK per stream; a stream Redis refuses for a reason of its own (or whose group it
    /// lost) keeps its entries pending, named in the log, and the others are acknowledged.
    async fn ack_each(&mut self, by_stream: BTreeMap<&str, Vec<String>>) -> Result<()> {
        for (stream, ids) in by_stream {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(stream).arg(&self.config.group).arg(&ids);
            match self.run::<Value>(&cmd).await {
                Err(e) if e.is_no_group() || e.belongs_to_stream() => {
                    tracing::warn!(stream, error = %e, "cannot acknowledge on this stream; its entries stay pending")
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_resp2_reads_with_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s1"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("5-1"),
                    Value::Array(vec![bulk("type"), bulk("x"), bulk("payload"), bulk("{}")]),
                ]),
                Value::Array(vec![bulk("6-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, EntryId { ms: 5, seq: 1 });
        assert_eq!(entries[0].fields.as_ref().unwrap()[1], (b"payload".to_vec(), b"{}".to_vec()));
        assert_eq!(entries[1].fields, None);
        assert!(parse_read_reply(Value::Nil).unwrap().is_empty());
        assert!(parse_read_reply(Value::Int(3)).is_err());
    }

    #[test]
    fn field_names_are_kept_as_the_bytes_redis_sent() {
        let name = |b: &[u8]| Value::BulkString(b.to_vec());
        let fields = Value::Array(vec![name(b"x\xff"), bulk("1"), name(b"x\xfe"), bulk("2")]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s1"),
            Value::Array(vec![Value::Array(vec![bulk("5-1"), fields])]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        let expected = vec![(b"x\xff".to_vec(), b"1".to_vec()), (b"x\xfe".to_vec(), b"2".to_vec())];
        assert_eq!(entries[0].fields, Some(expected), "two names, as sent");
    }
}
