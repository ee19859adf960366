//! The consumer group on each stream: creating it, its gauges, and where it stands against
//! the log (`XINFO GROUPS`/`CONSUMERS`, `XGROUP SETID`).

use super::{GroupInfo, Source, items, text};
use crate::error::{EngineError, Result};
use maestro_schemas::EntryId;
use redis::Value;
use std::collections::{BTreeMap, HashMap};

/// Counts the entries of KEYS[1] in the id range ARGV[2]..ARGV[3] that are not pending in group
/// ARGV[1], scanning at most ARGV[4] entries: the entries a group position would skip. Only ids
/// come back, so an entry's bytes never leave Redis. Returns {count, first id, last id, scanned}.
const SKIPPED_SCRIPT: &str = r"
local key, group, start, stop, cap = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local count, first, last, scanned = 0, '', '', 0
while scanned < cap do
  local page = redis.call('XRANGE', key, start, stop, 'COUNT', 1000)
  if #page == 0 then break end
  local pending = {}
  local rows = redis.call('XPENDING', key, group, page[1][1], page[#page][1], #page)
  for _, row in ipairs(rows) do pending[row[1]] = true end
  for _, entry in ipairs(page) do
    if not pending[entry[1]] then
      count = count + 1
      if first == '' then first = entry[1] end
      last = entry[1]
    end
  end
  scanned = scanned + #page
  start = '(' .. page[#page][1]
end
return {count, first, last, scanned}
";

/// How many entries one skip check looks at, at most (the count is then a lower bound).
pub const SKIP_SCAN_CAP: u64 = 100_000;

/// Where the group stands on one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPosition {
    /// The group's `last-delivered-id`: `>` reads continue after it.
    pub last_delivered: EntryId,
    /// Every consumer the group knows on this stream.
    pub consumers: Vec<String>,
}

/// Entries a group position would skip: never delivered to anyone, not pending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub count: u64,
    pub first: Option<EntryId>,
    pub last: Option<EntryId>,
}

/// A reply's map (RESP3) or flat name/value list (RESP2) as name → value.
fn fields_of(value: &Value) -> HashMap<String, &Value> {
    match value {
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        other => items(other)
            .unwrap_or_default()
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((text(k)?, v)),
                _ => None,
            })
            .collect(),
    }
}

fn number(value: Option<&&Value>) -> Option<u64> {
    match value {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        Some(other) => text(other).and_then(|t| t.parse().ok()),
        None => None,
    }
}

impl Source {
    /// Creates the group on every stream where it is missing: at the engine's own cursor when
    /// the log already has entries of that stream (Redis lost the group, or lost everything),
    /// else at `0`, so that a first start reads what producers wrote before it. Returns the
    /// streams where Redis refused for a reason of that key's own (see
    /// [`EngineError::belongs_to_stream`]); any other error fails the whole call.
    pub async fn ensure_groups(
        &mut self,
        cursor: impl Fn(&str) -> Result<Option<EntryId>>,
    ) -> Result<Vec<(String, EngineError)>> {
        let mut failed = Vec::new();
        for stream in self.config.streams.clone() {
            match self.ensure_group(&stream, cursor(&stream)?).await {
                Err(e) if e.belongs_to_stream() => failed.push((stream, e)),
                other => other?,
            }
        }
        Ok(failed)
    }

    /// Creates the group on one stream if it is missing, at `cursor` (or `0`).
    pub async fn ensure_group(&mut self, stream: &str, cursor: Option<EntryId>) -> Result<()> {
        let start = cursor.map(|id| id.to_string()).unwrap_or_else(|| "0".into());
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(stream).arg(&self.config.group).arg(&start).arg("MKSTREAM");
        match self.run::<Value>(&cmd).await {
            Ok(_) => tracing::info!(stream, start, group = self.config.group, "consumer group created"),
            Err(EngineError::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// `XINFO GROUPS` of one stream: this group's fields, `None` when the stream has no such
    /// group (or no key).
    async fn own_group(&mut self, stream: &str) -> Result<Option<HashMap<String, Value>>> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(stream);
        let value: Value = match self.run(&cmd).await {
            Ok(value) => value,
            Err(EngineError::Redis(e)) if e.code() == Some("ERR") => return Ok(None),
            Err(e) => return Err(e),
        };
        for group in items(&value).unwrap_or_default() {
            let fields = fields_of(group);
            if fields.get("name").and_then(|v| text(v)).as_deref() == Some(self.config.group.as_str()) {
                return Ok(Some(fields.into_iter().map(|(k, v)| (k, v.clone())).collect()));
            }
        }
        Ok(None)
    }

    /// `XINFO GROUPS` for every stream: this group's pending count and lag. A stream Redis
    /// refuses for a reason of its own is left out (it is reported where it is read).
    pub async fn group_info(&mut self) -> Result<BTreeMap<String, GroupInfo>> {
        let mut out = BTreeMap::new();
        for stream in self.config.streams.clone() {
            let fields = match self.own_group(&stream).await {
                Ok(Some(fields)) => fields,
                Ok(None) => continue,
                Err(e) if e.belongs_to_stream() => continue,
                Err(e) => return Err(e),
            };
            let pending = number(fields.get("pending").as_ref()).unwrap_or(0);
            out.insert(stream, GroupInfo { pending, lag: number(fields.get("lag").as_ref()) });
        }
        Ok(out)
    }

    /// Where the group stands on `stream`, `None` without a group.
    pub async fn group_position(&mut self, stream: &str) -> Result<Option<GroupPosition>> {
        let Some(fields) = self.own_group(stream).await? else { return Ok(None) };
        let last = fields.get("last-delivered-id").and_then(text).unwrap_or_default();
        let last_delivered = EntryId::parse(&last).map_err(|e| EngineError::Reply(e.to_string()))?;
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("CONSUMERS").arg(stream).arg(&self.config.group);
        let value: Value = self.run(&cmd).await?;
        let consumers = items(&value)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| fields_of(c).get("name").and_then(|v| text(v)))
            .collect();
        Ok(Some(GroupPosition { last_delivered, consumers }))
    }

    /// The entries of `stream` after `after` (from the start when `None`) up to `upto` that are
    /// not pending in the group (see [`SKIPPED_SCRIPT`]).
    pub async fn skipped(&mut self, stream: &str, after: Option<EntryId>, upto: EntryId) -> Result<Skipped> {
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let mut conn = self.writer().await?;
        let mut invocation = self.skipped_script.key(stream);
        invocation.arg(&self.config.group).arg(start).arg(upto.to_string()).arg(SKIP_SCAN_CAP);
        let result = invocation.invoke_async::<(u64, String, String, u64)>(&mut conn).await;
        drop(invocation);
        let (count, first, last, _) = self.forget_on_io_error(result)?;
        let id = |t: String| EntryId::parse(&t).ok();
        Ok(Skipped { count, first: id(first), last: id(last) })
    }

    /// Moves the group's position on `stream` back to `id` (`0` when `None`): `>` reads then
    /// deliver every entry after it again.
    pub async fn set_group_id(&mut self, stream: &str, id: Option<EntryId>) -> Result<()> {
        let id = id.map_or_else(|| "0".to_string(), |id| id.to_string());
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("SETID").arg(stream).arg(&self.config.group).arg(id);
        let _: Value = self.run(&cmd).await?;
        Ok(())
    }
}

pub(super) fn script() -> redis::Script {
    redis::Script::new(SKIPPED_SCRIPT)
}
