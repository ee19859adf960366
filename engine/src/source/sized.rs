//! Entries read again from a pending list, sized inside Redis as new ones are (see
//! [`super::ReadAhead`]): this consumer's own pending entries at connect, and entries claimed
//! from a consumer that stopped. An entry over the size limit left pending by a crash would
//! otherwise cross the connection whole once before it is rejected as `too_large`, and a
//! pending list of large entries would be read at `count` entries whatever their size.

use super::read_ahead::sized_entry;
use super::{RawEntry, text};
use crate::error::{EngineError, Result};
use maestro_schemas::EntryId;
use redis::Value;

/// This consumer's pending entries of KEYS[1] after id ARGV[6]: `XREADGROUP GROUP ARGV[1]
/// ARGV[2]`, at most ARGV[3] entries, until they add up to ARGV[5] bytes; an entry over ARGV[4]
/// bytes is answered as `[id, size]`, one deleted while pending as `[id, nil]` (as Redis answers
/// it). Entries are taken a few at a time, never more than the remaining budget holds at the
/// size limit each.
pub(super) const SIZED_PENDING: &str = r"
local count, limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local after, used, out = ARGV[6], 0, {}
while #out < count and used < budget do
  local step = math.max(1, math.min(count - #out, math.floor((budget - used) / limit)))
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', step, 'STREAMS', KEYS[1], after)
  local got = read and read[1][2] or {}
  for _, entry in ipairs(got) do
    after = entry[1]
    if entry[2] then
      local size = 0
      for _, part in ipairs(entry[2]) do size = size + #part end
      if size > limit then out[#out + 1] = {entry[1], size}
      else out[#out + 1] = entry; used = used + size end
    else
      out[#out + 1] = entry
    end
  end
  if #got < step then break end
end
return out
";

/// Claims entries of KEYS[1] idle for ARGV[3] ms from any consumer of group ARGV[1] for
/// consumer ARGV[2], scanning from ARGV[4]: `XAUTOCLAIM` a few at a time, at most ARGV[5]
/// entries, until they add up to ARGV[7] bytes; an entry over ARGV[6] bytes is answered as
/// `[id, size]`. The reply: `{next, entries, deleted}` as `XAUTOCLAIM`'s own.
pub(super) const SIZED_CLAIM: &str = r"
local count, limit, budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local start, used, out, deleted = ARGV[4], 0, {}, {}
while #out < count and used < budget do
  local step = math.max(1, math.min(count - #out, math.floor((budget - used) / limit)))
  local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], start, 'COUNT', step)
  start = reply[1]
  for _, entry in ipairs(reply[2]) do
    local size = 0
    for _, part in ipairs(entry[2]) do size = size + #part end
    if size > limit then out[#out + 1] = {entry[1], size}
    else out[#out + 1] = entry; used = used + size end
  end
  for _, id in ipairs(reply[3] or {}) do deleted[#deleted + 1] = id end
  if start == '0-0' then break end
end
return {start, out, deleted}
";

/// The entries of a sized reply's list.
pub(super) fn sized_entries(stream: &str, value: Value) -> Result<Vec<RawEntry>> {
    match value {
        Value::Array(entries) => entries.into_iter().map(|e| sized_entry(stream, e)).collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(EngineError::Reply(format!("a sized read's entries: {other:?}").chars().take(300).collect())),
    }
}

/// A [`SIZED_CLAIM`] reply: the claimed entries, where to continue, and the ids deleted while
/// pending.
pub(super) fn claim_reply(stream: &str, value: Value) -> Result<(Vec<RawEntry>, String, Vec<EntryId>)> {
    let Value::Array(parts) = value else {
        return Err(EngineError::Reply("a sized claim that is not an array".into()));
    };
    let mut parts = parts.into_iter();
    let next = parts.next().as_ref().and_then(text).unwrap_or_else(|| "0-0".into());
    let claimed = match parts.next() {
        Some(list) => sized_entries(stream, list)?,
        None => Vec::new(),
    };
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.iter().filter_map(|v| text(v).and_then(|t| EntryId::parse(&t).ok())).collect(),
        _ => Vec::new(),
    };
    Ok((claimed, next, deleted))
}
