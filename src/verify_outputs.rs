//! `maestro verify --outputs-redis URL`: the own outputs the log holds by reference (a hash of
//! their fields, not the fields) compared with the entries Redis still holds. An entry Redis
//! trimmed or deleted is counted as gone, not as a failure: the log never promised Redis keeps
//! it. One XRANGE per entry, pipelined 500 at a time.

use maestro_engine::log::Log;
use maestro_schemas::own::fields_hash;
use maestro_schemas::record::hex;
use maestro_schemas::{Body, Entry, Status};

/// What the comparison found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OutputsReport {
    /// References whose entry Redis holds with the same fields.
    pub equal: u64,
    /// References whose entry Redis no longer holds.
    pub gone: u64,
}

/// Compares every own reference of `log` with `conn`'s entries; the first whose entry Redis
/// holds with other fields is an error naming its seq, stream and entry id.
pub fn compare(log: &Log, conn: &mut redis::Connection) -> anyhow::Result<OutputsReport> {
    let mut report = OutputsReport::default();
    let mut batch: Vec<(u64, String, String, [u8; 32])> = Vec::new();
    for record in log.range(1, log.head_seq()) {
        let record = record?;
        if let Body::Entry(Entry { stream, id, status: Status::OwnRef(reference), .. }) = record.body {
            batch.push((record.seq, stream, id.to_string(), reference.fields_hash));
            if batch.len() == 500 {
                check(conn, &batch, &mut report)?;
                batch.clear();
            }
        }
    }
    check(conn, &batch, &mut report)?;
    Ok(report)
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The fields of the first entry of an XRANGE reply, names and values as the bytes Redis holds.
fn first_entry_fields(reply: redis::Value) -> anyhow::Result<Option<Fields>> {
    use redis::Value;
    let Value::Array(entries) = reply else { anyhow::bail!("XRANGE answered {reply:?}") };
    let Some(Value::Array(entry)) = entries.into_iter().next() else { return Ok(None) };
    let Some(Value::Array(flat)) = entry.into_iter().nth(1) else { anyhow::bail!("an XRANGE entry without fields") };
    let bytes = |value: Value| match value {
        Value::BulkString(bytes) => Ok(bytes),
        other => Err(anyhow::anyhow!("a field that is not a string: {other:?}")),
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        fields.push((bytes(name)?, bytes(value)?));
    }
    Ok(Some(fields))
}

fn check(
    conn: &mut redis::Connection,
    batch: &[(u64, String, String, [u8; 32])],
    report: &mut OutputsReport,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, stream, id, _) in batch {
        pipe.cmd("XRANGE").arg(stream).arg(id).arg(id);
    }
    let replies: Vec<redis::Value> = pipe.query(conn)?;
    for ((seq, stream, id, hash), reply) in batch.iter().zip(replies) {
        let Some(fields) = first_entry_fields(reply)? else {
            report.gone += 1;
            continue;
        };
        let found = fields_hash(stream, &fields);
        anyhow::ensure!(
            &found == hash,
            "record {seq}: own output {stream} {id} in Redis hashes to {}, the log recorded {}",
            hex(&found),
            hex(hash)
        );
        report.equal += 1;
    }
    Ok(())
}
