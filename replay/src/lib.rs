//! Offline tools over a data directory: export, verify, rebuild, state, diff, explain, sandbox.
//! They open the log directly and never talk to Redis, so they work on a copy of a data dir on
//! a machine with no server.

pub mod export;
pub mod rebuild;
pub mod sandbox;
pub mod state;

use maestro_engine::datadir::DataDir;
use maestro_engine::error::EngineError;
use maestro_engine::log::Log;
use maestro_engine::segments::{FileChecks, SEGMENTS_DIR, check_files};
use maestro_schemas::ids::format_utc_ms;
use maestro_schemas::record::hex;
use maestro_schemas::{Body, Record, Status};
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0} holds no maestro log (no db/ inside)")]
    NoLog(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("history repository: {0}")]
    History(String),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, ReplayError>;

/// Small cache: the tools read each record once.
const TOOL_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Opens an existing data dir's log for a tool that only reads (export, verify, state, diff,
/// explain, check): sled opens a copy of `db/`, so not a byte of the data dir changes, damaged
/// or not (see `maestro_engine::read_only`). Takes the lock shared, so never beside a live
/// engine, and appends to the returned log are refused.
pub fn open_log(data_dir: &Path) -> Result<(DataDir, Log)> {
    if !data_dir.join("db").is_dir() {
        return Err(ReplayError::NoLog(data_dir.display().to_string()));
    }
    let dir = DataDir::open_existing(data_dir)?;
    let log = Log::open_copy(dir.path(), TOOL_CACHE_BYTES, false)?;
    Ok((dir, log))
}

/// [`open_log`], with every sealed segment file checked on its own (see
/// `maestro_engine::segments::check`) on the other cores while sled's files are copied and
/// opened: what [`verify_log_checked`] takes.
pub fn open_log_checking_segments(data_dir: &Path) -> Result<(DataDir, Log, FileChecks)> {
    if !data_dir.join("db").is_dir() {
        return Err(ReplayError::NoLog(data_dir.display().to_string()));
    }
    let dir = DataDir::open_existing(data_dir)?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let segments = dir.path().join(SEGMENTS_DIR);
    let (log, checks) = std::thread::scope(|scope| {
        let checking = scope.spawn(|| check_files(&segments, threads));
        let log = Log::open_copy(dir.path(), TOOL_CACHE_BYTES, false);
        // A checker that panicked checked nothing: every segment is then read through the index.
        (log, checking.join().unwrap_or_default())
    });
    Ok((dir, log?, checks))
}

/// Opens an existing data dir's log in place, taking its lock, for a tool that writes to it
/// (`replay rebuild`).
pub fn open_log_writable(data_dir: &Path) -> Result<(DataDir, Log)> {
    if !data_dir.join("db").is_dir() {
        return Err(ReplayError::NoLog(data_dir.display().to_string()));
    }
    let dir = DataDir::open(data_dir)?;
    let log = Log::open_with(dir.path(), TOOL_CACHE_BYTES, false)?;
    Ok((dir, log))
}

fn field_value(value: &[u8]) -> Value {
    match std::str::from_utf8(value) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => json!({ "hex": hex(value) }),
    }
}

/// Fields as a JSON object, or as a list of `[name, value]` pairs when a name repeats (Redis
/// allows it and an object would silently keep only one) or is not UTF-8 (a JSON key must be
/// text): such a name is written as `{"hex": ...}`, like a value that is not UTF-8.
fn fields_json(fields: &[(Vec<u8>, Vec<u8>)]) -> Value {
    let pairs = || Value::Array(fields.iter().map(|(n, v)| json!([field_value(n), field_value(v)])).collect());
    let mut object = Map::new();
    for (name, value) in fields {
        let Ok(name) = std::str::from_utf8(name) else { return pairs() };
        if object.insert(name.to_string(), field_value(value)).is_some() {
            return pairs();
        }
    }
    Value::Object(object)
}

/// One record as an export line.
pub fn record_json(record: &Record) -> Value {
    let mut line = json!({ "seq": record.seq, "prev_hash": hex(&record.prev_hash) });
    let extra = match &record.body {
        Body::Entry(entry) => {
            let mut extra = json!({
                "stream": entry.stream,
                "id": entry.id.to_string(),
                "time": format_utc_ms(entry.id.ms),
                "fields": fields_json(&entry.fields),
                "status": entry.status.name(),
            });
            match &entry.status {
                Status::Rejected { reason, deliveries } => {
                    extra["reason"] = json!({ "code": reason.code, "detail": reason.detail, "deliveries": deliveries });
                }
                Status::Duplicate { of_seq } => extra["duplicate_of"] = json!(of_seq),
                Status::OwnRef(reference) => {
                    extra["output_id"] = json!(String::from_utf8_lossy(&reference.output_id));
                    extra["fields_hash"] = json!(hex(&reference.fields_hash));
                    extra["bytes"] = json!(reference.bytes);
                }
                Status::Accepted | Status::Own => {}
            }
            extra
        }
        Body::Clock { time_ms } => json!({ "kind": "clock", "time": format_utc_ms(*time_ms) }),
        Body::Setting { name, value } => json!({ "kind": "setting", "name": name, "value": value }),
        Body::Config { admins, streams } => {
            let admins: Vec<String> = admins.iter().map(|(t, u)| format!("{t}:{u}")).collect();
            json!({ "kind": "config", "admins": admins, "streams": streams })
        }
        Body::Quarantine { target_seq, reason, deliveries } => {
            json!({ "kind": "quarantine", "target_seq": target_seq, "reason": reason, "deliveries": deliveries })
        }
    };
    if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
        line.extend(extra);
    }
    line
}

/// Writes records `from..=to` (clamped to the log) as JSON lines. Returns how many.
pub fn export(data_dir: &Path, from: u64, to: Option<u64>, out: &mut impl Write) -> Result<u64> {
    let (_dir, log) = open_log(data_dir)?;
    let filter = export::Filter { from, to, ..export::Filter::default() };
    export::export(&log, &filter, export::Format::Jsonl, out)
}

/// What `verify` found on a clean log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: String,
}

/// Checks every record's checksum and the whole chain, then that the log reaches its head
/// anchor; the error names the first bad seq.
pub fn verify(data_dir: &Path) -> Result<VerifyReport> {
    let (_dir, log, checks) = open_log_checking_segments(data_dir)?;
    verify_log_checked(&log, &checks)
}

/// [`verify`] on an open log.
pub fn verify_log(log: &Log) -> Result<VerifyReport> {
    verify_log_checked(log, &FileChecks::new())
}

/// [`verify`] on an open log, with the segment files found whole by
/// [`open_log_checking_segments`] counted as checked where they equal their index entries.
pub fn verify_log_checked(log: &Log, checks: &FileChecks) -> Result<VerifyReport> {
    let summary = log.verify_checked(checks)?;
    log.check_anchor()?;
    Ok(VerifyReport { records: summary.records, head_seq: log.head_seq(), head_hash: hex(&summary.head_hash) })
}

/// Checks that the derived indexes agree with the records: the dedup index finds every entry
/// record at its seq, and each stream's cursor is the highest entry id recorded for it.
pub fn verify_indexes(log: &Log) -> Result<u64> {
    let mut highest: std::collections::BTreeMap<String, maestro_schemas::EntryId> = Default::default();
    let mut checked = 0;
    for record in log.range(1, log.head_seq()) {
        let record = record?;
        let Body::Entry(entry) = &record.body else { continue };
        let found = log.seen(&entry.stream, entry.id)?;
        if found != Some(record.seq) {
            return Err(EngineError::Damaged(format!(
                "dedup index entry {} {}: points at {found:?}, the record is seq {}",
                entry.stream, entry.id, record.seq
            ))
            .into());
        }
        let top = highest.entry(entry.stream.clone()).or_insert(entry.id);
        *top = (*top).max(entry.id);
        checked += 1;
    }
    for (stream, id) in &highest {
        let cursor = log.cursor(stream)?;
        if cursor != Some(*id) {
            return Err(EngineError::Damaged(format!(
                "stream cursor {stream}: {cursor:?}, the highest recorded entry is {id}"
            ))
            .into());
        }
    }
    Ok(checked)
}
