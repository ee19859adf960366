//! A projection's state as of any log position, canonical JSON for it, differences between two
//! states, and the records that produced a key: `maestro replay state`, `diff`, `explain`.

use crate::Result;
use crate::rebuild::{Replay, Seed};
use maestro_engine::config::EngineConfig;
use maestro_engine::log::Log;
use maestro_handlers::{Change, Decision, Event, Handler, HandlerError, StateView};
use maestro_schemas::Body;
use maestro_schemas::record::hex;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

pub use maestro_engine::store::Entries;

/// One projection's state at a log position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub projection: String,
    pub seq: u64,
    pub entries: Entries,
}

impl Snapshot {
    /// The state hash, computed as the engine's store computes it.
    pub fn hash(&self) -> String {
        hash_of(self.entries.iter())
    }

    /// Canonical JSON: the same state always prints the same bytes. Keys are JSON strings as
    /// [`key_text`] prints them (a 0 byte between parts as [`KEY_SEPARATOR`]), values are JSON
    /// when they are JSON. With a filter, `state_hash` covers the printed keys and
    /// `projection_hash` the whole state.
    pub fn to_json(&self, keep: impl Fn(&[u8]) -> bool) -> Value {
        let kept: Vec<&(Vec<u8>, Vec<u8>)> = self.entries.iter().filter(|(k, _)| keep(k)).collect();
        let mut state = Map::new();
        for (key, value) in &kept {
            state.insert(key_text(key), value_json(value));
        }
        json!({
            "projection": self.projection,
            "seq": self.seq,
            "state_hash": hash_of(kept.into_iter()),
            "projection_hash": self.hash(),
            "state": state,
        })
    }
}

fn hash_of<'a>(entries: impl Iterator<Item = &'a (Vec<u8>, Vec<u8>)>) -> String {
    let digest = maestro_schemas::digest::StateDigest::of(entries.map(|(k, v)| (k.as_slice(), v.as_slice())));
    hex(&digest.to_bytes())
}

/// How a key's 0 bytes (the separator between its parts, see `maestro_handlers::keys::join`)
/// print: a person can type it, and `key_bytes` reads it back.
pub const KEY_SEPARATOR: char = '|';

/// A key as text a person can type: UTF-8 with each 0 byte as [`KEY_SEPARATOR`], and a
/// literal separator or backslash in a part escaped with a backslash (`t/acme|tpl-1`). A key
/// that is not UTF-8, holds another control character, or starts with `hex:` prints as `hex:`
/// and its bytes. Only the printed form changes: stored keys and state hashes keep the 0 bytes.
pub fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with("hex:") && !text.chars().any(|c| c != '\0' && c.is_control()) => {
            let mut out = String::with_capacity(text.len());
            for c in text.chars() {
                match c {
                    '\0' => out.push(KEY_SEPARATOR),
                    '\\' | KEY_SEPARATOR => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out
        }
        _ => format!("hex:{}", hex(key)),
    }
}

/// Parses a key as `key_text` prints it. Also reads JSON escapes such as `\u0000` for a 0
/// byte, as earlier builds printed keys.
pub fn key_bytes(text: &str) -> Vec<u8> {
    if let Some(bytes) = text.strip_prefix("hex:").and_then(from_hex) {
        return bytes;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            KEY_SEPARATOR => out.push('\0'),
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | KEY_SEPARATOR)) => out.push(escaped),
                Some('u') => {
                    let code: String = chars.by_ref().take(4).collect();
                    match u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                        Some(decoded) if code.len() == 4 => out.push(decoded),
                        _ => out.extend(['\\', 'u'].into_iter().chain(code.chars())),
                    }
                }
                Some(other) => out.extend(['\\', other]),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// The bytes of a hex string, if it is one.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// A value as JSON: parsed when it is JSON, else a string, else `{"hex": ...}`.
pub fn value_json(value: &[u8]) -> Value {
    if let Ok(parsed) = serde_json::from_slice::<Value>(value) {
        return parsed;
    }
    match std::str::from_utf8(value) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => json!({ "hex": hex(value) }),
    }
}

/// The handler named `name` among `handlers`.
pub fn find(handlers: Vec<Arc<dyn Handler>>, name: &str) -> Result<Arc<dyn Handler>> {
    let names: Vec<&str> = handlers.iter().map(|h| h.name()).collect();
    let list = names.join(", ");
    handlers
        .into_iter()
        .find(|h| h.name() == name)
        .ok_or_else(|| crate::ReplayError::Usage(format!("no projection {name:?}; the projections are: {list}")))
}

/// The seq of the last record at or before `time_ms` (records without a time of their own
/// take their predecessor's).
pub fn seq_at_time(log: &Log, time_ms: u64) -> Result<u64> {
    let mut last = 0;
    for record in log.range(1, log.head_seq()) {
        let record = record?;
        let time = match &record.body {
            Body::Entry(entry) => Some(entry.id.ms),
            Body::Clock { time_ms } => Some(*time_ms),
            Body::Quarantine { .. } | Body::Config { .. } | Body::Setting { .. } => None,
        };
        if time.is_some_and(|t| t > time_ms) {
            break;
        }
        last = record.seq;
    }
    Ok(last)
}

/// Where a state was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// The live store at its position `at` (the latest checkpoint), whose stored keys match
    /// its kept digest, and then `tail` records of the log.
    Live { at: u64, tail: u64 },
    /// Every record of the log from the first.
    Log,
}

/// Projection `handler`'s state after record `seq`: from the nearest checkpoint, the live
/// store's state at its position, plus the log's tail when `seq` is beyond it; from the log's
/// first record when `seq` is before it, when the live state does not match its kept digest,
/// or when `from_log` asks for it.
pub fn state_at(
    log: &Log,
    config: &EngineConfig,
    handler: Arc<dyn Handler>,
    seq: u64,
    scratch: &Path,
    from_log: bool,
) -> Result<(Snapshot, StateSource)> {
    let name = handler.name();
    let seq = seq.min(log.head_seq());
    // From the log, the store is not opened (nor, for a tool, copied).
    let live = if from_log { None } else { Some(log.store()?) };
    let at = live.as_ref().map(|live| live.position(name)).transpose()?.unwrap_or(0);
    if let Some(live) = live
        && at > 0
        && at <= seq
        && let Some(entries) = live.entries_if_kept(name)?
    {
        if at == seq {
            return Ok((Snapshot { projection: name.to_string(), seq, entries }, StateSource::Live { at, tail: 0 }));
        }
        let seed = Seed { projection: name, position: at, entries };
        let rebuilt = Replay::new(log, config, vec![handler]).until(seq).seeded(seed).rebuild(scratch)?;
        let snapshot = Snapshot { projection: name.to_string(), seq, entries: rebuilt.store.entries(name)? };
        return Ok((snapshot, StateSource::Live { at, tail: rebuilt.records }));
    }
    let rebuilt = Replay::new(log, config, vec![handler]).until(seq).rebuild(scratch)?;
    Ok((Snapshot { projection: name.to_string(), seq, entries: rebuilt.store.entries(name)? }, StateSource::Log))
}

/// One key that differs between two states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub key: Vec<u8>,
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

/// The keys whose values differ between `before` and `after` (both in key order).
pub fn diff(before: &Entries, after: &Entries) -> Vec<KeyChange> {
    let (mut a, mut b) = (before.iter().peekable(), after.iter().peekable());
    let mut out = Vec::new();
    loop {
        let change = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some((ka, _)), Some((kb, _))) if ka == kb => {
                let ((key, va), (_, vb)) =
                    (a.next().cloned().unwrap_or_default(), b.next().cloned().unwrap_or_default());
                (va != vb).then_some(KeyChange { key, before: Some(va), after: Some(vb) })
            }
            (Some((ka, _)), Some((kb, _))) if ka < kb => a.next().map(|(k, v)| removed(k, v)),
            (Some(_), None) => a.next().map(|(k, v)| removed(k, v)),
            _ => b.next().map(|(k, v)| KeyChange { key: k.clone(), before: None, after: Some(v.clone()) }),
        };
        out.extend(change);
    }
}

fn removed(key: &[u8], value: &[u8]) -> KeyChange {
    KeyChange { key: key.to_vec(), before: Some(value.to_vec()), after: None }
}

impl KeyChange {
    pub fn to_json(&self, projection: &str) -> Value {
        json!({
            "projection": projection,
            "key": key_text(&self.key),
            "before": self.before.as_deref().map(value_json),
            "after": self.after.as_deref().map(value_json),
        })
    }
}

/// Wraps a handler and notes every record whose decision changed `key`.
struct Tracing {
    inner: Arc<dyn Handler>,
    key: Vec<u8>,
    seen: Mutex<Vec<(u64, bool)>>,
}

impl Handler for Tracing {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn sees_own_outputs(&self) -> bool {
        self.inner.sees_own_outputs()
    }

    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> std::result::Result<Decision, HandlerError> {
        let decision = self.inner.handle(state, event)?;
        for change in &decision.changes {
            let (key, deleted) = match change {
                Change::Put { key, .. } => (key, false),
                Change::Delete { key } => (key, true),
            };
            if *key == self.key {
                self.seen.lock().unwrap_or_else(PoisonError::into_inner).push((event.seq(), deleted));
            }
        }
        Ok(decision)
    }
}

/// The records that wrote a key, as (seq, deleted), and its current value.
pub type Explained = (Vec<(u64, bool)>, Option<Vec<u8>>);

/// Why a key holds its value: every record that wrote it (`deleted` when it removed it), in log
/// order, up to `seq`. The last one produced the current value.
pub fn explain(
    log: &Log,
    config: &EngineConfig,
    handler: Arc<dyn Handler>,
    key: &[u8],
    seq: u64,
    scratch: &Path,
) -> Result<Explained> {
    let name = handler.name();
    let tracing = Arc::new(Tracing { inner: handler, key: key.to_vec(), seen: Mutex::new(Vec::new()) });
    let handlers = vec![tracing.clone() as Arc<dyn Handler>];
    let rebuilt = Replay::new(log, config, handlers).until(seq).rebuild(scratch)?;
    let current = rebuilt.store.entries(name)?.into_iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let seen = std::mem::take(&mut *tracing.seen.lock().unwrap_or_else(PoisonError::into_inner));
    Ok((seen, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Entries {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    fn append(log: &mut maestro_engine::log::Log, streams: &[&str], from: u64, n: u64) {
        use maestro_schemas::{Entry, EntryId, Status};
        let records = (from..from + n)
            .map(|i| maestro_engine::log::NewRecord {
                body: Body::Entry(Entry {
                    stream: streams[i as usize % streams.len()].to_string(),
                    id: EntryId { ms: 1_000 + i, seq: 0 },
                    fields: vec![("data".into(), b"{}".to_vec())],
                    status: Status::Accepted,
                }),
                request: None,
            })
            .collect();
        log.append(records).unwrap();
    }

    /// The nearest checkpoint is the live store at its position: from there plus the log's
    /// tail, the state equals a replay from the first record; before that position, and when
    /// the live state does not match its kept digest, the log is replayed from the start.
    #[test]
    fn state_from_the_live_store_and_the_tail_equals_a_replay_from_the_start() {
        use maestro_engine::dispatch::{Decoder, Dispatcher, OutputStamp};
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { data_dir: dir.path().to_path_buf(), ..EngineConfig::default() };
        let streams = [config.streams.templates_usage.as_str(), config.streams.k8s_status.as_str()];
        let mut log = Log::open(dir.path(), 8 << 20).unwrap();
        append(&mut log, &streams, 0, 50);
        let handler: Arc<dyn Handler> = Arc::new(maestro_handlers::stream_stats::StreamStats);
        let stamp = OutputStamp { origin: "test".into(), dead_letter_maxlen: 100 };
        let decoder = Decoder { streams: config.streams.clone(), limits: config.limits };
        let live = log.store().unwrap();
        let mut dispatcher = Dispatcher::new(vec![handler.clone()], live, &log, stamp, decoder, 10).unwrap();
        assert_eq!(dispatcher.catch_up(&mut log, 16, 3).unwrap().records, 50);
        append(&mut log, &streams, 50, 30);
        let scratch = tempfile::tempdir().unwrap();
        let at = |seq: u64, from_log: bool, sub: &str| {
            state_at(&log, &config, handler.clone(), seq, &scratch.path().join(sub), from_log).unwrap()
        };
        let (replayed, source) = at(80, true, "a");
        assert_eq!(source, StateSource::Log);
        let (seeded, source) = at(80, false, "b");
        assert_eq!(source, StateSource::Live { at: 50, tail: 30 });
        assert_eq!(seeded, replayed);
        assert_eq!(at(50, false, "c"), (at(50, true, "d").0, StateSource::Live { at: 50, tail: 0 }));
        assert_eq!(at(20, false, "e"), (at(20, true, "f").0, StateSource::Log), "before the live position");
        // A live state changed behind the engine's back is not trusted.
        let tree = log.store_db().unwrap().open_tree("state").unwrap();
        let key: Vec<u8> = [b"pstream_stats\0".as_slice(), streams[0].as_bytes()].concat();
        assert!(tree.insert(key, b"{}".as_slice()).unwrap().is_some());
        assert_eq!(at(80, false, "g"), (replayed.clone(), StateSource::Log));
    }

    #[test]
    fn diff_names_added_removed_and_changed_keys() {
        let before = entries(&[("a", "1"), ("b", "2"), ("d", "4")]);
        let after = entries(&[("b", "2"), ("c", "3"), ("d", "5")]);
        let changes = diff(&before, &after);
        let keys: Vec<(&[u8], bool, bool)> =
            changes.iter().map(|c| (c.key.as_slice(), c.before.is_some(), c.after.is_some())).collect();
        assert_eq!(keys, [(&b"a"[..], true, false), (&b"c"[..], false, true), (&b"d"[..], true, true)]);
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn keys_print_and_parse_back() {
        let keys: [&[u8]; 7] =
            [b"t/acme\0tpl-1", &[0xff, 0, 1], b"", b"a|b\0c\\d\0", b"hex:4142", b"tab\there", b"\\u0041"];
        for key in keys {
            assert_eq!(key_bytes(&key_text(key)), key, "{}", key_text(key));
        }
        assert_eq!(key_text(b"t/acme\0tpl-1"), "t/acme|tpl-1", "typeable");
        assert_eq!(key_text(b"a|b\0c\\d"), "a\\|b|c\\\\d", "a literal separator or backslash is escaped");
        assert_eq!(key_text(b"maestro:streams:x"), "maestro:streams:x", "other punctuation prints as is");
        assert_eq!(key_bytes("t/acme\\u0000tpl-1"), b"t/acme\0tpl-1", "as earlier builds printed it");
        let snapshot = Snapshot { projection: "p".into(), seq: 3, entries: entries(&[("k", "{\"n\":1}"), ("s", "x")]) };
        let text = snapshot.to_json(|_| true).to_string();
        assert_eq!(text, snapshot.to_json(|_| true).to_string(), "canonical: the same bytes every time");
        assert!(text.contains("\"k\":{\"n\":1}") && text.contains("\"s\":\"x\""), "{text}");
    }
}
