//! The engine refuses a log that is shorter than, or disagrees with, any anchor it can read
//! (the data dir's `HEAD`, the anchor file, the Redis anchor key), names the anchor and exits
//! non-zero; `--accept-truncated-log` goes on and records the choice in the log; no stop moves
//! an anchor outside the data dir backwards. Real `redis-server`s, the engine binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use maestro_engine::log::{Log, NewRecord};
use maestro_schemas::{Body, Entry, EntryId, Status};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const RECORDS: u64 = 4_000;
const CONNECTED: &str = "connected to redis";

fn write_log(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut log = Log::open(dir, 8 << 20).unwrap();
    let records: Vec<NewRecord> = (1..=RECORDS)
        .map(|i| NewRecord {
            body: Body::Entry(Entry {
                stream: "maestro:streams:k8s:status".into(),
                id: EntryId { ms: 1_795_000_000_000 + i, seq: 0 },
                fields: vec![("data".into(), format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60)).into_bytes())],
                status: Status::Accepted,
            }),
            request: None,
        })
        .collect();
    for chunk in records.chunks(500) {
        log.append(chunk.to_vec()).unwrap();
    }
}

/// Starts the engine and waits for it to exit (refused) or to connect (started).
fn start(server: &RedisServer, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (EngineProc, Option<i32>) {
    let stderr_path = dir.with_extension("stderr.log");
    let connected_before = std::fs::read_to_string(&stderr_path).unwrap_or_default().matches(CONNECTED).count();
    let refused_before = std::fs::read_to_string(&stderr_path).unwrap_or_default().matches("error:").count();
    let mut engine = EngineProc::start_with(&server.url(), dir, env, args);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = engine.wait_for(Duration::from_millis(50)) {
            assert!(engine.stderr().matches("error:").count() > refused_before, "{}", engine.stderr());
            return (engine, Some(status.code().unwrap_or(-1)));
        }
        if engine.stderr().matches(CONNECTED).count() > connected_before {
            return (engine, None);
        }
        assert!(std::time::Instant::now() < deadline, "neither refused nor started:\n{}", engine.stderr());
    }
}

#[test]
fn a_truncated_log_is_refused_at_start_with_or_without_its_head_anchor() {
    let server = redis(false);
    let data = tempfile::tempdir().unwrap();
    let pristine = data.path().join("pristine");
    write_log(&pristine);
    let len = std::fs::metadata(pristine.join("db/db")).unwrap().len();
    let mut named = 0;
    for keep_percent in [98, 90, 75, 60, 40, 2] {
        for keep_head in [true, false] {
            let case = format!("cut to {keep_percent}%, HEAD {}", if keep_head { "kept" } else { "deleted" });
            let dir = data.path().join(format!("d-{keep_percent}-{keep_head}"));
            copy_dir(&pristine, &dir);
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("db/db"))
                .unwrap()
                .set_len(len * keep_percent / 100)
                .unwrap();
            if !keep_head {
                std::fs::remove_file(dir.join("HEAD")).unwrap();
            }
            let (mut engine, exit) = start(&server, &dir, &[], &[]);
            let stderr = engine.stderr();
            let last = stderr.lines().rfind(|l| l.starts_with("error:")).unwrap_or("started");
            eprintln!("{case}: {last}");
            assert!(!stderr.contains("panicked at"), "{case}: {stderr}");
            match exit {
                Some(code) => {
                    assert_eq!(code, 1, "{case}: {stderr}");
                    assert!(stderr.contains("log damaged"), "{case}: a clear error: {stderr}");
                    if stderr.contains("refusing to start") {
                        named += 1;
                        let anchor = if keep_head { format!("records seq {RECORDS}") } else { "is missing".into() };
                        assert!(stderr.contains("head anchor") && stderr.contains(&anchor), "{case}: {stderr}");
                        assert!(stderr.contains("the log ends at seq"), "{case}: what the log had: {stderr}");
                    }
                }
                None => {
                    // Started: only right if sled kept every record (the cut fell in unused space).
                    assert!(engine.terminate().success(), "{case}: {}", engine.stderr());
                    let records = export(&dir);
                    assert!(records.len() as u64 > RECORDS, "{case}: started on a log of {} records", records.len());
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    assert!(named >= 10, "the refusal named the head anchor in only {named} of 12 cases");
}

fn anchor_key(dir: &Path) -> String {
    let consumer = std::fs::read_to_string(dir.join("consumer")).unwrap();
    format!("maestro:engine:{GROUP}:anchor:{}", consumer.trim())
}

fn redis_anchor(conn: &mut redis::Connection, dir: &Path) -> String {
    redis::cmd("GET").arg(anchor_key(dir)).query::<Option<String>>(conn).unwrap().unwrap()
}

fn anchor_seq(text: &str) -> u64 {
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn acceptances(dir: &Path) -> Vec<Value> {
    export(dir)
        .into_iter()
        .filter(|r| r["kind"] == "setting" && r["name"].as_str().unwrap().starts_with("accepted_truncated_log"))
        .collect()
}

#[test]
fn anchors_ahead_of_a_restored_log_refuse_start_until_accepted_and_never_move_back() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let backup = data.path().join("backup");
    let anchor_file = data.path().join("anchor");
    let with_file = [("MAESTRO_ANCHOR_FILE", anchor_file.to_str().unwrap())];

    let mut engine = EngineProc::start(&server.url(), &dir, &with_file);
    produce(&mut conn, 60, 1, true);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    copy_dir(&dir, &backup);
    let mut engine = EngineProc::start(&server.url(), &dir, &with_file);
    let lost_by_restore = produce(&mut conn, 60, 2, true);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let file_anchor = std::fs::read_to_string(&anchor_file).unwrap();
    let key_anchor = redis_anchor(&mut conn, &dir);
    let ahead = anchor_seq(&key_anchor);
    assert_eq!(file_anchor.trim(), key_anchor, "both anchors name the head at the clean stop");

    // The data dir goes back to the backup: its own HEAD agrees with it, the others do not.
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&backup, &dir);
    let restored = export(&dir).len();
    assert!((restored as u64) < ahead);
    let waiting = produce(&mut conn, 5, 3, true);
    let (engine, exit) = start(&server, &dir, &with_file, &[]);
    let stderr = engine.stderr();
    assert_eq!(exit, Some(1), "{stderr}");
    let named = format!("anchor file {} records seq {ahead}", anchor_file.display());
    assert!(stderr.contains("refusing to start") && stderr.contains(&named), "{stderr}");
    assert!(stderr.contains(&format!("the log ends at seq {restored}")), "{stderr}");
    drop(engine);
    let (engine, exit) = start(&server, &dir, &[], &[]);
    let stderr = engine.stderr();
    assert_eq!(exit, Some(1), "without the anchor file, the Redis anchor refuses: {stderr}");
    let named = format!("redis anchor key {} records seq {ahead}", anchor_key(&dir));
    assert!(stderr.matches("refusing to start").count() == 2 && stderr.contains(&named), "{stderr}");
    drop(engine);
    assert_eq!(export(&dir).len(), restored, "nothing read from Redis was appended before the refusal");
    assert_eq!(total_pending(&mut conn), 0, "nothing was even read");

    // The operator accepts: the engine goes on and records the choice. The group stands past
    // what the restored log holds, so it is moved back and the entries the restore lost are
    // recorded again; the anchors never move back meanwhile.
    let (mut engine, exit) = start(&server, &dir, &with_file, &["--accept-truncated-log"]);
    assert_eq!(exit, None, "{}", engine.stderr());
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let records = export(&dir);
    assert!(recorded(&records).contains_key(&waiting[0]), "the entries waiting in Redis are recorded");
    let recorded_again = recorded(&records);
    assert!(
        lost_by_restore.iter().all(|k| recorded_again.contains_key(k)),
        "the entries the restore lost are read again"
    );
    let accepted = acceptances(&dir);
    assert_eq!(accepted.len(), 2, "one record per anchor that disagreed: {accepted:?}");
    // The second disagreement was found with the first one's record already appended.
    for ((record, what), head) in accepted.iter().zip(["anchor file", "redis anchor key"]).zip([restored, restored + 1])
    {
        let value = record["value"].as_str().unwrap();
        assert!(value.contains(what) && value.contains(&format!("records seq {ahead}")), "{value}");
        assert!(value.contains(&format!("the log ends at seq {head}")), "{value}");
    }
    let not_back = |now: String, before: &str, what: &str| {
        let now = now.trim().to_string();
        assert!(anchor_seq(&now) > ahead || now == before.trim(), "the {what} moved back: {now} after {before}");
    };
    not_back(std::fs::read_to_string(&anchor_file).unwrap(), &file_anchor, "anchor file");
    not_back(redis_anchor(&mut conn, &dir), &key_anchor, "Redis anchor");

    // The choice holds for the next starts, and once the log passes the old head the anchors
    // move forward again.
    let mut engine = EngineProc::start(&server.url(), &dir, &with_file);
    engine.wait_connected();
    produce(&mut conn, 80, 4, true);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert_eq!(acceptances(&dir).len(), 2, "accepted once");
    let passed = anchor_seq(&redis_anchor(&mut conn, &dir));
    assert!(passed > ahead, "the Redis anchor moved forward once the log passed it: {passed} <= {ahead}");
    assert_eq!(anchor_seq(&std::fs::read_to_string(&anchor_file).unwrap()), passed);
}

#[test]
fn after_an_accepted_restore_new_requests_are_answered() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let backup = data.path().join("backup");
    let searches = |conn: &mut redis::Connection, prefix: &str, n: usize| {
        for i in 0..n {
            maestro::flood::send_search(conn, &format!("{prefix}{i}")).unwrap();
        }
    };
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    searches(&mut conn, "before-", 5);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    copy_dir(&dir, &backup);
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    searches(&mut conn, "lost-", 60);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());

    // Back to the backup; the operator accepts the shorter log and the skip of what it lost, so
    // the new requests get seqs that the lost ones' answers had.
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&backup, &dir);
    let accept = [("MAESTRO_ACCEPT_GROUP_SKIP", "true")];
    let (mut engine, exit) = start(&server, &dir, &accept, &["--accept-truncated-log"]);
    assert_eq!(exit, None, "{}", engine.stderr());
    searches(&mut conn, "after-", 10);
    wait_drained(&mut conn, Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while answers_to(&mut conn, "after-").len() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(engine.terminate().success(), "{}", engine.stderr());
    let answers = answers_to(&mut conn, "after-");
    assert_eq!(answers.len(), 10, "every request after the restore is answered: {answers:?}");
    assert!(answers.values().all(|n| *n == 1), "once each: {answers:?}");
    assert!(engine.stderr().contains("publish mark past the log's head"), "{}", engine.stderr());
}
