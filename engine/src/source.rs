//! The Redis side of the batch cycle: consumer-group reads (step 1), publishing (step 5) and
//! acknowledgement (step 6).
//!
//! Blocking reads get their own connection, whose response timeout is above the BLOCK time:
//! on a shared connection a `BLOCK` read stalls every other command, and redis-rs's default
//! 500 ms response timeout would drop replies that Redis has already moved to the pending list.
//! Everything else goes over a second connection. Both are re-made after any error.

use crate::error::{EngineError, Result};
use crate::store::OutboxItem;
use maestro_schemas::EntryId;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One entry as Redis delivered it. `fields` is `None` when the entry was deleted (trimmed)
/// while it sat in a pending list: Redis then delivers only its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub stream: String,
    pub id: EntryId,
    pub fields: Option<Vec<(String, Vec<u8>)>>,
    /// Times Redis delivered it to a consumer of the group (1 for a first delivery).
    pub deliveries: u32,
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
    pub block: Duration,
    /// Hash key for the publish guard (see [`PUBLISH_SCRIPT`]).
    pub published_key: String,
}

/// Publishes one outbox entry unless this consumer already published it. KEYS[1] is the target
/// stream, KEYS[2] the guard hash; ARGV is consumer, seq, index, then the XADD arguments after
/// the key. Outputs are published in (seq, index) order, so one high-water mark per consumer
/// is enough to make a re-publish after a crash a no-op.
pub const PUBLISH_SCRIPT: &str = r"
local mark = redis.call('HGET', KEYS[2], ARGV[1])
local seq, index = tonumber(ARGV[2]), tonumber(ARGV[3])
if mark then
  local s, i = string.match(mark, '^(%d+):(%d+)$')
  s, i = tonumber(s), tonumber(i)
  if seq < s or (seq == s and index <= i) then return 0 end
end
redis.call('XADD', KEYS[1], unpack(ARGV, 4))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
return 1
";

fn reply(what: &str, value: &Value) -> EngineError {
    EngineError::Reply(format!("unexpected {what}: {value:?}").chars().take(300).collect())
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

/// Parses one `[id, [field, value, ...]]` (or `[id, nil]` for a deleted entry).
fn parse_entry(stream: &str, value: &Value) -> Result<RawEntry> {
    let parts = items(value).ok_or_else(|| reply("entry", value))?;
    let [id, fields] = parts else { return Err(reply("entry", value)) };
    let id = text(id).ok_or_else(|| reply("entry id", id))?;
    let id = EntryId::parse(&id).map_err(|e| EngineError::Reply(e.to_string()))?;
    let fields = match fields {
        Value::Nil => None,
        Value::Map(pairs) => Some(
            pairs.iter().map(|(k, v)| (text(k).unwrap_or_default(), bytes(v).unwrap_or_default().to_vec())).collect(),
        ),
        other => {
            let flat = items(other).ok_or_else(|| reply("entry fields", other))?;
            Some(
                flat.chunks(2)
                    .map(|pair| match pair {
                        [k, v] => (text(k).unwrap_or_default(), bytes(v).unwrap_or_default().to_vec()),
                        [k] => (text(k).unwrap_or_default(), Vec::new()),
                        _ => (String::new(), Vec::new()),
                    })
                    .collect(),
            )
        }
    };
    Ok(RawEntry { stream: stream.to_string(), id, fields, deliveries: 1 })
}

fn parse_entries(stream: &str, value: &Value) -> Result<Vec<RawEntry>> {
    items(value).ok_or_else(|| reply("entry list", value))?.iter().map(|e| parse_entry(stream, e)).collect()
}

/// Parses an `XREADGROUP` reply (RESP2 array or RESP3 map; nil when the BLOCK timed out).
pub fn parse_read_reply(value: &Value) -> Result<Vec<RawEntry>> {
    let mut out = Vec::new();
    match value {
        Value::Nil => {}
        Value::Map(streams) => {
            for (key, entries) in streams {
                let key = text(key).ok_or_else(|| reply("stream key", key))?;
                out.extend(parse_entries(&key, entries)?);
            }
        }
        other => {
            for stream in items(other).ok_or_else(|| reply("read reply", other))? {
                let parts = items(stream).ok_or_else(|| reply("stream", stream))?;
                let [key, entries] = parts else { return Err(reply("stream", stream)) };
                let key = text(key).ok_or_else(|| reply("stream key", key))?;
                out.extend(parse_entries(&key, entries)?);
            }
        }
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
    client: redis::Client,
    config: SourceConfig,
    reader: Option<MultiplexedConnection>,
    writer: Option<MultiplexedConnection>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Source {
    pub fn new(client: redis::Client, config: SourceConfig) -> Source {
        Source { client, config, reader: None, writer: None }
    }

    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// Entries per stream per read now.
    pub fn count(&self) -> usize {
        self.config.count
    }

    pub fn set_count(&mut self, count: usize) {
        self.config.count = count.max(1);
    }

    async fn connection(&self, response_timeout: Duration) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout));
        Ok(self.client.get_multiplexed_async_connection_with_config(&config).await?)
    }

    async fn writer(&mut self) -> Result<MultiplexedConnection> {
        if self.writer.is_none() {
            self.writer = Some(self.connection(Duration::from_secs(10)).await?);
        }
        self.writer.clone().ok_or_else(|| EngineError::Reply("no connection".into()))
    }

    /// Runs a command on the writer connection, dropping the connection after an I/O error.
    async fn run<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.writer().await?;
        let result = cmd.query_async::<T>(&mut conn).await;
        self.forget_on_io_error(result, false)
    }

    async fn run_pipe<T: redis::FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> Result<T> {
        let mut conn = self.writer().await?;
        let result = pipe.query_async::<T>(&mut conn).await;
        self.forget_on_io_error(result, false)
    }

    fn forget_on_io_error<T>(&mut self, result: redis::RedisResult<T>, reader: bool) -> Result<T> {
        if let Err(e) = &result
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error())
        {
            if reader {
                self.reader = None;
            } else {
                self.writer = None;
            }
        }
        Ok(result?)
    }

    /// Answers PING.
    pub async fn ping(&mut self) -> Result<()> {
        let _: String = self.run(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// Creates the group on every stream where it is missing: at the engine's own cursor when
    /// the log already has entries of that stream (Redis lost the group, or lost everything),
    /// else at `0`, so that a first start reads what producers wrote before it.
    pub async fn ensure_groups(&mut self, cursor: impl Fn(&str) -> Result<Option<EntryId>>) -> Result<()> {
        for stream in self.config.streams.clone() {
            let start = cursor(&stream)?.map(|id| id.to_string()).unwrap_or_else(|| "0".into());
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE").arg(&stream).arg(&self.config.group).arg(&start).arg("MKSTREAM");
            match self.run::<Value>(&cmd).await {
                Ok(_) => tracing::info!(stream, start, group = self.config.group, "consumer group created"),
                Err(EngineError::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads this consumer's own pending entries of `stream` after `after` (id `0` = from the
    /// start), with their delivery counts.
    pub async fn read_pending(&mut self, stream: &str, after: EntryId) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.config.group).arg(&self.config.consumer);
        cmd.arg("COUNT").arg(self.config.count).arg("STREAMS").arg(stream).arg(after.to_string());
        let value: Value = self.run(&cmd).await?;
        let mut entries = parse_read_reply(&value)?;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let counts = self.delivery_counts(stream, first.id, last.id, entries.len()).await?;
            for entry in &mut entries {
                entry.deliveries = counts.get(&entry.id).copied().unwrap_or(1);
            }
        }
        Ok(entries)
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

    /// Reads new entries of every stream, blocking up to the configured time.
    pub async fn read_new(&mut self) -> Result<Vec<RawEntry>> {
        if self.reader.is_none() {
            self.reader = Some(self.connection(self.config.block + Duration::from_secs(5)).await?);
        }
        let mut conn = self.reader.clone().ok_or_else(|| EngineError::Reply("no connection".into()))?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.config.group).arg(&self.config.consumer);
        cmd.arg("COUNT").arg(self.config.count);
        cmd.arg("BLOCK").arg(self.config.block.as_millis() as u64).arg("STREAMS");
        cmd.arg(&self.config.streams);
        for _ in &self.config.streams {
            cmd.arg(">");
        }
        let result = cmd.query_async::<Value>(&mut conn).await;
        let value = self.forget_on_io_error(result, true)?;
        parse_read_reply(&value)
    }

    /// Claims entries of `stream` idle for at least `min_idle` from any consumer (a dead engine's
    /// pending list). Returns the claimed entries, where to continue, and the ids Redis reports
    /// as deleted while pending (lost: the caller counts and logs them).
    pub async fn claim(
        &mut self,
        stream: &str,
        min_idle: Duration,
        start: &str,
    ) -> Result<(Vec<RawEntry>, String, Vec<EntryId>)> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(stream).arg(&self.config.group).arg(&self.config.consumer);
        cmd.arg(min_idle.as_millis() as u64).arg(start).arg("COUNT").arg(self.config.count);
        let value: Value = self.run(&cmd).await?;
        let parts = items(&value).ok_or_else(|| reply("XAUTOCLAIM reply", &value))?;
        let next = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
        let mut claimed = match parts.get(1) {
            Some(list) => parse_entries(stream, list)?,
            None => Vec::new(),
        };
        for entry in &mut claimed {
            entry.deliveries = 2;
        }
        let deleted = parts
            .get(2)
            .and_then(items)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| text(v).and_then(|t| EntryId::parse(&t).ok()))
            .collect();
        Ok((claimed, next, deleted))
    }

    /// Acknowledges entries, one XACK per stream, in one pipeline. A stream whose group Redis
    /// no longer has (it restarted empty) has nothing left to acknowledge.
    pub async fn ack(&mut self, ids: &[(String, EntryId)]) -> Result<()> {
        let mut by_stream: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (stream, id) in ids {
            by_stream.entry(stream).or_default().push(id.to_string());
        }
        for (stream, ids) in by_stream {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(stream).arg(&self.config.group).arg(&ids);
            match self.run::<Value>(&cmd).await {
                Ok(_) => {}
                Err(e) if e.is_no_group() => tracing::warn!(stream, "group gone while acknowledging; nothing to ack"),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Publishes outbox entries in order, each guarded by [`PUBLISH_SCRIPT`].
    pub async fn publish(&mut self, items: &[OutboxItem]) -> Result<u64> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for item in items {
            let cmd = pipe.cmd("EVAL").arg(PUBLISH_SCRIPT).arg(2).arg(&item.stream).arg(&self.config.published_key);
            cmd.arg(&self.config.consumer).arg(item.seq).arg(item.index);
            if let Some(maxlen) = item.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(maxlen);
            }
            cmd.arg("*");
            for (name, value) in &item.fields {
                cmd.arg(name).arg(value.as_slice());
            }
        }
        let published: Vec<i64> = self.run_pipe(&pipe).await?;
        Ok(published.iter().filter(|n| **n == 1).count() as u64)
    }

    /// `XINFO GROUPS` for every stream: this group's pending count and lag.
    pub async fn group_info(&mut self) -> Result<BTreeMap<String, GroupInfo>> {
        let mut out = BTreeMap::new();
        for stream in self.config.streams.clone() {
            let mut cmd = redis::cmd("XINFO");
            cmd.arg("GROUPS").arg(&stream);
            let value: Value = match self.run(&cmd).await {
                Ok(value) => value,
                Err(EngineError::Redis(e)) if e.code() == Some("ERR") => continue,
                Err(e) => return Err(e),
            };
            for group in items(&value).unwrap_or_default() {
                let fields: HashMap<String, &Value> = match group {
                    Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
                    other => items(other)
                        .unwrap_or_default()
                        .chunks(2)
                        .filter_map(|p| match p {
                            [k, v] => Some((text(k)?, v)),
                            _ => None,
                        })
                        .collect(),
                };
                if fields.get("name").and_then(|v| text(v)).as_deref() != Some(self.config.group.as_str()) {
                    continue;
                }
                let number = |name: &str| match fields.get(name) {
                    Some(Value::Int(n)) => u64::try_from(*n).ok(),
                    Some(other) => text(other).and_then(|t| t.parse().ok()),
                    None => None,
                };
                out.insert(stream.clone(), GroupInfo { pending: number("pending").unwrap_or(0), lag: number("lag") });
            }
        }
        Ok(out)
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
        let entries = parse_read_reply(&reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, EntryId { ms: 5, seq: 1 });
        assert_eq!(entries[0].fields.as_ref().unwrap()[1], ("payload".to_string(), b"{}".to_vec()));
        assert_eq!(entries[1].fields, None);
        assert!(parse_read_reply(&Value::Nil).unwrap().is_empty());
        assert!(parse_read_reply(&Value::Int(3)).is_err());
    }
}
