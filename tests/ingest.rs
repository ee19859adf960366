//! Ingestion against a real redis-server: every entry of the nine streams recorded exactly once,
//! redelivery, claims and re-sends, poison, graceful shutdown, the HTTP endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::Duration;

#[test]
fn every_entry_of_all_nine_streams_is_recorded_exactly_once() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    // Entries written before the engine's first start are read too: the group starts at 0.
    let mut produced = produce(&mut conn, 900, 1, true);
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    produced.extend(produce(&mut conn, 2_000, 2, false));
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();

    let records = export(&dir);
    assert_exactly_once(&produced, &records);
    let per_stream = recorded(&records).keys().fold(std::collections::BTreeMap::new(), |mut m, (s, _)| {
        *m.entry(s.clone()).or_insert(0) += 1;
        m
    });
    assert_eq!(per_stream.len(), 9, "entries from all nine streams: {per_stream:?}");
    assert!(
        records.iter().filter(|r| r.get("stream").is_some() && r["status"] != "own").all(|r| r["status"] == "accepted"),
        "the old producers' formats are all accepted"
    );
    assert_eq!(total_pending(&mut conn), 0);
    assert!(maestro_replay::verify(&dir).is_ok());
}

#[test]
fn graceful_shutdown_acknowledges_its_last_batch_and_a_restart_finishes_the_rest() {
    let server = redis(true);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let produced = produce(&mut conn, 6_000, 3, true);
    let mut engine = EngineProc::start(&server.url(), &dir, &[("MAESTRO_READ_COUNT", "10")]);
    // Stop it mid-way: once it is connected and has had a moment to read (start-up time varies
    // with the machine's load, so the moment starts at the connection, not at the spawn).
    engine.wait_connected();
    std::thread::sleep(Duration::from_millis(200));
    let exit = engine.terminate();
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}: {}", engine.stderr());
    assert_eq!(total_pending(&mut conn), 0, "the last batch was acknowledged before exit");
    let partial = recorded(&export(&dir)).len();
    assert!(partial > 0, "the engine recorded something in 200 ms after connecting");

    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success());
    assert_exactly_once(&produced, &export(&dir));
}

#[test]
fn poison_of_each_kind_is_dead_lettered_with_its_reason_and_never_stalls() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let requests = "maestro:streams:templates:requests";
    let jobs = "maestro:streams:k8s:jobs";
    let xadd = |conn: &mut redis::Connection, stream: &str, fields: Vec<(String, Vec<u8>)>| -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd.query(conn).unwrap()
    };
    let s = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let poison = vec![
        (requests, vec![s("data", "{\"request_id\": ")], "bad_json"),
        (jobs, vec![s("type", "cleanup_environment"), s("payload", "{}")], "missing_field"),
        (requests, vec![("data".to_string(), vec![b'{', 0xff, 0xfe, b'}'])], "not_utf8"),
        (jobs, (0..65).map(|i| s(&format!("f{i}"), "v")).collect(), "too_many_fields"),
        (requests, vec![("data".to_string(), vec![b' '; 1024 * 1024 + 1 - 4])], "too_large"),
        (jobs, vec![s("type", "get_logs"), s("payload", &deep)], "too_deep"),
    ];
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    let mut expected = Vec::new();
    for (stream, fields, code) in poison {
        expected.push((stream, xadd(&mut conn, stream, fields), code));
    }
    let good = produce(&mut conn, 900, 4, true);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success());
    engine.assert_no_panic();

    for (stream, id, code) in &expected {
        let dead = read_stream(&mut conn, &format!("{stream}:dead"));
        let copy = dead
            .iter()
            .find(|(_, f)| f.get("dead_id") == Some(id))
            .unwrap_or_else(|| panic!("{code} entry {id} not dead-lettered"));
        assert_eq!(copy.1["dead_reason"], *code);
        assert!(!copy.1["dead_detail"].is_empty());
        assert_eq!(copy.1["dead_deliveries"], "1");
        assert!(copy.1["origin"].starts_with("maestro-engine/"));
        if *code == "too_large" {
            assert!(!copy.1.contains_key("data"), "an oversized payload is not copied");
        }
    }
    // Besides the poison, the generated traffic asks for logs of executions that were never
    // requested: those are answered, not dead-lettered.
    let dead: Vec<_> = ["templates:requests", "k8s:jobs"]
        .iter()
        .flat_map(|s| read_stream(&mut conn, &format!("maestro:streams:{s}:dead")))
        .collect();
    let (refused, poisoned): (Vec<_>, Vec<_>) = dead.iter().partition(|(_, f)| f["dead_reason"] == "handler_failed");
    assert_eq!(poisoned.len(), expected.len(), "exactly the poison entries are dead-lettered as poison");
    assert!(refused.is_empty(), "valid requests for unknown executions are answered: {refused:?}");
    let records = export(&dir);
    let rejected: Vec<_> = records.iter().filter(|r| r["status"] == "rejected").collect();
    assert_eq!(rejected.len(), expected.len());
    let seen = recorded(&records);
    assert!(good.iter().all(|k| seen.get(k) == Some(&1)), "every good entry after the poison was recorded");
}

#[test]
fn entries_of_a_dead_consumer_are_claimed_and_recorded_once() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let produced = produce(&mut conn, 450, 5, true);
    for stream in streams() {
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query::<()>(&mut conn)
            .unwrap();
        // A consumer that takes 20 entries of each stream and dies without acknowledging.
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("ghost")
            .arg("COUNT")
            .arg(20)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query::<redis::Value>(&mut conn)
            .unwrap();
    }
    assert_eq!(total_pending(&mut conn), 180);
    let env = [("MAESTRO_CLAIM_MIN_IDLE_MS", "300"), ("MAESTRO_CLAIM_INTERVAL_MS", "200"), ("MAESTRO_BLOCK_MS", "100")];
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success());
    assert!(engine.stderr().contains("claimed idle entries"), "{}", engine.stderr());
    assert_exactly_once(&produced, &export(&dir));
}

#[test]
fn a_resent_request_is_recorded_once_more_as_a_duplicate_of_the_first() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let request = r#"{"request_id":"req-resent","template_id":"tpl-1","operation":"retrieve","tenant_id":"t1","user_id":"u1","parameters":{}}"#;
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    for _ in 0..3 {
        redis::cmd("XADD")
            .arg("maestro:streams:templates:requests")
            .arg("*")
            .arg("data")
            .arg(request)
            .query::<String>(&mut conn)
            .unwrap();
    }
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success());
    let records = export(&dir);
    let statuses: Vec<_> = records
        .iter()
        .filter(|r| r["stream"] == "maestro:streams:templates:requests")
        .map(|r| (r["status"].as_str().unwrap(), r.get("duplicate_of").and_then(|v| v.as_u64())))
        .collect();
    assert_eq!(statuses, vec![("accepted", None), ("duplicate", Some(1)), ("duplicate", Some(1))]);
    // The re-sends changed nothing and got no second answer: one result, one usage event.
    assert_eq!(read_stream(&mut conn, "maestro:streams:templates:results").len(), 1);
    assert_eq!(read_stream(&mut conn, "maestro:streams:templates:usage").len(), 1);
}

#[test]
fn http_serves_health_readiness_status_and_metrics() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_http_addr();
    let mut engine =
        EngineProc::start_with(&server.url(), &dir, &[("MAESTRO_INFO_INTERVAL_MS", "100")], &["--http", &addr]);
    produce(&mut conn, 90, 6, true);
    wait_drained(&mut conn, Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut code, mut body) = (0, String::new());
    while std::time::Instant::now() < deadline {
        (code, body) =
            std::net::TcpStream::connect(&addr).map(|_| http_get(&addr, "/readyz")).unwrap_or((0, String::new()));
        if code == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code, 200, "ready once caught up: {body}");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let status: serde_json::Value = serde_json::from_str(&http_get(&addr, "/status").1).unwrap();
    // 90 entries, 10 of them template requests, each answered by one result and one usage
    // event that the engine reads back and records as its own: 110 records; then the healing
    // answers read back and the clock records.
    let appended = status["records_appended"].as_u64().unwrap();
    assert!(appended >= 110, "{status}");
    assert_eq!(status["records_appended"], status["head_seq"], "every record of the log was appended by this run");
    let metrics = http_get(&addr, "/metrics").1;
    for name in [
        "maestro_records_appended_total ",
        "maestro_entries_acked_total",
        "maestro_batch_seconds_bucket",
        "maestro_pending{stream=",
        "maestro_lag{stream=",
        "maestro_entries_read_total{stream=",
        "maestro_up 1",
        "maestro_ready 1",
        "maestro_redis_up 1",
        "maestro_storage_ok 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // The replay tools, kept out by the lock, ask the engine for the state at its position;
    // a state as of another position needs the data dir, and the tool says so.
    let d = dir.to_str().unwrap();
    let (code, live, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "stream_stats"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("answered by the running engine at {addr}")), "{err}");
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert!(live["state"]["maestro:streams:templates:requests"]["accepted"].as_u64() > Some(0), "{live}");
    let (code, _, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "stream_stats", "--at", "1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is locked by another process"), "{err}");
    let (code, _, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no projection \"nope\""), "{err}");
    // Asked while the engine is busy, the engine still answers a state it held at one seq
    // (checked against replays after the stop).
    let mut busy = connect(&server);
    // Paced over about three seconds, so that the engine is still writing after a few asks
    // however fast it drains.
    let producer = std::thread::spawn(move || {
        (0..20u64)
            .map(|i| {
                let sent = produce(&mut busy, 1_000, 7 + i, true).len();
                std::thread::sleep(Duration::from_millis(150));
                sent
            })
            .sum::<usize>()
    });
    let mut answers = std::collections::BTreeMap::new();
    answers.insert(live["seq"].as_u64().unwrap(), live.clone());
    for _ in 0..60 {
        if producer.is_finished() && drained(&mut conn) {
            break;
        }
        let (code, out, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "stream_stats"]);
        assert_eq!(code, Some(0), "{err}");
        let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
        let seq = answer["seq"].as_u64().unwrap();
        assert_eq!(answers.entry(seq).or_insert_with(|| answer.clone()), &answer, "two answers at seq {seq}");
    }
    assert_eq!(producer.join().unwrap(), 20_000);
    assert!(answers.len() >= 3, "asked while the engine wrote: answers at seqs {:?}", answers.keys());
    wait_drained(&mut conn, Duration::from_secs(30));
    // Redis gone: readiness drops, the engine stays up.
    drop(conn);
    let mut server = server;
    server.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && http_get(&addr, "/readyz").0 == 200 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(&addr, "/readyz").0, 503);
    assert!(engine.child.try_wait().unwrap().is_none(), "the engine keeps running without Redis");
    assert!(engine.terminate().success());
    assert!(!dir.join("HTTP").exists(), "the address file goes with the engine");
    // What the engine answered is what a replay of its log to the same seq gives: the first
    // answer, the last, and up to six between.
    let step = (answers.len() / 6).max(1);
    let last = answers.len() - 1;
    for answer in answers.values().enumerate().filter(|(i, _)| i % step == 0 || *i == last).map(|(_, a)| a) {
        let seq = answer["seq"].to_string();
        let (code, replayed, err) =
            maestro(&["replay", "state", "--data-dir", d, "--projection", "stream_stats", "--at", &seq, "--from-log"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(&serde_json::from_str::<serde_json::Value>(&replayed).unwrap(), answer, "at seq {seq}");
    }
}

#[test]
fn a_second_engine_on_a_locked_data_dir_exits_at_once_with_a_clear_error() {
    let server = redis(false);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut first = EngineProc::start(&server.url(), &dir, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let mut second = EngineProc::start(&server.url(), &dir, &[]);
    let exit = second.wait_for(Duration::from_secs(5)).expect("the second engine exits at once");
    assert_eq!(exit.code(), Some(1));
    assert!(second.stderr().contains("is locked by another process"), "{}", second.stderr());
    assert!(first.terminate().success());
}

#[test]
fn entries_trimmed_while_pending_are_counted_and_logged_as_lost() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    // A first start creates the group and stores the engine's consumer name.
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success());
    let consumer = std::fs::read_to_string(dir.join("consumer")).unwrap();
    let stream = "maestro:streams:k8s:status";
    // Entries delivered to this consumer (as if it died before recording them), then trimmed
    // away by someone else before it came back.
    let produced = produce(&mut conn, 27, 31, true);
    redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer.trim())
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query::<redis::Value>(&mut conn)
        .unwrap();
    let trimmed: Vec<_> = produced.iter().filter(|(s, _)| s == stream).map(|(_, id)| id.clone()).collect();
    assert_eq!(trimmed.len(), 3);
    redis::cmd("XTRIM").arg(stream).arg("MAXLEN").arg(0).query::<i64>(&mut conn).unwrap();

    let addr = free_http_addr();
    let mut engine = EngineProc::start_with(&server.url(), &dir, &[], &["--http", &addr]);
    wait_drained(&mut conn, Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut status = serde_json::Value::Null;
    while std::time::Instant::now() < deadline {
        if let Ok(body) = std::panic::catch_unwind(|| http_get(&addr, "/status").1) {
            status = serde_json::from_str(&body).unwrap_or_default();
            if status["lost"] == 3 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status["lost"], 3, "{status}");
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metrics.contains(&format!("maestro_entries_lost_total{{stream=\"{stream}\"}} 3")), "{metrics}");
    assert!(engine.terminate().success());
    let stderr = engine.stderr();
    for id in &trimmed {
        assert!(stderr.contains(id.as_str()), "lost entry {id} is named in the log:\n{stderr}");
    }
    assert_eq!(total_pending(&mut conn), 0);
}

/// Kubernetes sets `MAESTRO_PORT`, `MAESTRO_SERVICE_HOST`, ... in every pod of a namespace with
/// a Service called `maestro`: the engine starts anyway and names them in a warning.
#[test]
fn stray_maestro_variables_are_a_warning_not_a_refusal_to_start() {
    let server = redis(false);
    let data = tempfile::tempdir().unwrap();
    let env = [("MAESTRO_PORT", "tcp://10.0.0.7:9090"), ("MAESTRO_SERVICE_HOST", "10.0.0.7")];
    let mut engine = EngineProc::start(&server.url(), &data.path().join("engine"), &env);
    engine.wait_connected();
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let stderr = engine.stderr();
    assert!(stderr.contains("MAESTRO_PORT, MAESTRO_SERVICE_HOST") && stderr.contains("WARN"), "{stderr}");
}
