//! Reading new entries ahead of the batch being processed, stream errors kept to their stream,
//! and memory kept to the byte budget whatever waits in Redis.

use super::{Conn, RawEntry, SourceConfig, parse_entry, slot_groups};
use crate::error::{EngineError, Result};
use redis::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// A sized read, inside Redis: `XREADGROUP GROUP ARGV[1] ARGV[2]` of new entries of every
/// stream in KEYS, at most ARGV[3] of each, until the entries read add up to ARGV[5] bytes
/// (names and values). An entry over ARGV[4] bytes (the entry size limit) is answered as its id
/// and size only: it is delivered (pending) as any other, but its payload, which the engine
/// would only drop, never crosses the connection. Entries are taken a few at a time, never
/// more than the remaining budget holds at the size limit each, so the reply stays under the
/// budget plus one entry. The reply: `{drained, {stream, entries}...}`, `drained` being 1 when
/// every stream gave less than asked within the budget (nothing was left waiting).
///
/// One read covers every stream, so entries of different streams keep the order they arrived
/// in (a heal request after the `start_monitoring` that names its project). On a Redis Cluster
/// a script may only touch one slot, so there one read covers the streams of one slot, and
/// streams of different slots are read one after the other: their entries may then come out
/// of the order they arrived in across streams (keys sharing a hash tag keep it).
const SIZED_READ: &str = r"
local count, limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local used, drained, out = 0, 1, {}
for s, key in ipairs(KEYS) do
  local entries, stream_drained = {}, false
  while #entries < count and used < budget do
    local step = math.max(1, math.min(count - #entries, math.floor((budget - used) / limit)))
    local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', step, 'STREAMS', key, '>')
    local got = read and read[1][2] or {}
    for _, entry in ipairs(got) do
      local size = 0
      for _, part in ipairs(entry[2]) do size = size + #part end
      if size > limit then entries[#entries + 1] = {entry[1], size}
      else entries[#entries + 1] = entry; used = used + size end
    end
    if #got < step then stream_drained = true; break end
  end
  if not stream_drained then drained = 0 end
  out[s] = {key, entries}
end
table.insert(out, 1, drained)
return out
";

/// One read: the entries, and the streams Redis refused for a reason of their own (see
/// [`EngineError::belongs_to_stream`]). A refused stream is read no more by this reader.
#[derive(Debug, Default)]
pub struct Read {
    pub entries: Vec<RawEntry>,
    pub failed: Vec<(String, EngineError)>,
    /// Every stream gave fewer entries than asked within the byte budget: nothing was left
    /// waiting when it was read.
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
/// Memory: Redis cannot say how large the entries waiting are before they are delivered, and a
/// blocking `XREADGROUP` brings whatever it delivers. So every read is a [`SIZED_READ`]: Redis
/// stops delivering at the byte budget and keeps the payload of an entry over the size limit,
/// whatever queued up. A sized read cannot block (a script never waits), so when nothing is
/// new the reader asks again after `poll`, waiting twice as long after each empty answer up to
/// `poll_max` (so an idle engine costs little and a busy one waits little), until something is
/// new or `block` has passed (then it hands the batch loop an empty read, as a BLOCK timing out
/// would). A read over half the budget is
/// not followed by the next until the batch loop is done with it, so the reads in memory add up
/// to at most the budget plus one entry at the size limit.
///
/// Streams fail alone: when Redis refuses the read for a reason of one key (a wrong type, an
/// ACL), each stream is read alone to find which: the others' entries are delivered, the
/// refused ones are reported in [`Read::failed`] and left out of later reads.
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
    conn: Conn,
    config: SourceConfig,
    /// Entries per stream per read, shared with the batch loop.
    count: Arc<AtomicUsize>,
    sized_read: redis::Script,
    handover: Arc<Handover>,
    /// Reads handed to the batch loop.
    sent: u64,
    /// How long to wait before asking again while nothing is new.
    idle_wait: std::time::Duration,
}

fn bytes(entries: &[RawEntry]) -> usize {
    entries.iter().map(RawEntry::size).sum()
}

impl Reader {
    /// The next entries of `streams` through [`SIZED_READ`], and whether every stream was
    /// drained.
    async fn sized_read(&mut self, streams: &[String], budget: usize) -> Result<(Vec<RawEntry>, bool)> {
        let mut invocation = self.sized_read.prepare_invoke();
        for stream in streams {
            invocation.key(stream);
        }
        let count = self.count.load(Ordering::Relaxed).max(1);
        invocation.arg(&self.config.group).arg(&self.config.consumer).arg(count);
        invocation.arg(self.config.entry_limit.max(1)).arg(budget.max(1));
        let reply = invocation.invoke_async::<Value>(&mut self.conn).await;
        drop(invocation);
        let Value::Array(mut per_stream) = reply? else {
            return Err(EngineError::Reply("a sized read that is not an array".into()));
        };
        let drained = match per_stream.first() {
            Some(Value::Int(flag)) => *flag == 1,
            _ => return Err(EngineError::Reply("a sized read without its drained flag".into())),
        };
        let mut entries = Vec::new();
        for stream in per_stream.drain(1..) {
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
        Ok((entries, drained))
    }

    /// Every stream in one sized read (on a cluster, one per slot, each within what the
    /// previous ones left of the budget); when Redis refuses one for one key's reason, each of
    /// its streams alone to find which.
    async fn read_once(&mut self) -> Result<Read> {
        let mut read = Read { all_streams: true, ..Read::default() };
        for streams in slot_groups(&self.config.streams, self.conn.is_cluster()) {
            let budget = self.config.budget.saturating_sub(bytes(&read.entries));
            if budget == 0 && !read.entries.is_empty() {
                read.all_streams = false;
                break;
            }
            let part = self.read_slot(streams, budget).await?;
            read.entries.extend(part.entries);
            read.failed.extend(part.failed);
            read.all_streams &= part.all_streams;
        }
        self.config.streams.retain(|s| !read.failed.iter().any(|(f, _)| f == s));
        Ok(read)
    }

    /// `streams` (of one slot) in one sized read; when Redis refuses it for one key's reason,
    /// each stream alone to find which.
    async fn read_slot(&mut self, streams: Vec<String>, budget: usize) -> Result<Read> {
        let error = match self.sized_read(&streams, budget).await {
            Ok((entries, all_streams)) => return Ok(Read { entries, failed: Vec::new(), all_streams }),
            Err(e) if e.belongs_to_stream() => e,
            Err(e) => return Err(e),
        };
        let mut read = Read { all_streams: true, ..Read::default() };
        for stream in streams {
            match self.sized_read(std::slice::from_ref(&stream), budget).await {
                Ok((entries, drained)) => {
                    read.entries.extend(entries);
                    read.all_streams &= drained;
                }
                Err(e) if e.belongs_to_stream() => read.failed.push((stream, e)),
                Err(e) => return Err(e),
            }
        }
        // Nothing refused alone: the error was not one stream's after all.
        if read.failed.is_empty() && read.entries.is_empty() { Err(error) } else { Ok(read) }
    }

    /// Sized reads until one brings something or `block` has passed, the wait between them
    /// growing from `poll` to `poll_max` while they bring nothing.
    async fn read(&mut self) -> Result<Read> {
        let deadline = Instant::now() + self.config.block;
        loop {
            let read = if self.config.streams.is_empty() { Read::default() } else { self.read_once().await? };
            let now = Instant::now();
            let stopping = self.handover.stop.load(Ordering::Relaxed);
            if !read.entries.is_empty() || !read.failed.is_empty() || now >= deadline || stopping {
                if !read.entries.is_empty() {
                    self.idle_wait = self.config.poll;
                }
                return Ok(read);
            }
            tokio::time::sleep(self.idle_wait.min(deadline - now)).await;
            self.idle_wait = (self.idle_wait * 2).min(self.config.poll_max.max(self.config.poll));
        }
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
            let large = read.as_ref().is_ok_and(|r| bytes(&r.entries) > self.config.budget / 2);
            if tx.send(read).await.is_err() || failed {
                break;
            }
            self.sent += 1;
            if large {
                self.wait_done().await;
            }
        }
    }
}

/// One entry of a [`SIZED_READ`] reply: `[id, fields]`, or `[id, size]` for one left in Redis.
pub(super) fn sized_entry(stream: &str, value: Value) -> Result<RawEntry> {
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
    pub(super) fn spawn(conn: Conn, config: SourceConfig, count: Arc<AtomicUsize>) -> ReadAhead {
        let (tx, batches) = mpsc::channel(1);
        let handover = Arc::new(Handover::default());
        let idle_wait = config.poll;
        let reader = Reader {
            conn,
            config,
            count,
            sized_read: redis::Script::new(SIZED_READ),
            handover: handover.clone(),
            sent: 0,
            idle_wait,
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
    /// the read in flight). Refused streams found meanwhile are left to the
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
