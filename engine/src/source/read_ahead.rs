//! Reading new entries ahead of the batch being processed, stream errors kept to their stream,
//! and memory kept to one large read at a time.

use super::{RawEntry, SourceConfig, parse_entry, parse_read_reply};
use crate::error::{EngineError, Result};
use redis::Value;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc};

/// A careful read: `XREADGROUP ... COUNT ARGV[3] STREAMS KEYS... > ...` for group ARGV[1] and
/// consumer ARGV[2], inside Redis, answering an entry over ARGV[4] bytes (names and values) as
/// its id and size only. The entry is delivered (pending) as any other, but its payload, which
/// the engine would only drop, never crosses the connection. One read covers every stream, as
/// the blocking read does, so entries of different streams keep the order they arrived in (a
/// heal request after the `start_monitoring` that names its project).
const SIZED_READ: &str = r"
local args = {'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
for _, key in ipairs(KEYS) do args[#args + 1] = key end
for _ in ipairs(KEYS) do args[#args + 1] = '>' end
local read = redis.call(unpack(args))
if not read then return {} end
local limit, out = tonumber(ARGV[4]), {}
for s, stream in ipairs(read) do
  local entries = {}
  for i, entry in ipairs(stream[2]) do
    local size = 0
    for _, part in ipairs(entry[2]) do size = size + #part end
    if size > limit then entries[i] = {entry[1], size} else entries[i] = entry end
  end
  out[s] = {stream[1], entries}
end
return out
";

/// One read: the entries, and the streams Redis refused for a reason of their own (see
/// [`EngineError::belongs_to_stream`]). A refused stream is read no more by this reader.
#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<RawEntry>,
    pub failed: Vec<(String, EngineError)>,
    /// One blocking read of every stream at the shared COUNT: fewer entries than COUNT times
    /// the streams means nothing was left waiting.
    pub all_streams: bool,
}

/// How the batch loop tells the reader it is done with a read, so that a large read is never
/// held beside the next one.
#[derive(Debug, Default)]
struct Handover {
    done: AtomicU64,
    stop: AtomicBool,
    notify: Notify,
}

/// Reads new entries of the streams in a task of its own, one read ahead of the batch being
/// processed, so that the Redis round trip overlaps the previous batch's fsync.
///
/// One `XREADGROUP` covers every stream. When Redis refuses it for a reason of one key (a
/// wrong type, an ACL), each stream is read alone to find which: the others' entries are
/// delivered, the refused ones are reported in [`Read::failed`] and left out of later reads.
///
/// Memory: Redis cannot say how large the entries waiting are before they are read, so a
/// read that came back over the byte budget turns the reader careful: each read takes, of
/// every stream, as many entries as fit the budget at the size limit each (an entry over the
/// limit stays in Redis: only its id and size are read, see [`SIZED_READ`]), and the reader
/// waits until the batch loop is done with each read before the next, so two large reads are
/// never in memory together. A careful read that fits the budget ends it: reads block again,
/// from COUNT 1 (the batch loop grows COUNT while reads fit). It starts careful too: what
/// queued while the engine was stopped is unknown. The bound holds only while careful: the
/// read that goes over the budget holds up to COUNT entries of each stream.
///
/// On [`ReadAhead::finish`] it stops issuing reads and hands over what it had already read:
/// entries Redis delivered are processed before shutdown, not left pending.
#[derive(Debug)]
pub struct ReadAhead {
    batches: mpsc::Receiver<Result<Read>>,
    handover: Arc<Handover>,
    task: tokio::task::JoinHandle<()>,
}

struct Reader {
    conn: MultiplexedConnection,
    config: SourceConfig,
    count: Arc<AtomicUsize>,
    budget: usize,
    /// Entries over this many bytes are left in Redis by careful reads (the entry size limit).
    entry_limit: usize,
    sized_read: redis::Script,
    /// Reads are sized (see [`SIZED_READ`]) until one fits the budget.
    careful: bool,
    handover: Arc<Handover>,
    /// Reads handed to the batch loop.
    sent: u64,
}

fn bytes(entries: &[RawEntry]) -> usize {
    entries.iter().map(RawEntry::size).sum()
}

impl Reader {
    /// `XREADGROUP` of new entries: with `count` (else the shared COUNT) and no BLOCK, or with
    /// the shared COUNT and BLOCK.
    fn read_cmd(&self, streams: &[String], count: Option<usize>) -> redis::Cmd {
        let block = count.is_none();
        let count = count.unwrap_or_else(|| self.count.load(Ordering::Relaxed)).max(1);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.config.group).arg(&self.config.consumer);
        cmd.arg("COUNT").arg(count);
        if block {
            cmd.arg("BLOCK").arg(self.config.block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(streams);
        for _ in streams {
            cmd.arg(">");
        }
        cmd
    }

    async fn query(&mut self, cmd: &redis::Cmd) -> Result<Vec<RawEntry>> {
        match cmd.query_async::<Value>(&mut self.conn).await {
            Ok(value) => parse_read_reply(value),
            Err(e) => Err(e.into()),
        }
    }

    /// Every stream read alone, without blocking: the entries of those Redis serves, and the
    /// ones it refuses (taken out of `config.streams`).
    async fn read_each(&mut self) -> Result<Read> {
        let mut read = Read::default();
        for stream in self.config.streams.clone() {
            let count = self.count.load(Ordering::Relaxed);
            let cmd = self.read_cmd(std::slice::from_ref(&stream), Some(count));
            match self.query(&cmd).await {
                Ok(entries) => read.entries.extend(entries),
                Err(e) if e.belongs_to_stream() => read.failed.push((stream, e)),
                Err(e) => return Err(e),
            }
        }
        self.config.streams.retain(|s| !read.failed.iter().any(|(f, _)| f == s));
        Ok(read)
    }

    /// The next entries of `streams` through [`SIZED_READ`]: of each, as many as fit the byte
    /// budget at the entry size limit each (16 with the defaults), at least one.
    async fn sized_read(&mut self, streams: &[String]) -> Result<Vec<RawEntry>> {
        let mut invocation = self.sized_read.prepare_invoke();
        for stream in streams {
            invocation.key(stream);
        }
        // Entries over the limit stay in Redis, so this many of a stream fit the budget.
        let count = (self.budget / self.entry_limit.max(1)).clamp(1, self.config.count.max(1));
        invocation.arg(&self.config.group).arg(&self.config.consumer).arg(count).arg(self.entry_limit);
        let reply = invocation.invoke_async::<Value>(&mut self.conn).await;
        drop(invocation);
        let Value::Array(per_stream) = reply? else { return Ok(Vec::new()) };
        let mut entries = Vec::new();
        for stream in per_stream {
            let Value::Array(mut parts) = stream else {
                return Err(EngineError::Reply("a sized read's stream".into()));
            };
            let (Some(Value::Array(read)), Some(name)) = (parts.pop(), parts.pop()) else {
                return Err(EngineError::Reply("a sized read's stream without entries".into()));
            };
            let name = match name {
                Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Value::SimpleString(text) => text,
                _ => return Err(EngineError::Reply("a sized read's stream name".into())),
            };
            for entry in read {
                entries.push(sized_entry(&name, entry)?);
            }
        }
        Ok(entries)
    }

    /// All streams in one blocking read; when Redis refuses it for one key's reason, each
    /// stream alone.
    async fn read_all(&mut self) -> Result<Read> {
        let cmd = self.read_cmd(&self.config.streams, None);
        match self.query(&cmd).await {
            Ok(entries) => Ok(Read { entries, failed: Vec::new(), all_streams: true }),
            Err(e) if e.belongs_to_stream() => {
                let read = self.read_each().await?;
                // Nothing refused alone: the error was not one stream's after all.
                if read.failed.is_empty() && read.entries.is_empty() { Err(e) } else { Ok(read) }
            }
            Err(e) => Err(e),
        }
    }

    /// Every stream, without blocking, through [`SIZED_READ`]; when Redis refuses it for one
    /// key's reason, each stream alone to find which. A read that fits the budget ends
    /// carefulness, and blocking reads start again from COUNT 1.
    async fn read_careful(&mut self) -> Result<Read> {
        let streams = self.config.streams.clone();
        let read = match self.sized_read(&streams).await {
            Ok(entries) => Read { entries, ..Read::default() },
            Err(e) if e.belongs_to_stream() => {
                let mut read = Read::default();
                for stream in streams {
                    match self.sized_read(std::slice::from_ref(&stream)).await {
                        Ok(entries) => read.entries.extend(entries),
                        Err(e) if e.belongs_to_stream() => read.failed.push((stream, e)),
                        Err(e) => return Err(e),
                    }
                }
                self.config.streams.retain(|s| !read.failed.iter().any(|(f, _)| f == s));
                if read.failed.is_empty() && read.entries.is_empty() {
                    return Err(e);
                }
                read
            }
            Err(e) => return Err(e),
        };
        if bytes(&read.entries) <= self.budget {
            self.careful = false;
            self.count.store(1, Ordering::Relaxed);
        }
        Ok(read)
    }

    async fn read(&mut self) -> Result<Read> {
        if self.config.streams.is_empty() {
            // Every stream is refused: wait as a BLOCK would, so the batch loop keeps its pace.
            tokio::time::sleep(self.config.block).await;
            return Ok(Read::default());
        }
        if self.careful { self.read_careful().await } else { self.read_all().await }
    }

    /// Waits until the batch loop is done with every read handed over (or stops).
    async fn wait_done(&self) {
        loop {
            let notified = self.handover.notify.notified();
            if self.handover.done.load(Ordering::Acquire) >= self.sent || self.handover.stop.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }

    async fn run(mut self, tx: mpsc::Sender<Result<Read>>) {
        while !self.handover.stop.load(Ordering::Relaxed) {
            let read = self.read().await;
            let failed = read.is_err();
            let large = read.as_ref().is_ok_and(|r| bytes(&r.entries) > self.budget);
            let careful = (self.careful || large) && read.as_ref().is_ok_and(|r| !r.entries.is_empty());
            if large {
                self.careful = true;
            }
            if tx.send(read).await.is_err() || failed {
                break;
            }
            self.sent += 1;
            if careful {
                self.wait_done().await;
            }
        }
    }
}

/// One entry of a [`SIZED_READ`] reply: `[id, fields]`, or `[id, size]` for one left in Redis.
fn sized_entry(stream: &str, value: Value) -> Result<RawEntry> {
    match value {
        Value::Array(parts) if matches!(parts.as_slice(), [_, Value::Int(_)]) => {
            let size = match parts.get(1) {
                Some(Value::Int(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
                _ => 0,
            };
            let id = Value::Array(parts.into_iter().take(1).chain([Value::Array(Vec::new())]).collect());
            Ok(RawEntry { withheld: Some(size), ..parse_entry(stream, id)? })
        }
        other => parse_entry(stream, other),
    }
}

impl ReadAhead {
    pub(super) fn spawn(
        conn: MultiplexedConnection,
        config: SourceConfig,
        count: Arc<AtomicUsize>,
        (budget, entry_limit): (usize, usize),
    ) -> ReadAhead {
        let (tx, batches) = mpsc::channel(1);
        let handover = Arc::new(Handover::default());
        let reader = Reader {
            conn,
            config,
            count,
            budget,
            entry_limit,
            sized_read: redis::Script::new(SIZED_READ),
            careful: true,
            handover: handover.clone(),
            sent: 0,
        };
        let task = tokio::spawn(reader.run(tx));
        ReadAhead { batches, handover, task }
    }

    /// The next read: entries (none when the BLOCK time passed with nothing new) and refused
    /// streams, or the error that ended reading.
    pub async fn next(&mut self) -> Result<Read> {
        match self.batches.recv().await {
            Some(read) => read,
            None => Err(EngineError::Reply("read-ahead task ended".into())),
        }
    }

    /// The batch loop is done with the last read [`ReadAhead::next`] returned: its memory is
    /// free.
    pub fn done(&self) {
        self.handover.done.fetch_add(1, Ordering::AcqRel);
        self.handover.notify.notify_one();
    }

    /// Stops reading and returns every read already delivered by Redis (waiting at most for
    /// the read in flight, one BLOCK time). Refused streams found meanwhile are left to the
    /// next start of reading.
    pub async fn finish(mut self) -> Vec<RawEntry> {
        self.handover.stop.store(true, Ordering::Relaxed);
        self.handover.notify.notify_one();
        let mut rest = Vec::new();
        while let Some(read) = self.batches.recv().await {
            rest.extend(read.map(|r| r.entries).unwrap_or_default());
        }
        rest
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}
