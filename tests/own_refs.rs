//! Own outputs are logged by reference: an answer the engine published and read back is a
//! record of its stream, entry id, output id and a hash of its fields, not a copy of them
//! (template bodies stay out of the log); own usage events, which the usage analytics read,
//! keep their fields. `maestro verify --outputs-redis` compares each reference with the entry
//! Redis still holds, and names the record whose entry differs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro::bench_templates::{TENANT, USER, catalogue, read_request};
use maestro::traffic::Rng;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const RESULTS: &str = "maestro:streams:templates:results";
const USAGE: &str = "maestro:streams:templates:usage";

/// Runs the engine over a small catalogue and reads of it until drained; returns the export.
fn answered(url: &str, dir: &Path, conn: &mut redis::Connection) -> Vec<Value> {
    let admins = format!("{TENANT}:{USER}");
    let mut engine = EngineProc::start(url, dir, &[("MAESTRO_ADMINS", &admins)]);
    engine.wait_connected();
    produce_messages(conn, &catalogue(&mut Rng::new(3), 5));
    let mut rng = Rng::new(4);
    let reads: Vec<_> = (0..40).map(|n| read_request(&mut rng, "read", n, 5)).collect();
    produce_messages(conn, &reads);
    wait_drained(conn, Duration::from_secs(60));
    assert!(engine.terminate().success());
    engine.assert_no_panic();
    export(dir)
}

#[test]
fn answers_are_logged_by_reference_and_verify_compares_them_with_redis() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let records = answered(&server.url(), &dir, &mut conn);
    let answers = answers_to(&mut conn, "read-");
    assert_eq!(answers.len(), 40, "every read answered");
    assert!(answers.values().all(|n| *n == 1), "{answers:?}");
    let in_redis: std::collections::HashMap<String, std::collections::HashMap<String, String>> =
        read_stream(&mut conn, RESULTS).into_iter().collect();
    let results: Vec<&Value> = records.iter().filter(|r| r["stream"] == RESULTS).collect();
    assert_eq!(results.len(), 45, "one record per answer (5 creates, 40 reads)");
    for record in &results {
        assert_eq!(record["status"], "own", "{record}");
        assert_eq!(record["fields"], serde_json::json!({}), "an own answer's fields are not copied: {record}");
        let entry = &in_redis[record["id"].as_str().unwrap()];
        assert_eq!(record["output_id"].as_str().unwrap(), entry["output_id"], "the reference names the output");
        assert_eq!(record["fields_hash"].as_str().unwrap().len(), 64);
    }
    // A retrieve's answer holds the template's body (4-26 KB): its size is recorded, not its bytes.
    let large = results.iter().filter(|r| r["bytes"].as_u64().unwrap() > 4_000).count();
    assert!(large >= 10, "{large} answers over 4 KB");
    // The usage analytics read the engine's own usage events: those keep their fields.
    let usage: Vec<&Value> = records.iter().filter(|r| r["stream"] == USAGE).collect();
    assert_eq!(usage.len(), 45);
    let kept = usage.iter().filter(|r| r["status"] == "own" && r["fields"]["data"].is_string()).count();
    assert_eq!(kept, 45, "own usage events logged with their fields");
    let dir_arg = dir.to_str().unwrap();
    // The protobuf export carries the reference too.
    let (code, proto) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_maestro"))
            .args(["export", "--format", "proto", "--data-dir", dir_arg])
            .output()
            .unwrap();
        (out.status.code(), out.stdout)
    };
    assert_eq!(code, Some(0));
    let mut rest = proto.as_slice();
    let mut references = 0;
    while !rest.is_empty() {
        use maestro_schemas::proto::log::exported_record::Body;
        use prost::Message;
        let record = maestro_schemas::proto::log::ExportedRecord::decode_length_delimited(&mut rest).unwrap();
        if let Some(Body::Entry(entry)) = record.body
            && entry.stream == RESULTS
        {
            assert_eq!(entry.output_id, in_redis[&entry.id]["output_id"].as_bytes());
            assert_eq!(entry.fields_hash.len(), 32);
            references += 1;
        }
    }
    assert_eq!(references, 45);
    let (code, out, err) = maestro(&["verify", "--data-dir", dir_arg, "--outputs-redis", &server.url()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok: 45 own outputs kept by reference equal their entries"), "{out}");
    assert!(out.contains("a replay of the log gives the live state hash"), "{out}");

    // Another Redis holding other fields under one answer's id: verify names its record.
    let other = redis(false);
    let mut other_conn = connect(&other);
    let victim = results[7];
    let _: String = redis::cmd("XADD")
        .arg(RESULTS)
        .arg(victim["id"].as_str().unwrap())
        .arg("data")
        .arg("{\"request_id\":\"forged\"}")
        .query(&mut other_conn)
        .unwrap();
    let (code, out, err) = maestro(&["verify", "--data-dir", dir_arg, "--outputs-redis", &other.url(), "--chain-only"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let named = format!("record {}: own output {RESULTS} {}", victim["seq"], victim["id"].as_str().unwrap());
    assert!(err.contains(&named), "{err}");
    // Entries Redis no longer holds are counted, not failed.
    let empty = redis(false);
    let (code, out, err) = maestro(&["verify", "--data-dir", dir_arg, "--outputs-redis", &empty.url(), "--chain-only"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok: 0 own outputs kept by reference equal their entries in"), "{out}");
    assert!(out.contains("; 45 no longer there"), "{out}");
}

#[test]
fn the_usage_analytics_count_every_answer_from_the_own_usage_events() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    answered(&server.url(), &dir, &mut conn);
    let (code, out, err) = maestro(&[
        "replay",
        "state",
        "--data-dir",
        dir.to_str().unwrap(),
        "--projection",
        maestro_handlers::templates::usage::NAME,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    let count = |key: &str| state["state"][key]["count"].as_u64().unwrap_or(0);
    assert_eq!(count(&format!("n/{TENANT}")), 45, "{state}");
    assert_eq!(count("o/create") + count("o/retrieve") + count("o/search"), 45, "{state}");
}
