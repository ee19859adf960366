//! The router (`maestro route --partitions P`): old producers write today's unpartitioned keys
//! in the old formats; the router moves every entry of the streams producers write into the
//! partition its key hashes to, under its own id, byte for byte, exactly once, through a crash
//! between copying and acknowledging (a crash point), a SIGKILL mid-load and a restart, on one
//! server and on a 3-master Redis Cluster; a second router waits on the router's lease and
//! says so. The answer streams (results, usage, status) get no partition keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro::redis_cluster::RedisCluster;
use maestro::traffic::{Message, Traffic};
use maestro_engine::config::EngineConfig;
use maestro_engine::router::{PartitionOf, router_group};
use maestro_schemas::partition::partition_key;
use maestro_schemas::{EntryId, Fields, StreamSet};
use std::collections::BTreeMap;
use std::path::Path;

use std::time::{Duration, Instant};

const PARTITIONS: u32 = 4;
const REQUESTS: &str = "maestro:streams:templates:requests";
const WAITING: &str = "waiting on the router's lease";
const ALREADY: &str = "entries already in their partition acknowledged";

/// Where the router connects: one server, or a cluster's seed nodes.
#[derive(Clone)]
enum Target {
    Single(String),
    Cluster(Vec<String>),
}

/// `maestro route` as a child process; its stderr is appended to one file per test.
fn start_router(target: &Target, stderr_path: &Path, env: &[(&str, &str)], extra: &[&str]) -> EngineProc {
    let partitions = PARTITIONS.to_string();
    let mut args = vec!["route", "--partitions", partitions.as_str()];
    match target {
        Target::Single(url) => args.extend(["--redis-url", url.as_str()]),
        // The single-server URL points nowhere: in cluster mode it must not be used.
        Target::Cluster(urls) => {
            args.extend(["--redis-url", "redis://127.0.0.1:1"]);
            args.extend(urls.iter().flat_map(|url| ["--cluster-node", url.as_str()]));
        }
    }
    args.extend(extra);
    EngineProc::spawn(&args, stderr_path, &[&[("MAESTRO_LEASE_TTL_MS", "2000")][..], env].concat())
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn routed_streams() -> Vec<String> {
    StreamSet::default().routed().into_iter().map(|(_, key)| key.to_string()).collect()
}

fn partition_of() -> PartitionOf {
    maestro::domains::routing(&EngineConfig { partitions: PARTITIONS, ..EngineConfig::default() }).partition_of
}

/// The old producers' mix over all nine streams (control messages of each in turn, every
/// fourth from the realistic mix), with a malformed template request every fiftieth.
fn messages(seed: u64, n: u64) -> Vec<Message> {
    let mut traffic = Traffic::new(seed, StreamSet::default());
    (0..n)
        .map(|k| match k {
            _ if k % 50 == 7 => (REQUESTS.to_string(), vec![("data".to_string(), format!("{{not json {k}"))]),
            _ if k % 4 == 0 => traffic.next_message(),
            _ => traffic.control_message(k),
        })
        .collect()
}

/// Writes `messages` one XADD each, `chunk` at a time with a pause between: load that goes
/// on while routers crash and restart.
fn write_paced(conn: &mut impl redis::ConnectionLike, messages: &[Message], chunk: usize, pause: Duration) {
    for part in messages.chunks(chunk) {
        for (stream, fields) in part {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("*");
            for (name, value) in fields {
                cmd.arg(name).arg(value);
            }
            let _: String = cmd.query(conn).unwrap();
        }
        std::thread::sleep(pause);
    }
}

/// Every entry of `key` as Redis holds it: id and fields as bytes, in order.
fn entries(conn: &mut impl redis::ConnectionLike, key: &str) -> Vec<(EntryId, Fields)> {
    let reply: redis::Value = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(conn).unwrap();
    let list = maestro_engine::source::parse_entry_list(key, reply).unwrap();
    list.into_iter().map(|e| (e.id, e.fields.unwrap())).collect()
}

/// The invariant: every entry of every routed stream is in exactly one partition key, the one
/// its key hashes to, under its own id with its fields byte for byte; the partitions hold
/// nothing else; no answer stream has partition keys; the router's group has nothing pending
/// and nothing undelivered. Returns the entries per partition.
fn assert_routed_once(conn: &mut impl redis::ConnectionLike) -> Vec<usize> {
    let partition_of = partition_of();
    let mut per_partition = vec![0; PARTITIONS as usize];
    for stream in routed_streams() {
        let mut copies: BTreeMap<EntryId, Vec<(u32, Fields)>> = BTreeMap::new();
        for p in 0..PARTITIONS {
            for (id, fields) in entries(conn, &partition_key(&stream, p, PARTITIONS)) {
                copies.entry(id).or_default().push((p, fields));
                per_partition[p as usize] += 1;
            }
        }
        let source = entries(conn, &stream);
        for (id, fields) in &source {
            let found = copies.remove(id).unwrap_or_default();
            assert_eq!(
                found.len(),
                1,
                "{stream} {id}: in {} partitions: {:?}",
                found.len(),
                found.iter().map(|c| c.0).collect::<Vec<_>>()
            );
            let expected = partition_of(&stream, *id, fields, PARTITIONS);
            assert_eq!(found[0].0, expected, "{stream} {id}: in partition {} instead of {expected}", found[0].0);
            assert_eq!(&found[0].1, fields, "{stream} {id}: fields differ from the source's");
        }
        assert!(copies.is_empty(), "{stream}: partitions hold entries the source does not: {:?}", copies.keys());
    }
    for (_, stream) in StreamSet::default().all().into_iter().filter(|(role, _)| !role.is_routed()) {
        for p in 0..PARTITIONS {
            let key = partition_key(stream, p, PARTITIONS);
            let exists: u32 = redis::cmd("EXISTS").arg(&key).query(conn).unwrap();
            assert_eq!(exists, 0, "an answer stream was routed: {key}");
        }
    }
    let group = router_group(GROUP);
    assert!(maestro::groups::drained(conn, &routed_streams(), &group), "the router's group is not drained");
    per_partition
}

fn produced_routed(conn: &mut impl redis::ConnectionLike) -> usize {
    routed_streams().iter().map(|s| entries(conn, s).len()).sum()
}

/// Crash between copy and acknowledgement (a crash point in the 6th batch), then a SIGKILL of
/// the next router mid-load, then a router that finishes: the common part of (a) and (b).
fn crash_kill_restart(target: &Target, stderr: &Path, mut load_done: impl FnMut() -> bool) -> EngineProc {
    let mut crashing = start_router(target, stderr, &[("FAILPOINTS", "router-before-ack=5*off->return")], &[]);
    let exit = crashing.wait_for(Duration::from_secs(60)).unwrap_or_else(|| panic!("{}", crashing.stderr()));
    assert!(crashing.stderr().contains("failpoint fired"), "{exit:?}\n{}", crashing.stderr());
    let mut killed = start_router(target, stderr, &[], &[]);
    wait_until("the second router routes", Duration::from_secs(20), || {
        killed.stderr().matches("router connected to redis").count() == 2
    });
    std::thread::sleep(Duration::from_millis(400));
    assert!(!load_done(), "the load ended before the SIGKILL: make it longer");
    killed.kill();
    let last = start_router(target, stderr, &[], &[]);
    wait_until("the third router routes", Duration::from_secs(20), || {
        last.stderr().matches("router connected to redis").count() == 3
    });
    last
}

/// Routes the load `producer` writes through [`crash_kill_restart`], waits until the router's
/// group has drained every routed stream, stops the last router and checks that every entry was
/// routed once and that a router found copies made before the crash. Returns the entries per
/// partition.
fn route_through_crashes(
    conn: &mut impl redis::ConnectionLike,
    target: &Target,
    stderr: &Path,
    producer: std::thread::JoinHandle<()>,
    drain_within: Duration,
) -> Vec<usize> {
    let mut last = crash_kill_restart(target, stderr, || producer.is_finished());
    producer.join().unwrap();
    let group = router_group(GROUP);
    wait_until("the router drains the streams", drain_within, || {
        maestro::groups::drained(conn, &routed_streams(), &group)
    });
    assert!(last.terminate().success(), "{}", last.stderr());
    let per_partition = assert_routed_once(conn);
    let log = last.stderr();
    assert!(log.contains(ALREADY), "no router found a copy made before the crash:\n{log}");
    last.assert_no_panic();
    per_partition
}

#[test]
fn every_entry_is_routed_once_through_a_crash_before_the_ack_and_a_sigkill_on_one_server() {
    let started = Instant::now();
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let stderr = data.path().join("router.stderr.log");
    let url = server.url();
    let producer = std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        write_paced(&mut conn, &messages(31, 6_000), 40, Duration::from_millis(40));
    });
    let target = Target::Single(server.url());
    let per_partition = route_through_crashes(&mut conn, &target, &stderr, producer, Duration::from_secs(60));
    assert!(per_partition.iter().all(|n| *n > 0), "a partition got nothing: {per_partition:?}");
    println!(
        "one server: {} entries routed once into {per_partition:?}; {:?} in all",
        produced_routed(&mut conn),
        started.elapsed()
    );
}

#[test]
fn every_entry_is_routed_once_on_a_redis_cluster_with_partitions_on_several_masters() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 1).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = cluster.client().unwrap().get_connection().unwrap();
    let masters: std::collections::BTreeSet<usize> =
        (0..PARTITIONS).map(|p| cluster.master_of(&partition_key(REQUESTS, p, PARTITIONS)).unwrap()).collect();
    assert!(masters.len() >= 2, "every partition on one master: {masters:?}");
    let data = tempfile::tempdir().unwrap();
    let stderr = data.path().join("router.stderr.log");
    let client = cluster.client().unwrap();
    let producer = std::thread::spawn(move || {
        let mut conn = client.get_connection().unwrap();
        write_paced(&mut conn, &messages(32, 4_500), 30, Duration::from_millis(40));
    });
    let target = Target::Cluster(cluster.urls());
    let per_partition = route_through_crashes(&mut conn, &target, &stderr, producer, Duration::from_secs(90));
    println!(
        "cluster: {} entries routed once into {per_partition:?} on masters {masters:?}; {:?} in all",
        produced_routed(&mut conn),
        started.elapsed()
    );
}

#[test]
fn a_second_router_waits_on_the_lease_says_so_and_takes_over_when_the_first_stops() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let target = Target::Single(server.url());
    let (http_a, http_b) = (free_http_addr(), free_http_addr());
    let mut a = start_router(&target, &data.path().join("a.log"), &[], &["--http", &http_a]);
    wait_until("the first router routes", Duration::from_secs(15), || a.stderr().contains("router connected"));
    let mut b = start_router(&target, &data.path().join("b.log"), &[], &["--http", &http_b]);
    wait_until("the second router waits", Duration::from_secs(15), || b.stderr().contains(WAITING));

    write_paced(&mut conn, &messages(33, 300), 100, Duration::from_millis(10));
    let group = router_group(GROUP);
    wait_until("the first router routes the load", Duration::from_secs(30), || {
        maestro::groups::drained(&mut conn, &routed_streams(), &group)
    });
    let status = |http: &str| serde_json::from_str::<serde_json::Value>(&http_get(http, "/status").1).unwrap();
    let (holding, waiting) = (status(&http_a), status(&http_b));
    assert_eq!(holding["lease"]["held"], true, "{holding}");
    assert_eq!(waiting["lease"]["held"], false, "{waiting}");
    let pid_a = format!("pid={} ", a.child.id());
    assert!(waiting["lease"]["holder"].as_str().unwrap().contains(&pid_a), "holder not named: {waiting}");
    assert!(waiting.get("routed").is_none(), "the waiting router routed: {waiting}");
    let routed: u64 = holding["routed"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|per| per.as_object().unwrap().values())
        .map(|counts| counts["routed"].as_u64().unwrap())
        .sum();
    assert_eq!(routed as usize, produced_routed(&mut conn), "{holding}");
    assert!(http_get(&http_a, "/metrics").1.contains("maestro_routed_total{"), "no routing counters");
    assert_eq!(b.stderr().matches(WAITING).count(), 1, "said more than once:\n{}", b.stderr());
    assert!(!b.stderr().contains("router connected"), "{}", b.stderr());

    assert!(a.terminate().success(), "{}", a.stderr());
    assert!(a.stderr().contains("router's lease released"), "{}", a.stderr());
    wait_until("the second router takes over", Duration::from_secs(10), || b.stderr().contains("router connected"));
    write_paced(&mut conn, &messages(34, 300), 100, Duration::from_millis(10));
    wait_until("the second router routes the rest", Duration::from_secs(30), || {
        maestro::groups::drained(&mut conn, &routed_streams(), &group)
    });
    assert!(b.terminate().success(), "{}", b.stderr());
    assert_routed_once(&mut conn);
}
