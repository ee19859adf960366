//! The read path against real redis-servers: a stream Redis refuses for a reason of its own
//! (wrong type, an ACL) stops alone and flows again once fixed; a consumer group standing past
//! entries the log never recorded is moved back (or, when accepted, counted and left).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro::traffic::{Message, Traffic};
use maestro_schemas::StreamSet;
use serde_json::Value;
use std::time::{Duration, Instant};

const JOBS: &str = "maestro:streams:k8s:jobs";
const REQUESTS: &str = "maestro:streams:templates:requests";

/// `n` control messages of every stream but `except`.
fn messages_except(n: u64, seed: u64, except: &str) -> Vec<Message> {
    let mut traffic = Traffic::new(seed, StreamSet::default());
    (0..n).map(|i| traffic.control_message(i)).filter(|(stream, _)| stream != except).collect()
}

/// `/status` once the engine answers (at most 15 s).
fn status(addr: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            let (code, body) = http_get(addr, "/status");
            if code == 200 {
                return serde_json::from_str(&body).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no /status from {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn others(broken: &str) -> Vec<String> {
    streams().into_iter().filter(|s| s != broken).collect()
}

/// Runs the engine against a Redis where `broken` is refused, produces on the other streams,
/// checks they all flow and that the broken key is named everywhere; `fix` then repairs it and
/// entries on it flow too.
fn one_refused_stream_stops_alone(
    url: &str,
    admin: &mut redis::Connection,
    expected_error: &str,
    fix: impl FnOnce(&mut redis::Connection),
) {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut produced = produce_messages(admin, &messages_except(270, 11, JOBS));
    let addr = free_http_addr();
    let mut engine = EngineProc::start_with(url, &dir, &[("MAESTRO_INFO_INTERVAL_MS", "200")], &["--http", &addr]);
    let healthy = others(JOBS);
    wait_until("the other streams drained", Duration::from_secs(60), || {
        maestro::groups::drained(admin, &healthy, GROUP)
    });
    produced.extend(produce_messages(admin, &messages_except(90, 12, JOBS)));
    wait_until("the other streams drained again", Duration::from_secs(60), || {
        maestro::groups::drained(admin, &healthy, GROUP)
    });

    let stderr = engine.stderr();
    let named = stderr.lines().find(|l| l.contains(JOBS) && l.contains(expected_error));
    assert!(named.is_some(), "the refused key and its error are logged:\n{stderr}");
    assert!(!stderr.contains("redis unavailable"), "a stream's error is not an outage:\n{stderr}");
    let snap = status(&addr);
    assert_eq!(snap["streams"][JOBS]["up"], false, "{snap}");
    assert!(snap["streams"][JOBS]["error"].as_str().unwrap().contains(expected_error), "{snap}");
    assert_eq!(snap["streams"][JOBS]["errors"], 1, "{snap}");
    for stream in &healthy {
        assert_eq!(snap["streams"][stream.as_str()]["up"], true, "{stream}: {snap}");
    }
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metrics.contains(&format!("maestro_stream_up{{stream=\"{JOBS}\"}} 0")), "{metrics}");
    assert!(metrics.contains(&format!("maestro_stream_up{{stream=\"{REQUESTS}\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("maestro_stream_errors_total{{stream=\"{JOBS}\"}} 1")), "{metrics}");

    fix(admin);
    let mut traffic = Traffic::new(13, StreamSet::default());
    let jobs: Vec<Message> = (0..90).map(|i| traffic.control_message(i)).filter(|(s, _)| s == JOBS).collect();
    assert!(!jobs.is_empty(), "the mix has entries for {JOBS}");
    produced.extend(produce_messages(admin, &jobs));
    wait_until("every stream drained once the key is fixed", Duration::from_secs(60), || drained(admin));
    let snap = status(&addr);
    assert_eq!(snap["streams"][JOBS]["up"], true, "{snap}");
    assert_eq!(snap["streams"][JOBS]["error"], "", "{snap}");
    assert!(engine.stderr().contains("stream readable again"), "{}", engine.stderr());
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    assert_exactly_once(&produced, &export(&dir));
}

#[test]
fn a_wrong_type_key_stops_only_its_stream_and_it_flows_once_deleted() {
    let server = redis(false);
    let mut conn = connect(&server);
    let _: () = redis::cmd("SET").arg(JOBS).arg("x").query(&mut conn).unwrap();
    one_refused_stream_stops_alone(&server.url(), &mut conn, "WRONGTYPE", |conn| {
        let _: () = redis::cmd("DEL").arg(JOBS).query(conn).unwrap();
    });
}

#[test]
fn a_key_the_acl_refuses_stops_only_its_stream_and_it_flows_once_allowed() {
    let server = redis(false);
    let mut conn = connect(&server);
    // Every key the engine uses but the k8s jobs stream itself (its dead-letter stream is allowed).
    let patterns = [
        "~maestro:engine:*",
        "~maestro:streams:templates:*",
        "~maestro:streams:automation:*",
        "~maestro:streams:k8s:results*",
        "~maestro:streams:k8s:status*",
        "~maestro:streams:k8s:jobs:*",
    ];
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("engine")
        .arg("on")
        .arg(">engine-secret")
        .arg("+@all")
        .arg(&patterns[..])
        .query(&mut conn)
        .unwrap();
    let url = server.url().replacen("redis://", "redis://engine:engine-secret@", 1);
    one_refused_stream_stops_alone(&url, &mut conn, "NOPERM", |conn| {
        let _: () = redis::cmd("ACL").arg("SETUSER").arg("engine").arg(format!("~{JOBS}")).query(conn).unwrap();
    });
}

/// 50 entries on the template requests stream, then the group created at `$` on every stream
/// by someone else: `>` reads alone would never deliver them.
fn group_created_past_fifty_entries(conn: &mut redis::Connection) -> Vec<(String, String)> {
    let mut traffic = Traffic::new(21, StreamSet::default());
    let messages: Vec<Message> = (0..50).map(|_| traffic.control_message(0)).collect();
    let produced = produce_messages(conn, &messages);
    for stream in streams() {
        let _: () =
            redis::cmd("XGROUP").arg("CREATE").arg(&stream).arg(GROUP).arg("$").arg("MKSTREAM").query(conn).unwrap();
    }
    produced
}

/// The warning naming the skipped range: (first, last, count) as logged.
fn skip_line(stderr: &str) -> Option<String> {
    stderr.lines().find(|l| l.contains("stands past entries the log never recorded")).map(str::to_string)
}

#[test]
fn a_group_created_past_unrecorded_entries_is_moved_back_and_they_are_recorded() {
    let server = redis(false);
    let mut conn = connect(&server);
    let skipped = group_created_past_fifty_entries(&mut conn);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_http_addr();
    let mut engine = EngineProc::start_with(&server.url(), &dir, &[], &["--http", &addr]);
    wait_until("50 entries acknowledged", Duration::from_secs(60), || {
        status(&addr)["entries_acked"].as_u64().unwrap() >= 50
    });
    wait_drained(&mut conn, Duration::from_secs(60));
    let snap = status(&addr);
    assert_eq!(snap["streams"][REQUESTS]["group_skipped"], 50, "{snap}");
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metrics.contains(&format!("maestro_group_skipped_total{{stream=\"{REQUESTS}\"}} 50")), "{metrics}");
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let stderr = engine.stderr();
    let line = skip_line(&stderr).unwrap_or_else(|| panic!("the skip is logged:\n{stderr}"));
    for part in [REQUESTS, "count=50", &format!("first={}", skipped[0].1), &format!("last={}", skipped[49].1)] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(stderr.contains("consumer group moved back"), "{stderr}");
    assert_exactly_once(&skipped, &export(&dir));
}

#[test]
fn an_accepted_group_skip_is_counted_and_logged_once_but_not_read() {
    let server = redis(false);
    let mut conn = connect(&server);
    let skipped = group_created_past_fifty_entries(&mut conn);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_http_addr();
    let env = [("MAESTRO_ACCEPT_GROUP_SKIP", "true"), ("MAESTRO_INFO_INTERVAL_MS", "100"), ("MAESTRO_BLOCK_MS", "100")];
    let mut engine = EngineProc::start_with(&server.url(), &dir, &env, &["--http", &addr]);
    wait_until("the skip logged", Duration::from_secs(30), || skip_line(&engine.stderr()).is_some());
    // Many checks of the group's position run meanwhile (every 100 ms): the skip is counted once.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status(&addr)["streams"][REQUESTS]["group_skipped"], 50);
    let mut traffic = Traffic::new(22, StreamSet::default());
    let later: Vec<Message> = (0..5).map(|_| traffic.control_message(0)).collect();
    let later = produce_messages(&mut conn, &later);
    wait_drained(&mut conn, Duration::from_secs(60));
    let snap = status(&addr);
    assert_eq!(snap["streams"][REQUESTS]["group_skipped"], 50, "{snap}");
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let stderr = engine.stderr();
    let line = skip_line(&stderr).unwrap_or_else(|| panic!("the skip is logged:\n{stderr}"));
    for part in [REQUESTS, "count=50", &format!("first={}", skipped[0].1), &format!("last={}", skipped[49].1)] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(stderr.contains("skip accepted"), "{stderr}");
    assert!(!stderr.contains("consumer group moved back"), "{stderr}");
    let records = export(&dir);
    let seen = recorded(&records);
    assert!(skipped.iter().all(|k| !seen.contains_key(k)), "none of the skipped entries is read");
    assert_exactly_once(&later, &records);
}

#[test]
fn an_oversized_entry_queued_before_start_is_rejected_by_its_size_alone() {
    let server = redis(false);
    let mut conn = connect(&server);
    let payload = vec![b'x'; 2 * 1024 * 1024];
    let big: String = redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(&payload).query(&mut conn).unwrap();
    let produced = produce(&mut conn, 90, 31, true);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let dead = read_stream(&mut conn, &format!("{REQUESTS}:dead"));
    let copy = dead.iter().find(|(_, f)| f.get("dead_id") == Some(&big)).expect("the oversized entry is dead-lettered");
    assert_eq!(copy.1["dead_reason"], "too_large");
    // Its size, names and values, as Redis counted it: 4 bytes of name, 2 MiB of value.
    assert_eq!(copy.1["dead_detail"], format!("{} bytes, the limit is {}", 4 + payload.len(), 1024 * 1024));
    assert!(!copy.1.contains_key("data"), "the payload is not copied");
    let mut all = produced;
    all.push((REQUESTS.to_string(), big));
    assert_exactly_once(&all, &export(&dir));
}

fn net_output_bytes(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(conn).unwrap();
    let line = info.lines().find_map(|l| l.strip_prefix("total_net_output_bytes:")).expect("INFO stats has it");
    line.trim().parse().unwrap()
}

#[test]
fn oversized_entries_arriving_together_while_running_never_cross_the_connection() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    wait_until("the engine reads", Duration::from_secs(30), || {
        let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO").arg("GROUPS").arg(REQUESTS).query(&mut conn);
        matches!(groups, Ok(redis::Value::Array(g)) if !g.is_empty())
    });
    let before = net_output_bytes(&mut conn);
    // Four entries of 8 MiB land in one transaction, so a read that takes what is waiting would
    // get all four at once.
    let payload = vec![b'x'; 8 * 1024 * 1024];
    let mut transaction = redis::pipe();
    transaction.atomic();
    for _ in 0..4 {
        transaction.cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(&payload);
    }
    let big: Vec<String> = transaction.query(&mut conn).unwrap();
    let mut all: Vec<(String, String)> = big.iter().map(|id| (REQUESTS.to_string(), id.clone())).collect();
    all.extend(produce(&mut conn, 40, 33, true));
    wait_drained(&mut conn, Duration::from_secs(60));
    let sent = net_output_bytes(&mut conn) - before;
    assert!(sent < 2 * 1024 * 1024, "{sent} bytes left Redis for 32 MiB of oversized entries and 40 small ones");
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let dead = read_stream(&mut conn, &format!("{REQUESTS}:dead"));
    for id in &big {
        let copy =
            dead.iter().find(|(_, f)| f.get("dead_id") == Some(id)).expect("each oversized entry is dead-lettered");
        assert_eq!(copy.1["dead_reason"], "too_large");
    }
    assert_exactly_once(&all, &export(&dir));
}

/// Four 8 MiB entries and forty small ones, read by `consumer` of the engine's group and left
/// pending there (its reply is read before the measurement starts); then the engine runs on
/// `dir` with `env`. No payload of an oversized entry crosses the connection again: each is
/// dead-lettered `too_large` by id, and every entry is recorded once.
fn oversized_entries_left_pending(server: &RedisServer, dir: &std::path::Path, consumer: &str, env: &[(&str, &str)]) {
    let mut conn = connect(server);
    let payload = vec![b'x'; 8 * 1024 * 1024];
    let mut big = Vec::new();
    for _ in 0..4 {
        let id: String = redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(&payload).query(&mut conn).unwrap();
        big.push(id);
    }
    let mut all: Vec<(String, String)> = big.iter().map(|id| (REQUESTS.to_string(), id.clone())).collect();
    all.extend(produce(&mut conn, 40, 34, true));
    for stream in streams() {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query(&mut conn)
            .unwrap();
    }
    assert_eq!(total_pending(&mut conn), all.len() as u64, "every entry waits in {consumer}'s pending list");
    let before = net_output_bytes(&mut conn);
    let mut engine = EngineProc::start(&server.url(), dir, env);
    wait_drained(&mut conn, Duration::from_secs(60));
    let sent = net_output_bytes(&mut conn) - before;
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert!(
        sent < 2 * 1024 * 1024,
        "{sent} bytes left Redis for 32 MiB of oversized pending entries and 40 small ones"
    );
    let dead = read_stream(&mut conn, &format!("{REQUESTS}:dead"));
    for id in &big {
        let copy =
            dead.iter().find(|(_, f)| f.get("dead_id") == Some(id)).expect("each oversized entry is dead-lettered");
        assert_eq!(copy.1["dead_reason"], "too_large");
    }
    assert_exactly_once(&all, &export(dir));
}

#[test]
fn oversized_entries_pending_at_start_never_cross_the_connection() {
    let server = redis(false);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    // A first run creates the group and names the engine's consumer in the data dir.
    let mut first = EngineProc::start(&server.url(), &dir, &[]);
    first.wait_connected();
    assert!(first.terminate().success(), "{}", first.stderr());
    let consumer = std::fs::read_to_string(dir.join("consumer")).unwrap();
    oversized_entries_left_pending(&server, &dir, consumer.trim(), &[]);
}

#[test]
fn oversized_entries_claimed_from_a_stopped_consumer_never_cross_the_connection() {
    let server = redis(false);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut conn = connect(&server);
    for stream in streams() {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut conn)
            .unwrap();
    }
    oversized_entries_left_pending(&server, &dir, "a-stopped-engine", &[("MAESTRO_CLAIM_MIN_IDLE_MS", "50")]);
}
