//! The auditor's tools on a data dir the engine wrote through a real redis-server: state as of
//! a position (canonical, per tenant), diff, explain, verify with the anchors the engine kept
//! outside the data dir, and determinism over read batch sizes (R10).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const REQUESTS: &str = "maestro:streams:templates:requests";
const HEALING: &str = "maestro:streams:automation:healing";
const JOBS: &str = "maestro:streams:automation:jobs";

fn send(conn: &mut redis::Connection, id: &str, op: &str, tenant: &str, template: &str, parameters: Value) {
    let user = if tenant == "acme" { "alice" } else { "gina" };
    let data = json!({"request_id": id, "operation": op, "tenant_id": tenant, "user_id": user,
                      "template_id": template, "parameters": parameters});
    redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data.to_string()).query::<String>(conn).unwrap();
}

/// The seq of the record of request `id`.
fn seq_of(records: &[Value], id: &str) -> u64 {
    records
        .iter()
        .find(|r| r["stream"] == REQUESTS && r["fields"]["data"].as_str().unwrap_or("").contains(&format!("\"{id}\"")))
        .map(|r| r["seq"].as_u64().unwrap())
        .unwrap()
}

#[test]
fn state_diff_explain_and_verify_with_external_anchors() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let anchor = data.path().join("anchor");
    let env = [("MAESTRO_ADMINS", "acme:alice,globex:gina"), ("MAESTRO_ANCHOR_FILE", anchor.to_str().unwrap())];
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    let create = |name: &str, content: &str| json!({"name": name, "content": content, "manifest": manifest(name)});
    send(&mut conn, "e1", "create", "acme", "tpl-a", create("alpha", "first body"));
    send(&mut conn, "e2", "create", "globex", "tpl-g", create("gamma", "globex body"));
    wait_drained(&mut conn, Duration::from_secs(30));
    send(&mut conn, "e3", "update", "acme", "tpl-a", json!({"content": "second body"}));
    send(&mut conn, "e4", "create", "acme", "tpl-b", create("beta", "another body"));
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let records = export(&dir);
    let (update, head) = (seq_of(&records, "e3"), records.len() as u64);
    let d = dir.to_str().unwrap();

    // State: canonical, as of any seq, per tenant.
    let (code, now, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "templates"]);
    assert_eq!(code, Some(0));
    assert!(err.contains(&format!("from the live store at seq {head}")), "the nearest checkpoint: {err}");
    assert_eq!(now, maestro(&["replay", "state", "--data-dir", d, "--projection", "templates"]).1, "same bytes");
    let (_, replayed, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "templates", "--from-log"]);
    assert!(err.contains("from the log's first record"), "{err}");
    assert_eq!(now, replayed, "the same bytes from the log's first record");
    let now: Value = serde_json::from_str(&now).unwrap();
    assert_eq!(now["state"]["t/acme|tpl-a"]["content"], "second body");
    let before = format!("{}", update - 1);
    let (_, then, _) = maestro(&["replay", "state", "--data-dir", d, "--projection", "templates", "--at", &before]);
    let then: Value = serde_json::from_str(&then).unwrap();
    assert_eq!(then["state"]["t/acme|tpl-a"]["content"], "first body");
    assert!(then["state"].get("t/acme|tpl-b").is_none());
    let (_, globex, _) =
        maestro(&["replay", "state", "--data-dir", d, "--projection", "templates", "--tenant", "globex"]);
    let globex: Value = serde_json::from_str(&globex).unwrap();
    let keys: Vec<&String> = globex["state"].as_object().unwrap().keys().collect();
    assert!(!keys.is_empty() && keys.iter().all(|k| !k.contains("acme")), "{keys:?}");
    assert_ne!(globex["state_hash"], globex["projection_hash"]);
    let (_, list, _) = maestro(&["replay", "state", "--data-dir", d, "--list"]);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["stream_stats", "templates", "template_usage", "healing", "execution"]
    );

    // Diff between two positions names exactly the keys that changed, with before and after.
    let (code, diff, _) = maestro(&[
        "replay",
        "diff",
        "--data-dir",
        d,
        "--from",
        &before,
        "--to",
        &head.to_string(),
        "--projection",
        "templates",
    ]);
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = diff.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let changed = lines.iter().find(|l| l["key"] == "t/acme|tpl-a").unwrap();
    assert_eq!(
        (changed["before"]["content"].as_str(), changed["after"]["content"].as_str()),
        (Some("first body"), Some("second body"))
    );
    assert!(lines.iter().any(|l| l["key"] == "t/acme|tpl-b" && l["before"].is_null()));
    assert!(lines.iter().all(|l| !l["key"].as_str().unwrap().contains("globex")), "globex did not change");

    // Explain takes a key as `replay state` prints it (typeable), or as earlier builds printed
    // it (a JSON escape for the 0 byte between parts): the create, then the update, wrote it.
    let keys = now["state"].as_object().unwrap();
    let printed = keys.keys().find(|k| k.starts_with("t/") && k.ends_with("tpl-a")).unwrap();
    assert_eq!(printed, "t/acme|tpl-a");
    for key in [printed.as_str(), "t/acme\\u0000tpl-a"] {
        let (code, explain, err) =
            maestro(&["replay", "explain", "--data-dir", d, "--projection", "templates", "--key", key]);
        assert_eq!(code, Some(0), "{err}");
        let seqs: Vec<u64> =
            explain.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [seq_of(&records, "e1"), update], "{key}");
    }

    // One tenant replayed alone equals its part of live, history branch included.
    let into = data.path().join("sandbox");
    let (code, out, err) =
        maestro(&["replay", "sandbox", "--data-dir", d, "--tenant", "acme", "--into", into.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("templates") && out.contains("equal to live"), "{out}");
    assert!(!out.contains("DIFFER"), "{out}");

    // A projection damaged behind the engine's back: check names it, rebuild repairs it.
    {
        let db = open_store_sled(&dir);
        let state = db.open_tree("state").unwrap();
        assert!(state.remove(b"ptemplates\0t/acme\0tpl-a").unwrap().is_some());
        state.flush().unwrap();
    }
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", d]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("templates") && out.contains("DIFFERS") && err.contains("templates"), "{out}{err}");
    let (code, out, err) = maestro(&["replay", "rebuild", "--data-dir", d, "--projection", "templates"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("CHANGED"), "{out}");
    let (code, out, _) = maestro(&["replay", "check", "--data-dir", d]);
    assert_eq!(code, Some(0), "{out}");

    // The engine goes on from the store generation the rebuild made live.
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    send(&mut conn, "e5", "create", "acme", "tpl-c", create("delta", "third body"));
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let (code, now, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "templates"]);
    assert_eq!(code, Some(0), "{err}");
    let now: Value = serde_json::from_str(&now).unwrap();
    assert_eq!(now["state"]["t/acme|tpl-a"]["content"], "second body", "repaired by the rebuild");
    assert_eq!(now["state"]["t/acme|tpl-c"]["content"], "third body");
    let (code, out, _) = maestro(&["replay", "check", "--data-dir", d]);
    assert_eq!(code, Some(0), "{out}");

    // Verify with both external anchors: clean.
    let (code, out, err) = maestro(&[
        "verify",
        "--data-dir",
        d,
        "--anchor-file",
        anchor.to_str().unwrap(),
        "--anchor-redis",
        &server.url(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("anchor file") && out.contains("redis anchor") && out.contains("gives the live state hash"),
        "{out}"
    );

    // Truncate the log and make the data dir agree with itself: only the outside anchor knows.
    truncate(&dir, head - 2);
    let (code, _, err) = maestro(&["verify", "--data-dir", d, "--chain-only"]);
    assert_eq!(code, Some(0), "inside the data dir everything agrees: {err}");
    let (code, _, err) = maestro(&["verify", "--data-dir", d, "--anchor-file", anchor.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("record {}: missing", head - 2)), "{err}");
}

/// Removes records `from..` and rewrites the data dir's own head anchor to match.
fn truncate(dir: &Path, from: u64) {
    use maestro_engine::log::log_key;
    let db = open_sled(dir);
    let mut seq = from;
    while db.remove(log_key(seq)).unwrap().is_some() {
        seq += 1;
    }
    let last = maestro_schemas::record::hash_stored(&db.get(log_key(from - 1)).unwrap().unwrap());
    db.flush().unwrap();
    std::fs::write(dir.join("HEAD"), format!("{} {}\n", from - 1, maestro_schemas::record::hex(&last))).unwrap();
}

/// R10: the same input read in batches of 1, 64 and 500 entries per stream gives every
/// projection the same state hash, and a rebuild from the log gives it too.
#[test]
fn batch_sizes_do_not_change_any_projection() {
    let server = redis(false);
    let mut conn = connect(&server);
    let mut traffic = maestro::traffic::Traffic::new(21, maestro_schemas::StreamSet::default());
    let messages: Vec<_> = (0..1_500).map(|_| traffic.next_message()).collect();
    produce_messages(&mut conn, &messages);
    let data = tempfile::tempdir().unwrap();
    // Every user of the traffic is an admin, so that creates, updates and deletes succeed.
    let admins: Vec<String> = (0..8).flat_map(|t| (0..50).map(move |u| format!("tenant-{t}:user-{u}"))).collect();
    let admins = admins.join(",");
    let mut states = Vec::new();
    for count in ["1", "64", "500"] {
        let dir = data.path().join(format!("count-{count}"));
        // Each run reads the same streams through a group of its own; outputs go to streams of
        // its own too, so that one run's answers are not another's input.
        let group = format!("g{count}");
        let results = format!("maestro:streams:templates:results:{count}");
        let usage = format!("maestro:streams:templates:usage:{count}");
        let env = [
            ("MAESTRO_READ_COUNT", count),
            ("MAESTRO_GROUP", group.as_str()),
            ("MAESTRO_STREAMS__TEMPLATES_RESULTS", results.as_str()),
            ("MAESTRO_STREAMS__TEMPLATES_USAGE", usage.as_str()),
            ("MAESTRO_ADMINS", admins.as_str()),
        ];
        let mut engine = EngineProc::start(&server.url(), &dir, &env);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let read = [REQUESTS.to_string(), HEALING.to_string(), JOBS.to_string(), results.clone(), usage.clone()];
        while !maestro::groups::drained(&mut conn, &read, &group) {
            assert!(std::time::Instant::now() < deadline, "run {count} did not drain");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(engine.terminate().success(), "{}", engine.stderr());
        let d = dir.to_str().unwrap();
        let mut hashes = Vec::new();
        for projection in ["templates", "template_usage", "healing"] {
            let args = ["replay", "state", "--data-dir", d, "--projection", projection];
            let (code, out, err) = maestro(&args);
            assert_eq!(code, Some(0), "{err}");
            let state: Value = serde_json::from_str(&out).unwrap();
            let count =
                |prefix: &str| state["state"].as_object().unwrap().keys().filter(|k| k.starts_with(prefix)).count();
            let (templates, repairs) = (count("t/"), count("r/"));
            assert!(
                projection != "templates" || templates > 20,
                "only {templates} templates: the comparison proves little"
            );
            assert!(projection != "healing" || repairs > 20, "only {repairs} repairs: the comparison proves little");
            if projection == "template_usage" {
                // Durations are real times (request entry to publication), so they differ from
                // run to run; the counts may not. A replay of one run reproduces its durations
                // too (`replay check` below).
                let mut counts = state["state"].clone();
                for stats in counts.as_object_mut().unwrap().values_mut() {
                    assert!(stats.as_object_mut().unwrap().remove("durations").is_some(), "{stats}");
                }
                hashes.push(counts.to_string());
            } else {
                hashes.push(state["state_hash"].as_str().unwrap().to_string());
            }
        }
        let (code, out, err) = maestro(&["replay", "check", "--data-dir", d]);
        assert_eq!(code, Some(0), "rebuild equals live for batch size {count}: {out}{err}");
        states.push((count, hashes));
    }
    assert_eq!(states[0].1, states[1].1, "batch size 1 vs 64");
    assert_eq!(states[0].1, states[2].1, "batch size 1 vs 500");
}
