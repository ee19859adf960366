//! Step 5's Redis side: outbox entries published once each, whatever crash or failover
//! interrupts a publication, and the publish marks lowered when the log was cut back.

use super::{Outgoing, Source};
use crate::error::{EngineError, Result};
use maestro_handlers::ELAPSED_MS;
use maestro_schemas::Fields;
use maestro_schemas::own::OutputKey;

/// The start of both publish scripts: this consumer's high-water mark `(ms, mi)` read from
/// the guard hash KEYS[1], field ARGV[1] (`-1, -1` when it has none).
macro_rules! read_mark {
    () => {
        r"
local mark = redis.call('HGET', KEYS[1], ARGV[1])
local ms, mi = -1, -1
if mark then
  local s, i = string.match(mark, '^(%d+):(%d+)$')
  if s then ms, mi = tonumber(s), tonumber(i) end
end
"
    };
}

/// Publishes a run of outbox entries, skipping those this consumer already published. KEYS[1]
/// is the guard hash; ARGV[1] the consumer; then, per entry: stream, seq, index, the number of
/// XADD arguments, and those arguments (everything after the key). Entries come in (seq, index)
/// order, so one high-water mark per consumer makes a re-publish after a crash a no-op. The
/// target streams are arguments, not declared keys: fine on one server, not on a cluster
/// (there [`CLUSTER_PUBLISH_SCRIPT`] goes instead).
pub(super) const PUBLISH_SCRIPT: &str = concat!(
    read_mark!(),
    r"
local published, p = 0, 2
while p <= #ARGV do
  local seq, index, n = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  if seq > ms or (seq == ms and index > mi) then
    redis.call('XADD', ARGV[p], unpack(ARGV, p + 4, p + 3 + n))
    ms, mi, published = seq, index, published + 1
  end
  p = p + 4 + n
end
if published > 0 then redis.call('HSET', KEYS[1], ARGV[1], ms .. ':' .. mi) end
return published
"
);

/// Lowers this consumer's publish mark (KEYS[1], field ARGV[1]) to seq ARGV[2] when it stands
/// past it; returns the mark it found there, or false when it was not past.
const LOWER_MARK_SCRIPT: &str = r"
local mark = redis.call('HGET', KEYS[1], ARGV[1])
if not mark then return false end
local s = string.match(mark, '^(%d+):')
if s and tonumber(s) > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
  return mark
end
return false
";

/// [`PUBLISH_SCRIPT`] for one target stream on a Redis Cluster. KEYS[1] is the stream's guard
/// hash, KEYS[2] the stream, both in one slot (the guard's key carries the stream's hash tag,
/// [`super::slot_tag`]); ARGV[1] the consumer; then, per entry: seq, index, the number of XADD
/// arguments, and those arguments.
///
/// Why a guard per stream rather than one: a script on a cluster may only touch keys of one
/// slot, and the nine streams lie in different slots. Each stream's entries come in (seq,
/// index) order, a subsequence of the outbox's order, so a high-water mark per stream and
/// consumer skips exactly what was already published to that stream: an output is written
/// once whichever stream's call a crash interrupted. The mark and the entries it covers change
/// in one script on one master, so they replicate together; the caller then `WAIT`s for a
/// replica before letting the outbox entry go, so a failover cannot lose an output (and its
/// mark) that the engine already counts as published.
pub(super) const CLUSTER_PUBLISH_SCRIPT: &str = concat!(
    read_mark!(),
    r"
local published, p = 0, 2
while p <= #ARGV do
  local seq, index, n = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
  if seq > ms or (seq == ms and index > mi) then
    redis.call('XADD', KEYS[2], unpack(ARGV, p + 3, p + 2 + n))
    ms, mi, published = seq, index, published + 1
  end
  p = p + 3 + n
end
if published > 0 then redis.call('HSET', KEYS[1], ARGV[1], ms .. ':' .. mi) end
return published
"
);

impl Source {
    /// The guard hash of `stream` on a cluster: the group's publish key with the stream's hash
    /// tag, so that it lies in the stream's slot.
    pub(super) fn guard_key(&self, stream: &str) -> Result<String> {
        let tag = super::slot_tag(stream).ok_or_else(|| {
            EngineError::Config(format!("stream {stream:?} has a `}}` but no hash tag: unusable on a cluster"))
        })?;
        Ok(format!("{}:{tag}", self.config.published_key))
    }

    /// Lowers this consumer's publish mark to `head_seq` when it stands past the log's head: the
    /// log was cut back (restored from a backup, `--accept-truncated-log`), and outputs of the
    /// records it appends from now on would otherwise share seqs with outputs already
    /// published and be skipped. Returns the mark it lowered.
    /// On a cluster every stream's guard is lowered (see [`CLUSTER_PUBLISH_SCRIPT`]).
    pub async fn lower_publish_mark(&mut self, head_seq: u64) -> Result<Option<String>> {
        let guards = if self.cluster {
            self.config.streams.clone().iter().map(|s| self.guard_key(s)).collect::<Result<Vec<_>>>()?
        } else {
            vec![self.config.published_key.clone()]
        };
        let script = redis::Script::new(LOWER_MARK_SCRIPT);
        let mut lowered = None;
        for guard in guards {
            let mut conn = self.writer().await?;
            let mut invocation = script.key(&guard);
            invocation.arg(&self.config.consumer).arg(head_seq).arg(u32::MAX);
            let result = invocation.invoke_async::<Option<String>>(&mut conn).await;
            drop(invocation);
            lowered = lowered.or(self.forget_on_io_error(result)?);
        }
        Ok(lowered)
    }

    /// Publishes outbox entries in order through [`PUBLISH_SCRIPT`] (EVALSHA, loaded once),
    /// many entries per call; on a cluster, through [`CLUSTER_PUBLISH_SCRIPT`], one call per
    /// target stream. Returns how many were new. Each entry is marked as it goes out, over its
    /// final bytes (the elapsed time filled in), with the key loaded at connection.
    pub async fn publish(&mut self, items: &[Outgoing<'_>]) -> Result<u64> {
        let Some(key) = self.output_key.clone() else {
            return Err(EngineError::Reply("no output key loaded: nothing is published unmarked".into()));
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut published = 0;
        for chunk in items.chunks(128) {
            published += if self.cluster {
                self.publish_per_stream(&key, chunk, now_ms).await?
            } else {
                self.publish_chunk(&key, chunk, now_ms).await?
            };
        }
        Ok(published)
    }

    async fn publish_chunk(&mut self, key: &OutputKey, chunk: &[Outgoing<'_>], now_ms: u64) -> Result<u64> {
        let mut conn = self.writer().await?;
        let mut invocation = self.publish_script.key(&self.config.published_key);
        invocation.arg(&self.config.consumer);
        for item in chunk {
            let args = xadd_args(key, item, now_ms)?;
            invocation.arg(item.stream).arg(item.seq).arg(item.index).arg(args.len()).arg(args);
        }
        let result = invocation.invoke_async::<u64>(&mut conn).await;
        drop(invocation);
        self.forget_on_io_error(result)
    }

    /// One [`CLUSTER_PUBLISH_SCRIPT`] call per target stream of `chunk`, each followed by a
    /// `WAIT` for `wait_replicas` replicas of that stream's master: a publication is done only
    /// once a replica holds it. Too few replicas in time is an error, so the outbox keeps the
    /// entries and the next publication (skipping what the guard saw) tries again.
    async fn publish_per_stream(&mut self, key: &OutputKey, chunk: &[Outgoing<'_>], now_ms: u64) -> Result<u64> {
        let mut streams: Vec<&str> = Vec::new();
        for item in chunk {
            if !streams.contains(&item.stream) {
                streams.push(item.stream);
            }
        }
        let mut published = 0;
        for stream in streams {
            let guard = self.guard_key(stream)?;
            let mut conn = self.writer().await?;
            let mut invocation = self.cluster_publish_script.key(&guard);
            invocation.key(stream).arg(&self.config.consumer);
            for item in chunk.iter().filter(|item| item.stream == stream) {
                let args = xadd_args(key, item, now_ms)?;
                invocation.arg(item.seq).arg(item.index).arg(args.len()).arg(args);
            }
            let result = invocation.invoke_async::<u64>(&mut conn).await;
            drop(invocation);
            published += self.forget_on_io_error(result)?;
            let (wanted, wait_ms) = (self.config.wait_replicas, self.config.wait_ms);
            if wanted > 0 {
                let acked = conn.wait_replicas(stream, wanted, wait_ms).await;
                let acked = self.forget_on_io_error(acked)?;
                if acked < wanted {
                    return Err(EngineError::Reply(format!(
                        "{acked} of {wanted} replicas of {stream}'s master acknowledged its publication within \
                         {wait_ms} ms; publishing again"
                    )));
                }
            }
        }
        Ok(published)
    }
}

/// The XADD arguments of one outbox entry (everything after the key): its length cap, `*`, and
/// its fields with the elapsed time filled in and the group's mark sealed over them.
fn xadd_args(key: &OutputKey, item: &Outgoing<'_>, now_ms: u64) -> Result<Vec<Vec<u8>>> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(4 + 2 * item.fields.len());
    if let Some(maxlen) = item.maxlen {
        args.extend([b"MAXLEN".to_vec(), b"~".to_vec(), maxlen.to_string().into_bytes()]);
    }
    args.push(b"*".to_vec());
    let mut elapsed = item.elapsed_from_ms.map(|start| now_ms.saturating_sub(start));
    let mut fields: Fields = Vec::with_capacity(item.fields.len());
    for (name, value) in item.fields {
        let value = match elapsed.and_then(|ms| fill_elapsed(value, ms)) {
            Some(filled) => {
                elapsed = None;
                filled
            }
            None => value.clone(),
        };
        fields.push((name.clone(), value));
    }
    if !key.seal(item.stream, &mut fields) {
        return Err(EngineError::State(format!(
            "outbox entry {}-{} has no single output_id to carry its mark",
            item.seq, item.index
        )));
    }
    args.extend(fields.into_iter().flat_map(|(name, value)| [name, value]));
    Ok(args)
}

/// `value` with its first [`ELAPSED_MS`] placeholder replaced by `ms`, if it has one.
fn fill_elapsed(value: &[u8], ms: u64) -> Option<Vec<u8>> {
    let marker = ELAPSED_MS.as_bytes();
    // A template answer is tens of KB: a byte-by-byte window compare cost more than the XADD.
    let at = memchr::memmem::find(value, marker)?;
    let mut filled = Vec::with_capacity(value.len());
    filled.extend_from_slice(&value[..at]);
    filled.extend_from_slice(ms.to_string().as_bytes());
    filled.extend_from_slice(&value[at + marker.len()..]);
    Some(filled)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_elapsed_placeholder_is_filled_in() {
        let value = format!(r#"{{"duration_ms":{0},"note":"{0}"}}"#, super::ELAPSED_MS);
        let filled = super::fill_elapsed(value.as_bytes(), 42).unwrap();
        assert_eq!(filled, format!(r#"{{"duration_ms":42,"note":"{}"}}"#, super::ELAPSED_MS).into_bytes());
        assert_eq!(super::fill_elapsed(b"{}", 42), None);
    }
}
