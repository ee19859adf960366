//! The log's anchors: `<seq> <hash>` of a head the log once had, kept in the data dir (`HEAD`),
//! in the configured `anchor_file` and under a Redis key. sled can recover a damaged file as a
//! shorter but self-consistent log, even an empty one; only an anchor tells that log from a
//! whole one. So the engine refuses to start on a log that is shorter than, or disagrees with,
//! any anchor it can read, unless the operator chose to go on (`--accept-truncated-log`): that
//! choice is a setting record in the log, naming what disagreed and what the log had, so an
//! auditor sees it and later starts accept that same anchor again. The anchors outside the data
//! dir only ever move forward, so a log that lost records cannot pull them back.

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::log::{Log, NewRecord};
use crate::source::Source;
use maestro_schemas::Body;
use maestro_schemas::record::{hash_stored, hex};
use std::path::Path;

/// The name of the setting records that hold an operator's choice to go on with a log that
/// disagrees with an anchor: this, the anchor's seq, its hash and which anchor it is.
pub const ACCEPTED: &str = "accepted_truncated_log";

/// A head an anchor names, and which anchor it is (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub what: String,
    pub seq: u64,
    pub hash: String,
}

impl Anchor {
    /// Parses `<seq> <hash>`.
    pub fn parse(text: &str, what: impl Into<String>) -> Result<Anchor> {
        let what = what.into();
        let bad = || EngineError::Damaged(format!("the {what} is not `<seq> <hash>`: {:?}", text.trim()));
        let (seq, hash) = text.trim().split_once(' ').ok_or_else(bad)?;
        Ok(Anchor { seq: seq.parse().map_err(|_| bad())?, hash: hash.to_string(), what })
    }

    fn accepted_name(&self) -> String {
        format!("{ACCEPTED} {} {} {}", self.seq, self.hash, self.what)
    }
}

/// Whether the log holds a record an anchor names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holds {
    Yes,
    /// The log ends before the anchored seq.
    Shorter,
    /// The log has another record at that seq (its hash, hex).
    Differs(String),
}

/// Whether `log` holds record `seq` with chain hash `hash` (hex).
pub fn holds(log: &Log, seq: u64, hash: &str) -> Result<Holds> {
    if log.head_seq() < seq {
        return Ok(Holds::Shorter);
    }
    let actual = match seq {
        0 => return Ok(Holds::Yes),
        _ => match log.stored(seq)? {
            Some(stored) => hex(&hash_stored(&stored)),
            None => return Ok(Holds::Shorter),
        },
    };
    Ok(if actual == hash { Holds::Yes } else { Holds::Differs(actual) })
}

/// Writes `<seq> <hash>` to `path` (temporary file, then rename, so it is never half written).
pub fn write_anchor_file(path: &Path, seq: u64, hash: &[u8; 32]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |source| EngineError::DataDir { path: path.to_path_buf(), source };
    std::fs::write(&tmp, format!("{seq} {}\n", hex(hash))).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Sets KEYS[1] to ARGV[2] unless it holds `<seq> <hash>` with a seq at or past ARGV[1].
const ADVANCE_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local seq = tonumber(string.match(held, '^(%d+) '))
  if seq and seq >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Sets the Redis anchor `key` to the head `(seq, hash)` unless it already names that seq or a
/// later one, compared and set in one script.
pub async fn advance_redis(source: &mut Source, key: &str, seq: u64, hash: &[u8; 32]) -> Result<()> {
    let text = format!("{seq} {}", hex(hash));
    let _: i64 = source.run(redis::cmd("EVAL").arg(ADVANCE_SCRIPT).arg(1).arg(key).arg(seq).arg(text)).await?;
    Ok(())
}

/// The Redis anchor under `key`, if set.
pub async fn read_redis(source: &mut Source, key: &str) -> Result<Option<String>> {
    source.run(redis::cmd("GET").arg(key)).await
}

/// The anchor in `path`, if the file exists.
pub fn read_file(path: &Path) -> Result<Option<Anchor>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Anchor::parse(&text, format!("anchor file {}", path.display())).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EngineError::DataDir { path: path.to_path_buf(), source }),
    }
}

/// Writes the head to the anchor file unless the file already names that seq or a later one.
pub fn advance_file(path: &Path, seq: u64, hash: &[u8; 32]) -> Result<()> {
    if read_file(path).ok().flatten().is_some_and(|held| held.seq >= seq) {
        return Ok(());
    }
    write_anchor_file(path, seq, hash)
}

/// Checks the anchors readable without Redis: the data dir's `HEAD` (a log without one is
/// refused too) and the anchor file.
pub fn check_local(log: &mut Log, config: &EngineConfig) -> Result<()> {
    let head_anchor = format!("head anchor {}", log.anchor_path().display());
    match log.anchor()? {
        Some((seq, hash)) => {
            settle(log, &Anchor { what: head_anchor, seq, hash }, config.accept_truncated_log, Remembered::No)?
        }
        None => {
            let detail = format!(
                "the data dir has a log but its {head_anchor} is missing; the log ends at seq {} hash {}",
                log.head_seq(),
                hex(&log.head_hash())
            );
            // The accepting record's append writes the anchor again.
            decide(log, format!("{ACCEPTED} missing HEAD"), detail, config.accept_truncated_log, Remembered::No)?;
        }
    }
    if let Some(path) = &config.anchor_file
        && let Some(anchor) = read_file(path)?
    {
        settle(log, &anchor, config.accept_truncated_log, Remembered::Yes)?;
    }
    Ok(())
}

/// Checks the anchor kept in Redis under `key` (`text`, its value, if set).
pub fn check_redis(log: &mut Log, key: &str, text: Option<String>, accept: bool) -> Result<()> {
    let Some(text) = text else { return Ok(()) };
    settle(log, &Anchor::parse(&text, format!("redis anchor key {key}"))?, accept, Remembered::Yes)
}

/// Whether an earlier acceptance of the same anchor holds. It does for the anchors outside the
/// data dir, which never move back and so name the lost head until the log passes it; the
/// data dir's own anchor follows the log, so after an acceptance it agrees again, and a new
/// disagreement is a new loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Remembered {
    Yes,
    No,
}

/// Goes on when the log holds the anchored record; else refuses, or records the operator's
/// choice to go on.
fn settle(log: &mut Log, anchor: &Anchor, accept: bool, remembered: Remembered) -> Result<()> {
    let log_has = match holds(log, anchor.seq, &anchor.hash)? {
        Holds::Yes => return Ok(()),
        Holds::Shorter => format!("the log ends at seq {} hash {}", log.head_seq(), hex(&log.head_hash())),
        Holds::Differs(actual) => {
            format!("the log's record {} has hash {actual} (the log ends at seq {})", anchor.seq, log.head_seq())
        }
    };
    let detail = format!("the {} records seq {} hash {}; {log_has}", anchor.what, anchor.seq, anchor.hash);
    decide(log, anchor.accepted_name(), detail, accept, remembered)
}

fn decide(log: &mut Log, name: String, detail: String, accept: bool, remembered: Remembered) -> Result<()> {
    if remembered == Remembered::Yes
        && let Some(earlier) = log.setting(&name)?
    {
        tracing::warn!(accepted = earlier, "the log disagrees with an anchor, as an operator accepted earlier");
        metrics::gauge!("maestro_anchor_accepted").set(1.0);
        return Ok(());
    }
    if !accept {
        return Err(EngineError::Damaged(format!(
            "refusing to start: {detail}: records were lost or rewritten. Restore the data dir from a backup, or \
             start once with `maestro run --accept-truncated-log` to go on from this log (the choice is recorded \
             in it)"
        )));
    }
    tracing::warn!(
        detail,
        "going on with a log that disagrees with an anchor (--accept-truncated-log); recorded in the log"
    );
    log.append(vec![NewRecord { body: Body::Setting { name, value: detail }, request: None }])?;
    metrics::gauge!("maestro_anchor_accepted").set(1.0);
    Ok(())
}
