//! The engine against a real Redis Cluster: three masters with one replica each on loopback
//! (`maestro::redis_cluster`), the engine in cluster mode (`--cluster-node`), producers writing
//! today's unpartitioned stream keys in the old formats through a cluster client. Every request
//! answered exactly once, every entry recorded once, nothing pending, `maestro verify` ok:
//! through a crash right after a publication (what the per-stream publish guard is for),
//! through a master killed with SIGKILL mid-load and its replica promoted, and through a master
//! that dies holding answers its replica never got (what the `WAIT` after a publication is for).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro::redis_cluster::RedisCluster;
use maestro::traffic::{Message, Traffic};
use maestro_schemas::StreamSet;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const REQUESTS: &str = "maestro:streams:templates:requests";
const RESULTS: &str = "maestro:streams:templates:results";

fn cluster() -> RedisCluster {
    RedisCluster::start(3, 1).unwrap_or_else(|e| panic!("{e}"))
}

fn connect_cluster(cluster: &RedisCluster) -> redis::cluster::ClusterConnection {
    cluster.client().unwrap().get_connection().unwrap()
}

/// The engine in cluster mode, every node a seed; claims of idle entries come quickly, so that
/// entries a failover left pending are taken back within the test.
fn engine(cluster: &RedisCluster, dir: &Path, env: &[(&str, &str)]) -> EngineProc {
    let urls = cluster.urls();
    let mut args = Vec::new();
    for url in &urls {
        args.extend(["--cluster-node", url.as_str()]);
    }
    let mut env = env.to_vec();
    env.extend([("MAESTRO_CLAIM_MIN_IDLE_MS", "2000"), ("MAESTRO_CLAIM_INTERVAL_MS", "500")]);
    // The single-server URL points nowhere: in cluster mode it must not be used.
    EngineProc::start_with("redis://127.0.0.1:1", dir, &env, &args)
}

/// What a producer wrote: (stream, id) of every entry Redis acknowledged, and the request id of
/// each template request among them.
#[derive(Default)]
struct Produced {
    entries: Vec<(String, String)>,
    requests: BTreeMap<(String, String), String>,
}

/// The old producers' mix: every fourth entry from the realistic mix (template requests, their
/// creates with bodies of kilobytes...), the rest ~300-byte control messages of the nine
/// streams in turn.
fn messages(seed: u64, from: u64, n: u64) -> Vec<Message> {
    let mut traffic = Traffic::new(seed, StreamSet::default());
    (from..from + n).map(|k| if k % 4 == 0 { traffic.next_message() } else { traffic.control_message(k) }).collect()
}

/// Template retrieves only (the control mix's first stream): their answers are the first
/// outputs published, whatever shares a master with the results stream.
fn requests_only(seed: u64, from: u64, n: u64) -> Vec<Message> {
    let mut traffic = Traffic::new(seed, StreamSet::default());
    (from..from + n).map(|k| traffic.control_message(9 * k)).collect()
}

/// Writes `messages` one XADD each through the cluster connection, retrying one that failed
/// (a master going away) until a deadline; an entry whose XADD got no answer may exist or not,
/// and is not counted as produced.
fn write(conn: &mut redis::cluster::ClusterConnection, messages: &[Message], produced: &mut Produced) {
    for (stream, fields) in messages {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let id: String = loop {
            match cmd.query(conn) {
                Ok(id) => break id,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("producer: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("producer: {e}"),
            }
        };
        if stream == REQUESTS {
            let data = fields.iter().find(|(k, _)| k == "data").map(|(_, v)| v.as_str()).unwrap_or("{}");
            let data: serde_json::Value = serde_json::from_str(data).unwrap();
            let request = data["request_id"].as_str().unwrap().to_string();
            produced.requests.insert((stream.clone(), id.clone()), request);
        }
        produced.entries.push((stream.clone(), id));
    }
}

/// Engine answers (outputs carrying the engine's origin) on the results stream, per request id.
fn answers(conn: &mut redis::cluster::ClusterConnection) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, fields) in read_stream(conn, RESULTS) {
        if !fields.get("origin").is_some_and(|o| o.starts_with("maestro-engine/")) {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(&fields["data"]).unwrap();
        *out.entry(data["request_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    out
}

/// Waits until the group has been delivered everything and nothing is pending, with the
/// engine still running.
fn wait_all_done(conn: &mut redis::cluster::ClusterConnection, engine: &EngineProc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !drained(conn) {
        assert!(Instant::now() < deadline, "not drained within {timeout:?}; engine:\n{}", engine.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The invariants once the engine stopped: every entry Redis still holds was recorded once and
/// nothing else was; every request recorded was answered exactly once and no request twice;
/// nothing pending; `maestro verify` accepts the log. Entries Redis itself lost (acknowledged
/// by a master that died before its replica copied them) are counted and returned.
fn assert_invariants(conn: &mut redis::cluster::ClusterConnection, produced: &Produced, dir: &Path) -> usize {
    let records = export(dir);
    let seen = recorded(&records);
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "{} entries recorded twice, first {:?}", duplicated.len(), duplicated.first());
    let produced_set: BTreeSet<&(String, String)> = produced.entries.iter().collect();
    let strangers: Vec<_> = seen.keys().filter(|k| !produced_set.contains(k)).collect();
    assert!(strangers.is_empty(), "the log holds entries nobody produced, first {:?}", strangers.first());
    let mut held = BTreeSet::new();
    for stream in streams() {
        held.extend(read_stream(conn, &stream).into_iter().map(|(id, _)| (stream.clone(), id)));
    }
    let lost: Vec<_> = produced.entries.iter().filter(|k| held.contains(*k) && !seen.contains_key(*k)).collect();
    assert!(lost.is_empty(), "{} entries Redis holds were never recorded, first {:?}", lost.len(), lost.first());
    let lost_by_redis = produced.entries.iter().filter(|k| !held.contains(*k) && !seen.contains_key(*k)).count();
    let answers = answers(conn);
    let twice: Vec<_> = answers.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} requests answered more than once, first {:?}", twice.len(), twice.first());
    let unanswered: Vec<_> = produced
        .requests
        .iter()
        .filter(|(entry, request)| seen.contains_key(*entry) && !answers.contains_key(*request))
        .collect();
    assert!(unanswered.is_empty(), "{} recorded requests unanswered, first {:?}", unanswered.len(), unanswered.first());
    assert!(!answers.is_empty(), "no request was answered at all");
    assert_eq!(total_pending(conn), 0, "entries left pending");
    let (code, out, err) = maestro(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "verify failed:\n{out}\n{err}");
    lost_by_redis
}

#[test]
fn a_crash_right_after_publishing_on_a_cluster_answers_each_request_once() {
    let started = Instant::now();
    let cluster = cluster();
    let mut conn = connect_cluster(&cluster);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut produced = Produced::default();
    write(&mut conn, &messages(21, 0, 1_500), &mut produced);
    // The engine aborts right after its third publication, before acknowledging: the restart
    // publishes that batch's outbox again, which the per-stream guards must turn into no-ops.
    let mut crashing = engine(&cluster, &dir, &[("FAILPOINTS", "after-publish=2*off->return")]);
    let status = crashing.wait_for(Duration::from_secs(60)).unwrap_or_else(|| panic!("{}", crashing.stderr()));
    assert!(crashing.stderr().contains("failpoint fired"), "{status:?}\n{}", crashing.stderr());
    let mut running = engine(&cluster, &dir, &[]);
    running.wait_connected();
    write(&mut conn, &messages(22, 1_500, 1_500), &mut produced);
    wait_all_done(&mut conn, &running, Duration::from_secs(60));
    running.terminate();
    running.assert_no_panic();
    let lost_by_redis = assert_invariants(&mut conn, &produced, &dir);
    assert_eq!(lost_by_redis, 0, "no node died: Redis lost nothing");
    eprintln!("cluster test (crash after publish): {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_master_killed_mid_load_and_its_replica_promoted_loses_and_repeats_nothing() {
    let started = Instant::now();
    let mut cluster = cluster();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut running = engine(&cluster, &dir, &[]);
    running.wait_connected();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let client = cluster.client().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = client.get_connection().unwrap();
            let mut produced = Produced::default();
            let mut from = 0;
            while !stop.load(Ordering::SeqCst) {
                write(&mut conn, &messages(31 + from, from, 100), &mut produced);
                from += 100;
                std::thread::sleep(Duration::from_millis(100));
            }
            produced
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // The master of the requests stream: the engine's reads, publications and acks on it all
    // have to move to the promoted replica.
    let old = cluster.master_of(REQUESTS).unwrap();
    cluster.kill(old);
    let killed = Instant::now();
    let promoted = cluster.wait_failover(REQUESTS, old, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("failover: node {old} killed, node {promoted} promoted {:.1} s later", killed.elapsed().as_secs_f64());
    // The old master comes back as the new one's replica, so publications find a replica to
    // wait for again.
    cluster.restart(old).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let produced = producer.join().unwrap();
    let mut conn = connect_cluster(&cluster);
    let load_ended = Instant::now();
    wait_all_done(&mut conn, &running, Duration::from_secs(60));
    eprintln!("drained {:.1} s after the load ended", load_ended.elapsed().as_secs_f64());
    running.terminate();
    running.assert_no_panic();
    let lost_by_redis = assert_invariants(&mut conn, &produced, &dir);
    eprintln!(
        "cluster test (master killed): {} entries produced, {lost_by_redis} lost by Redis's failover, {:.1} s",
        produced.entries.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The case `WAIT` is for: answers a master took but never passed to its replica (stopped with
/// SIGSTOP, its replication link dropped) before it died. The engine counts a publication done only once a replica holds
/// it, so when the replica is promoted without those answers, they are published again there,
/// once each.
#[test]
fn answers_a_dying_master_never_replicated_are_published_again_on_its_successor() {
    let started = Instant::now();
    let mut cluster = cluster();
    let mut conn = connect_cluster(&cluster);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut running = engine(&cluster, &dir, &[]);
    running.wait_connected();
    let mut produced = Produced::default();
    write(&mut conn, &messages(41, 0, 200), &mut produced);
    wait_all_done(&mut conn, &running, Duration::from_secs(60));
    let master = cluster.master_of(RESULTS).unwrap();
    let replica = cluster.replica_of(master).expect("the results stream's master has a replica");
    let replica_pid = cluster.nodes()[replica].pid().unwrap();
    sigstop(replica_pid);
    // A stopped process still receives into its socket buffer, and would apply that on waking:
    // the master also drops the replication link, which the stopped replica cannot re-make.
    let mut master_conn = redis::Client::open(cluster.nodes()[master].url()).unwrap().get_connection().unwrap();
    redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica").query::<i64>(&mut master_conn).unwrap();
    let before: usize = answers(&mut conn).values().sum();
    // Only requests: another output stream on the same master, published first, would wait on
    // its replica before any answer reached the master.
    write(&mut conn, &requests_only(42, 200, 200), &mut produced);
    let deadline = Instant::now() + Duration::from_secs(20);
    while answers(&mut conn).values().sum::<usize>() <= before {
        assert!(Instant::now() < deadline, "no new answer on the master within 20 s:\n{}", running.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    cluster.kill(master);
    sigcont(replica_pid);
    let promoted = cluster.wait_failover(RESULTS, master, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(promoted, replica, "the stopped replica is the only one that can take over");
    cluster.restart(master).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = connect_cluster(&cluster);
    wait_all_done(&mut conn, &running, Duration::from_secs(60));
    running.terminate();
    running.assert_no_panic();
    let lost_by_redis = assert_invariants(&mut conn, &produced, &dir);
    eprintln!(
        "cluster test (unreplicated answers): {lost_by_redis} produced entries lost by Redis, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
