//! Membership (`--member I/N`): two engines started as the same member, each on its own data
//! dir, against one Redis. One holds the member's lease and writes; the other waits and says
//! so; the waiting one takes over when the holder dies (kill -9) or stops renewing (SIGSTOP
//! past the lease's ttl), and a resumed former holder writes nothing more.
//!
//! What holds across the two logs: every entry is recorded in at least one of them, and in
//! both only if it was in the old holder's pending list when it died or stopped (recorded but
//! not yet acknowledged: the taker claims and records it again, the gap partitions close);
//! every request is answered, twice only for those entries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::chaos::ChaosProxy;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const REQUESTS: &str = "maestro:streams:templates:requests";
const RESULTS: &str = "maestro:streams:templates:results";
const TTL_MS: u64 = 2_000;
const WAITING: &str = "waiting on the member's lease";

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("MAESTRO_LEASE_TTL_MS", TTL_MS.to_string()),
        ("MAESTRO_CLAIM_MIN_IDLE_MS", "500".into()),
        ("MAESTRO_CLAIM_INTERVAL_MS", "250".into()),
    ]
}

fn start_member(url: &str, dir: &Path, http: &str) -> EngineProc {
    let env = env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    EngineProc::start_with(url, dir, &env, &["--member", "0/1", "--http", http])
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn lease_status(http: &str) -> Value {
    let (code, body) = http_get(http, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["lease"].clone()
}

/// Searches `prefix-0..n`, one per `pace`, from another thread; returns (entry id, request id).
fn producer(
    url: String,
    prefix: &'static str,
    n: usize,
    pace: Duration,
) -> std::thread::JoinHandle<Vec<(String, String)>> {
    std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        (0..n)
            .map(|i| {
                let search = format!("{prefix}{i}");
                let id = maestro::flood::send_search(&mut conn, &search).unwrap();
                std::thread::sleep(pace);
                (id, search)
            })
            .collect()
    })
}

/// Every entry pending in the group (entry ids of the requests stream: the only one written).
fn pending(conn: &mut impl redis::ConnectionLike) -> BTreeSet<String> {
    let rows: Vec<(String, String, u64, u64)> =
        redis::cmd("XPENDING").arg(REQUESTS).arg(GROUP).arg("-").arg("+").arg(100_000).query(conn).unwrap();
    rows.into_iter().map(|(id, ..)| id).collect()
}

fn redis_ms(conn: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
    secs * 1000 + micros / 1000
}

fn entry_ms(id: &str) -> u64 {
    id.split('-').next().unwrap().parse().unwrap()
}

/// Request entry ids recorded in a data dir's log.
fn recorded_requests(dir: &Path) -> BTreeSet<String> {
    recorded(&export(dir)).into_keys().filter(|(stream, _)| stream == REQUESTS).map(|(_, id)| id).collect()
}

/// Answers per request id: (results entry id, publisher's origin) each.
fn answers(conn: &mut impl redis::ConnectionLike, prefix: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (id, fields) in read_stream(conn, RESULTS) {
        let Some(data) = fields.get("data").and_then(|d| serde_json::from_str::<Value>(d).ok()) else { continue };
        if let Some(request) = data["request_id"].as_str().filter(|r| r.starts_with(prefix)) {
            out.entry(request.to_string()).or_default().push((id, fields.get("origin").cloned().unwrap_or_default()));
        }
    }
    out
}

fn origin_of(dir: &Path) -> String {
    format!("maestro-engine/{}", std::fs::read_to_string(dir.join("consumer")).unwrap().trim())
}

/// The cross-log guarantee (see the module's comment): returns the entries recorded twice.
fn assert_once_across(
    produced: &[(String, String)],
    logs: [&BTreeSet<String>; 2],
    pending_at_loss: &BTreeSet<String>,
    answers: &BTreeMap<String, Vec<(String, String)>>,
) -> usize {
    let twice: BTreeSet<&String> = logs[0].intersection(logs[1]).collect();
    let lost: Vec<_> = produced.iter().filter(|(id, _)| !logs[0].contains(id) && !logs[1].contains(id)).collect();
    assert!(lost.is_empty(), "{} entries recorded in neither log, first {:?}", lost.len(), lost.first());
    let unexplained: Vec<_> = twice.iter().filter(|id| !pending_at_loss.contains(**id)).collect();
    assert!(
        unexplained.is_empty(),
        "{} entries recorded in both logs that the old holder had acknowledged, first {:?}",
        unexplained.len(),
        unexplained.first()
    );
    for (id, search) in produced {
        let n = answers.get(search).map_or(0, Vec::len);
        let allowed = if twice.contains(id) { 2 } else { 1 };
        assert!(
            (1..=allowed).contains(&n),
            "{search} answered {n} times (allowed {allowed}): {:?}",
            answers.get(search)
        );
    }
    twice.len()
}

#[test]
fn one_member_writes_the_other_waits_and_takes_over_within_the_ttl_after_kill_minus_nine() {
    let started = Instant::now();
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (data.path().join("a"), data.path().join("b"));
    let (http_a, http_b) = (free_http_addr(), free_http_addr());
    let mut a = start_member(&server.url(), &dir_a, &http_a);
    a.wait_connected();
    let mut b = start_member(&server.url(), &dir_b, &http_b);
    wait_until("the second engine waits on the lease", Duration::from_secs(10), || b.stderr().contains(WAITING));

    let holder = lease_status(&http_a);
    assert_eq!(holder["held"], true, "{holder}");
    let waiting = lease_status(&http_b);
    assert_eq!(waiting["held"], false, "{waiting}");
    let pid_a = format!("pid={} ", a.child.id());
    assert!(waiting["holder"].as_str().unwrap().contains(&pid_a), "holder not named: {waiting}");
    assert_eq!(waiting["holder"], holder["holder"]);
    let (_, metrics) = http_get(&http_b, "/metrics");
    assert!(metrics.contains("maestro_lease_held 0"), "{metrics}");
    assert!(http_get(&http_a, "/metrics").1.contains("maestro_lease_held 1"));

    let load = producer(server.url(), "member-", 80, Duration::from_millis(25));
    std::thread::sleep(Duration::from_millis(1_000));
    // Still waiting, said once, and nothing read: the holder answers everything so far.
    assert_eq!(b.stderr().matches(WAITING).count(), 1, "{}", b.stderr());
    assert!(!b.stderr().contains("connected to redis"), "{}", b.stderr());
    a.kill();
    let killed = Instant::now();
    let pending_at_death = pending(&mut conn);
    b.wait_connected();
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_millis(TTL_MS + 3_000), "took over after {takeover:?}");
    let produced = load.join().unwrap();
    wait_drained(&mut conn, Duration::from_secs(20));
    assert_eq!(lease_status(&http_b)["held"], true);
    assert!(b.terminate().success(), "{}", b.stderr());
    b.assert_no_panic();
    assert!(b.stderr().contains("member's lease released"), "{}", b.stderr());

    let (log_a, log_b) = (recorded_requests(&dir_a), recorded_requests(&dir_b));
    assert!(!log_a.is_empty() && !log_b.is_empty(), "both engines recorded: {} / {}", log_a.len(), log_b.len());
    let answers = answers(&mut conn, "member-");
    let twice = assert_once_across(&produced, [&log_a, &log_b], &pending_at_death, &answers);
    println!(
        "took over {takeover:?} after kill -9; {} + {} entries recorded, {twice} in both ({} pending at death); {:?} in all",
        log_a.len(),
        log_b.len(),
        pending_at_death.len(),
        started.elapsed()
    );
}

#[test]
fn a_holder_paused_past_the_ttl_detects_the_loss_before_writing_and_waits_again() {
    let started = Instant::now();
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (data.path().join("a"), data.path().join("b"));
    let (http_a, http_b) = (free_http_addr(), free_http_addr());
    let mut a = start_member(&server.url(), &dir_a, &http_a);
    a.wait_connected();
    let mut b = start_member(&server.url(), &dir_b, &http_b);
    wait_until("the second engine waits on the lease", Duration::from_secs(10), || b.stderr().contains(WAITING));

    let load = producer(server.url(), "paused-", 240, Duration::from_millis(25));
    std::thread::sleep(Duration::from_millis(800));
    sigstop(a.child.id());
    let stopped_ms = redis_ms(&mut conn);
    let pending_at_stop = pending(&mut conn);
    let takeover = wait_until("the waiting engine takes over", Duration::from_millis(TTL_MS + 3_000), || {
        b.stderr().contains("connected to redis")
    });
    // The paused holder sleeps on past the takeover while the new holder writes.
    std::thread::sleep(Duration::from_millis(700));
    let resumed_ms = redis_ms(&mut conn);
    sigcont(a.child.id());
    // What the resumed engine says is checked after what it did: the writes are the invariant.
    let deadline = Instant::now() + Duration::from_secs(5);
    let said_lost = loop {
        let stderr = a.stderr();
        let lost = stderr.find("member's lease lost").is_some_and(|at| stderr[at..].contains(WAITING));
        if lost || Instant::now() > deadline {
            break lost;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = lease_status(&http_a);
    let produced = load.join().unwrap();
    wait_drained(&mut conn, Duration::from_secs(20));
    assert!(a.terminate().success(), "{}", a.stderr());
    assert!(b.terminate().success(), "{}", b.stderr());
    a.assert_no_panic();
    b.assert_no_panic();

    let (log_a, log_b) = (recorded_requests(&dir_a), recorded_requests(&dir_b));
    let late: Vec<_> = log_a.iter().filter(|id| entry_ms(id) > stopped_ms).collect();
    assert!(
        late.is_empty(),
        "the paused engine recorded {} entries produced after its pause, first {:?}",
        late.len(),
        late[0]
    );
    let answers = answers(&mut conn, "paused-");
    let origin_a = origin_of(&dir_a);
    let published_late: Vec<_> =
        answers.values().flatten().filter(|(id, origin)| *origin == origin_a && entry_ms(id) >= resumed_ms).collect();
    assert!(published_late.is_empty(), "the resumed engine published after losing its lease: {published_late:?}");
    let twice = assert_once_across(&produced, [&log_a, &log_b], &pending_at_stop, &answers);
    assert!(said_lost, "the resumed engine did not say it lost the lease and waits:\n{}", a.stderr());
    assert_eq!(status["held"], false, "{status}");
    let pid_b = format!("pid={} ", b.child.id());
    assert!(status["holder"].as_str().unwrap().contains(&pid_b), "new holder not named: {status}");
    println!(
        "took over {takeover:?} into the pause; {} + {} entries recorded, {twice} in both ({} pending at the pause); {:?} in all",
        log_a.len(),
        log_b.len(),
        pending_at_stop.len(),
        started.elapsed()
    );
}

#[test]
fn on_a_redis_cluster_the_waiting_member_takes_over_after_kill_minus_nine() {
    let started = Instant::now();
    let cluster = maestro::redis_cluster::RedisCluster::start(3, 1).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = cluster.client().unwrap().get_connection().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (data.path().join("a"), data.path().join("b"));
    let mut args = vec!["--member", "0/1"];
    let urls = cluster.urls();
    for url in &urls {
        args.extend(["--cluster-node", url.as_str()]);
    }
    let env = env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The single-server URL points nowhere: the lease, like everything else, goes to the cluster.
    let mut a = EngineProc::start_with("redis://127.0.0.1:1", &dir_a, &env, &args);
    a.wait_connected();
    let mut b = EngineProc::start_with("redis://127.0.0.1:1", &dir_b, &env, &args);
    wait_until("the second engine waits on the lease", Duration::from_secs(15), || b.stderr().contains(WAITING));
    let key = maestro_engine::lease::lease_key(GROUP, 0);
    let holder: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    assert!(holder.contains(&format!("pid={} ", a.child.id())), "{holder}");

    let mut produced = Vec::new();
    let mut search = |conn: &mut redis::cluster::ClusterConnection, i: usize| {
        let request = format!("cluster-{i}");
        let data = serde_json::json!({"request_id": request, "operation": "search", "tenant_id": "acme",
            "user_id": "alice", "parameters": {"query": "fastapi", "page": 1, "page_size": 5}});
        let id: String =
            redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data.to_string()).query(conn).unwrap();
        produced.push((id, request));
    };
    for i in 0..30 {
        search(&mut conn, i);
    }
    std::thread::sleep(Duration::from_millis(300));
    a.kill();
    let killed = Instant::now();
    let pending_at_death = pending(&mut conn);
    for i in 30..60 {
        search(&mut conn, i);
    }
    b.wait_connected();
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_millis(TTL_MS + 3_000), "took over after {takeover:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while answers(&mut conn, "cluster-").len() < produced.len() || !pending(&mut conn).is_empty() {
        assert!(Instant::now() < deadline, "not all answered: {:?}", answers(&mut conn, "cluster-").len());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.terminate().success(), "{}", b.stderr());
    b.assert_no_panic();
    let (log_a, log_b) = (recorded_requests(&dir_a), recorded_requests(&dir_b));
    let answers = answers(&mut conn, "cluster-");
    let twice = assert_once_across(&produced, [&log_a, &log_b], &pending_at_death, &answers);
    println!(
        "cluster: took over {takeover:?} after kill -9; {} + {} recorded, {twice} in both; {:?} in all",
        log_a.len(),
        log_b.len(),
        started.elapsed()
    );
}

#[test]
fn a_holder_cut_off_from_redis_past_the_ttl_stops_writing_and_takes_the_lease_again_after() {
    let started = Instant::now();
    let server = redis(false);
    let mut conn = connect(&server);
    let proxy = ChaosProxy::start(&server.addr());
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("a");
    let http = free_http_addr();
    let mut a = start_member(&proxy.url(), &dir, &http);
    a.wait_connected();
    let load = producer(server.url(), "cut-", 120, Duration::from_millis(25));
    std::thread::sleep(Duration::from_millis(500));
    proxy.blackhole(true);
    let lost = wait_until("the cut-off holder gives its lease up", Duration::from_millis(TTL_MS + 3_000), || {
        a.stderr().contains("member's lease lost")
    });
    assert_eq!(lease_status(&http)["held"], false);
    proxy.blackhole(false);
    wait_until("it takes the lease again", Duration::from_secs(10), || {
        a.stderr().matches("holding the member's lease").count() == 2
    });
    let produced = load.join().unwrap();
    wait_drained(&mut conn, Duration::from_secs(20));
    assert!(a.terminate().success(), "{}", a.stderr());
    a.assert_no_panic();
    let log = recorded(&export(&dir));
    let answers = answers(&mut conn, "cut-");
    for (id, search) in &produced {
        assert_eq!(log.get(&(REQUESTS.to_string(), id.clone())), Some(&1), "{search} not recorded once");
        assert_eq!(answers.get(search).map(Vec::len), Some(1), "{search} not answered once");
    }
    println!("cut off: lease given up {lost:?} into the outage; {:?} in all", started.elapsed());
}
