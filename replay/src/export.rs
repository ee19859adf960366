//! `maestro export`: records for auditors, with their chain hashes, as JSON lines or as
//! length-delimited protobuf (`schemas/proto/maestro/log/v1/log.proto`), filtered by position,
//! stream and tenant.

use crate::{Result, record_json};
use maestro_engine::log::Log;
use maestro_schemas::proto::log as pb;
use maestro_schemas::record::{hash_stored, hex};
use maestro_schemas::{Body, Record, Status};
use prost::Message;
use std::io::Write;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Proto,
}

/// Which records to export.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub from: u64,
    pub to: Option<u64>,
    pub stream: Option<String>,
    pub tenant: Option<String>,
}

/// The tenant an entry names (`tenant_id` in its `data` JSON or as a flat field), if any.
pub(crate) fn record_tenant(record: &Record) -> Option<String> {
    let entry = record.entry()?;
    if let Some(tenant) = entry.field("tenant_id") {
        return Some(String::from_utf8_lossy(tenant).into_owned());
    }
    let data: serde_json::Value = serde_json::from_slice(entry.field("data")?).ok()?;
    data.get("tenant_id")?.as_str().map(str::to_string)
}

impl Filter {
    fn keeps(&self, record: &Record) -> bool {
        let stream_ok = self.stream.as_deref().is_none_or(|s| record.entry().is_some_and(|e| e.stream == s));
        stream_ok && self.tenant.as_deref().is_none_or(|t| record_tenant(record).as_deref() == Some(t))
    }
}

fn to_proto(record: &Record, stored: &[u8]) -> pb::ExportedRecord {
    let body = match &record.body {
        Body::Entry(entry) => {
            let (code, detail, deliveries, duplicate_of) = match &entry.status {
                Status::Rejected { reason, deliveries } => (reason.code.clone(), reason.detail.clone(), *deliveries, 0),
                Status::Duplicate { of_seq } => (String::new(), String::new(), 0, *of_seq),
                Status::Accepted | Status::Own | Status::OwnRef(_) => (String::new(), String::new(), 0, 0),
            };
            let reference = match &entry.status {
                Status::OwnRef(reference) => Some(reference),
                _ => None,
            };
            pb::exported_record::Body::Entry(pb::StreamEntry {
                stream: entry.stream.clone(),
                id: entry.id.to_string(),
                fields: entry.fields.iter().map(|(n, v)| pb::Field { name: n.clone(), value: v.clone() }).collect(),
                status: entry.status.name().to_string(),
                reason_code: code,
                reason_detail: detail,
                deliveries,
                duplicate_of,
                output_id: reference.map(|r| r.output_id.clone()).unwrap_or_default(),
                fields_hash: reference.map(|r| r.fields_hash.to_vec()).unwrap_or_default(),
                bytes: reference.map_or(0, |r| r.bytes),
            })
        }
        Body::Clock { time_ms } => pb::exported_record::Body::Clock(pb::Clock { time_ms: *time_ms }),
        Body::Quarantine { target_seq, reason, deliveries } => pb::exported_record::Body::Quarantine(pb::Quarantine {
            target_seq: *target_seq,
            reason: reason.clone(),
            deliveries: *deliveries,
        }),
        Body::Setting { name, value } => {
            pb::exported_record::Body::Setting(pb::Setting { name: name.clone(), value: value.clone() })
        }
        Body::Config { admins, streams } => pb::exported_record::Body::Config(pb::Config {
            admins: admins.iter().map(|(t, u)| format!("{t}:{u}")).collect(),
            streams_json: serde_json::to_string(streams).unwrap_or_default(),
        }),
    };
    pb::ExportedRecord {
        seq: record.seq,
        prev_hash: record.prev_hash.to_vec(),
        hash: hash_stored(stored).to_vec(),
        stored: stored.to_vec(),
        body: Some(body),
    }
}

/// Writes the records `filter` keeps. Returns how many.
pub fn export(log: &Log, filter: &Filter, format: Format, out: &mut impl Write) -> Result<u64> {
    let to = filter.to.unwrap_or(u64::MAX).min(log.head_seq());
    let mut written = 0;
    for item in log.stored_range(filter.from.max(1), to) {
        let (seq, stored) = item?;
        let record = maestro_schemas::Record::decode(seq, &stored).map_err(maestro_engine::error::EngineError::from)?;
        if !filter.keeps(&record) {
            continue;
        }
        let stored = &stored[..];
        match format {
            Format::Jsonl => {
                let mut line = record_json(&record);
                line["hash"] = serde_json::Value::String(hex(&hash_stored(stored)));
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Format::Proto => out.write_all(&to_proto(&record, stored).encode_length_delimited_to_vec())?,
        }
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_engine::log::NewRecord;
    use maestro_schemas::{Entry, EntryId};

    #[test]
    fn filters_and_both_formats_carry_the_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = Log::open(tmp.path(), 1 << 20).unwrap();
        let entry = |i: u64, stream: &str, tenant: &str| NewRecord {
            body: Body::Entry(Entry {
                stream: stream.into(),
                id: EntryId { ms: i, seq: 0 },
                fields: vec![("data".into(), format!("{{\"tenant_id\":\"{tenant}\"}}").into_bytes())],
                status: Status::Accepted,
            }),
            request: None,
        };
        log.append(vec![entry(1, "a", "acme"), entry(2, "b", "acme"), entry(3, "a", "globex")]).unwrap();
        let run = |filter: Filter, format| {
            let mut out = Vec::new();
            let n = export(&log, &filter, format, &mut out).unwrap();
            (n, out)
        };
        assert_eq!(run(Filter { stream: Some("a".into()), ..Filter::default() }, Format::Jsonl).0, 2);
        assert_eq!(run(Filter { tenant: Some("acme".into()), ..Filter::default() }, Format::Jsonl).0, 2);
        let (n, bytes) = run(Filter::default(), Format::Proto);
        assert_eq!(n, 3);
        let mut buf = bytes.as_slice();
        let mut previous = [0u8; 32].to_vec();
        while !buf.is_empty() {
            let record = pb::ExportedRecord::decode_length_delimited(&mut buf).unwrap();
            assert_eq!(record.prev_hash, previous, "each record names its predecessor's hash");
            assert_eq!(record.hash, hash_stored(&record.stored).to_vec());
            previous = record.hash;
        }
    }
}
