//! R19: the log holds the bytes Redis held. Field names and values that are not UTF-8 are kept
//! as they were, in the log, in `maestro export` (JSON lines and protobuf) and in dead-letter
//! copies; where the decoder needs text (a field name it looks up, a JSON payload) they are the
//! reject reason `not_utf8`, never a missing field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro_schemas::encode::to_proto_fields;
use maestro_schemas::envelope::Limits;
use maestro_schemas::{EntryId, Origin, Role, decode};
use prost::Message;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const JOBS: &str = "maestro:streams:k8s:jobs";
const REQUESTS: &str = "maestro:streams:templates:requests";

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn pair(name: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (name.to_vec(), value.to_vec())
}

fn xadd(conn: &mut redis::Connection, stream: &str, fields: &Pairs) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (name, value) in fields {
        cmd.arg(name.as_slice()).arg(value.as_slice());
    }
    cmd.query(conn).unwrap()
}

fn bulk(value: &redis::Value) -> Vec<u8> {
    match value {
        redis::Value::BulkString(bytes) => bytes.clone(),
        other => panic!("not a bulk string: {other:?}"),
    }
}

/// A whole stream as (id, fields), names and values as raw bytes (read here, not through the
/// engine's own reply parser).
fn entries(conn: &mut redis::Connection, stream: &str) -> Vec<(String, Pairs)> {
    let reply: redis::Value = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(conn).unwrap();
    let redis::Value::Array(entries) = reply else { panic!("XRANGE reply {reply:?}") };
    entries
        .iter()
        .map(|entry| {
            let redis::Value::Array(parts) = entry else { panic!("entry {entry:?}") };
            let redis::Value::Array(flat) = &parts[1] else { panic!("fields {:?}", parts[1]) };
            let id = String::from_utf8(bulk(&parts[0])).unwrap();
            (id, flat.chunks(2).map(|p| (bulk(&p[0]), bulk(&p[1]))).collect())
        })
        .collect()
}

/// A name or value as `maestro export` writes it: text, or `{"hex": ...}` when not UTF-8.
fn exported_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(text) => text.as_bytes().to_vec(),
        Value::Object(o) => {
            let h = o["hex"].as_str().unwrap();
            hex::decode(h).unwrap()
        }
        other => panic!("exported field part {other:?}"),
    }
}

/// An exported record's fields: an object, or `[name, value]` pairs.
fn exported_fields(record: &Value) -> Pairs {
    match &record["fields"] {
        Value::Object(o) => o.iter().map(|(k, v)| (k.as_bytes().to_vec(), exported_bytes(v))).collect(),
        Value::Array(pairs) => pairs.iter().map(|p| (exported_bytes(&p[0]), exported_bytes(&p[1]))).collect(),
        other => panic!("exported fields {other:?}"),
    }
}

/// A k8s:jobs entry in the protobuf form whose `proto` bytes are not UTF-8 (a length prefix
/// above 127 makes a byte that cannot start a UTF-8 sequence).
fn binary_job() -> Pairs {
    let id = "e".repeat(200);
    let payload = format!(r#"{{"execution_id":"{id}"}}"#);
    let old = vec![pair(b"type", b"get_logs"), pair(b"payload", payload.as_bytes())];
    let origin = Origin { stream: JOBS, entry: EntryId { ms: 1, seq: 0 } };
    let event = decode(Role::K8sJobs, origin, &old, &Limits::default()).unwrap().event.event;
    let fields = to_proto_fields(&event);
    assert!(std::str::from_utf8(&fields[1].1).is_err(), "the protobuf body must not be UTF-8 for this test");
    fields
}

#[test]
fn names_and_values_that_are_not_utf8_are_kept_byte_exact_in_the_log_exports_and_dead_letters() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);

    // The decoder looks up `type`: a name that is `type` after two invalid bytes is not it.
    let bad_name = vec![pair(b"\xff\xfetype", b"get_logs"), pair(b"payload", br#"{"execution_id":"e1"}"#)];
    // Two names that differ only in their invalid bytes are two fields.
    let twins = vec![
        pair(b"data", br#"{"operation":"search","tenant_id":"t","user_id":"u"}"#),
        pair(b"x\xff", b"1"),
        pair(b"x\xfe", b"2"),
    ];
    // A JSON payload that is not UTF-8.
    let bad_value = vec![pair(b"type", b"get_logs"), pair(b"payload", b"{\"execution_id\":\"\xc3\x28\"}")];
    // Where binary is allowed (`proto`), invalid UTF-8 is valid input.
    let binary = binary_job();
    let sent = [
        (JOBS, xadd(&mut conn, JOBS, &bad_name), bad_name, "rejected"),
        (REQUESTS, xadd(&mut conn, REQUESTS, &twins), twins, "rejected"),
        (JOBS, xadd(&mut conn, JOBS, &bad_value), bad_value, "rejected"),
        (JOBS, xadd(&mut conn, JOBS, &binary), binary, "accepted"),
    ];
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();

    // Dead letters: the reason, then the producer's fields exactly as sent.
    for (stream, id, fields, status) in sent.iter().filter(|s| s.3 == "rejected") {
        let dead = entries(&mut conn, &format!("{stream}:dead"));
        let (_, copy) = dead
            .iter()
            .find(|(_, f)| f.contains(&pair(b"dead_id", id.as_bytes())))
            .unwrap_or_else(|| panic!("{id} ({status}) not dead-lettered: {dead:?}"));
        assert!(copy.contains(&pair(b"dead_reason", b"not_utf8")), "{copy:?}");
        assert_eq!(&copy[copy.len() - fields.len()..], fields.as_slice(), "the copy holds the bytes sent");
    }

    // `maestro export`, JSON lines: every record holds the bytes Redis held.
    let out = Command::new(env!("CARGO_BIN_EXE_maestro")).args(["export", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (stream, id, fields, status) in &sent {
        let record = records
            .iter()
            .find(|r| r["stream"] == *stream && r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in the log"));
        assert_eq!(record["status"], *status, "{record}");
        if *status == "rejected" {
            assert_eq!(record["reason"]["code"], "not_utf8", "{record}");
        }
        assert_eq!(&exported_fields(record), fields, "{record}");
    }
    let twin_record = records.iter().find(|r| r["stream"] == REQUESTS && r["id"] == sent[1].1.as_str()).unwrap();
    assert_eq!(twin_record["fields"][1][0]["hex"], hex::encode(b"x\xff"), "{twin_record}");

    // `maestro export --format proto`: names and values as bytes.
    let out = Command::new(env!("CARGO_BIN_EXE_maestro"))
        .args(["export", "--format", "proto", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rest = out.stdout.as_slice();
    let mut exported = Vec::new();
    while !rest.is_empty() {
        use maestro_schemas::proto::log::exported_record::Body;
        let record = maestro_schemas::proto::log::ExportedRecord::decode_length_delimited(&mut rest).unwrap();
        if let Some(Body::Entry(entry)) = record.body {
            exported.push((
                entry.stream,
                entry.id,
                entry.fields.into_iter().map(|f| (f.name, f.value)).collect::<Pairs>(),
            ));
        }
    }
    for (stream, id, fields, _) in &sent {
        let (_, _, got) =
            exported.iter().find(|(s, i, _)| s == stream && i == id).unwrap_or_else(|| panic!("{id} not exported"));
        assert_eq!(got, fields);
    }
}
