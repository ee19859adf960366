//! The failpoint matrix (R2): the engine aborted at each step of the batch cycle, at a
//! checkpoint and during start-up catch-up, then restarted, meets R1's invariants: nothing lost,
//! nothing recorded twice, each request answered exactly once, nothing pending, replay equal to
//! live, no panic. The points are compiled into test builds only (`failpoint.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

const REQUESTS: &str = "maestro:streams:templates:requests";

/// Small reads, frequent checkpoints and small segments, so every point is passed many times
/// in a short load, and records are read back from sealed segments.
const ENV: [(&str, &str); 4] = [
    ("MAESTRO_READ_COUNT", "8"),
    ("MAESTRO_CHECKPOINT_EVERY", "25"),
    ("MAESTRO_CLAIM_MIN_IDLE_MS", "1000"),
    ("MAESTRO_SEGMENT_RECORDS", "40"),
];

/// What a load produced: every entry, the request ids (answers are counted per id) and the
/// bad entries (each must be dead-lettered once).
struct Load {
    produced: Vec<(String, String)>,
    requests: Vec<String>,
    bad: Vec<(String, String)>,
}

/// Template searches, each with its own request id, and bad entries of the flood's mix on
/// every stream, between control entries of all nine streams: every read of eight entries a
/// stream holds some of each.
fn load(conn: &mut redis::Connection, seed: u64) -> Load {
    let mut load = Load { produced: Vec::new(), requests: Vec::new(), bad: Vec::new() };
    for round in 0..60 {
        load.produced.extend(produce(conn, 9, seed * 100 + round, true));
        for i in 0..2 {
            let id = format!("fp-{seed}-{round}-{i}");
            load.produced.push((REQUESTS.to_string(), maestro::flood::send_search(conn, &id).unwrap()));
            load.requests.push(id);
            let bad = maestro::flood::send_bad(conn, round * 2 + i).unwrap();
            load.produced.push(bad.clone());
            load.bad.push(bad);
        }
    }
    load
}

/// Starts the engine with `FAILPOINTS` set and waits for the point to abort it.
fn run_until_abort(url: &str, dir: &Path, failpoints: &str) {
    let mut env = ENV.to_vec();
    env.push(("FAILPOINTS", failpoints));
    let mut engine = EngineProc::start(url, dir, &env);
    let status = engine.wait_for(Duration::from_secs(60)).unwrap_or_else(|| {
        engine.kill();
        panic!("{failpoints}: the point never fired within 60 s\n{}", engine.stderr())
    });
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{failpoints}: {status:?}\n{}", engine.stderr());
    assert!(engine.stderr().contains("failpoint fired"), "{failpoints}: {}", engine.stderr());
    engine.assert_no_panic();
}

/// R1's invariants once a clean engine has drained what the aborted ones left.
fn assert_recovered(conn: &mut redis::Connection, url: &str, dir: &Path, load: &Load) {
    assert_recovered_with(conn, url, dir, load, &[]);
}

/// [`assert_recovered`], the clean engine started with `env` besides [`ENV`].
fn assert_recovered_with(conn: &mut redis::Connection, url: &str, dir: &Path, load: &Load, env: &[(&str, &str)]) {
    let Load { produced, requests, bad } = load;
    let mut engine = EngineProc::start(url, dir, &[&ENV[..], env].concat());
    wait_drained(conn, Duration::from_secs(90));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    assert_eq!(total_pending(conn), 0);
    assert_exactly_once(produced, &export(dir));
    let answers = answers_to(conn, "fp-");
    let wrong: Vec<_> = requests.iter().filter(|id| answers.get(*id) != Some(&1)).collect();
    assert!(wrong.is_empty(), "{} requests not answered exactly once, first {:?}", wrong.len(), wrong.first());
    assert_eq!(answers.len(), requests.len(), "answers to requests nobody sent");
    let copied = assert_dead_lettered_once(conn, bad);
    assert_eq!(copied, bad.len(), "dead-letter copies of entries that were not bad");
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "replay differs from live:\n{out}\n{err}");
    let (code, out, err) = maestro(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "verify:\n{out}\n{err}");
}

#[test]
fn an_abort_at_each_step_of_the_cycle_loses_nothing_and_repeats_nothing() {
    // Each point fires on its fourth pass, once earlier batches went all the way through.
    let points = [
        "after-append",
        "after-flush",
        "after-flush-written",
        "mid-batch",
        "after-publish",
        "before-ack",
        "during-checkpoint",
    ];
    for (n, point) in points.iter().enumerate() {
        let server = redis(true);
        let mut conn = connect(&server);
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("engine");
        let load = load(&mut conn, n as u64);
        run_until_abort(&server.url(), &dir, &format!("{point}=3*off->return"));
        assert_recovered(&mut conn, &server.url(), &dir, &load);
        println!("{point}: recovered");
    }
}

#[test]
fn an_abort_at_each_step_of_sealing_loses_nothing_and_repeats_nothing() {
    // Each point fires on its third pass: two segments were sealed whole before it.
    for (n, point) in ["seal-after-write", "seal-after-rename", "seal-after-index"].iter().enumerate() {
        let server = redis(true);
        let mut conn = connect(&server);
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("engine");
        let load = load(&mut conn, 50 + n as u64);
        run_until_abort(&server.url(), &dir, &format!("{point}=2*off->return"));
        assert_recovered(&mut conn, &server.url(), &dir, &load);
        let segments = std::fs::read_dir(dir.join("segments")).unwrap().count();
        assert!(segments > 3, "{point}: sealing went on after the abort ({segments} segments)");
        println!("{point}: recovered");
    }
}

#[test]
fn an_abort_during_start_up_catch_up_loses_nothing_and_repeats_nothing() {
    let server = redis(true);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let load = load(&mut conn, 99);
    // Records appended but never dispatched: the next start has a tail to catch up on, and
    // aborts in the middle of it.
    run_until_abort(&server.url(), &dir, "after-append=3*off->return");
    run_until_abort(&server.url(), &dir, "during-catch-up=return");
    assert_recovered(&mut conn, &server.url(), &dir, &load);
}

#[test]
fn an_abort_after_a_written_state_batch_then_a_start_that_records_first_loses_nothing() {
    let server = redis(true);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    // Only entries rejected as broken JSON or not UTF-8, and none on the requests stream (whose
    // handler answers a reject): every output of the aborted batch is a dead-letter copy, and
    // none of them is in the outbox.
    let mut load = Load { produced: Vec::new(), requests: Vec::new(), bad: Vec::new() };
    let streams = maestro_schemas::StreamSet::default().all().len() as u64;
    for i in (0..800).filter(|i| i % streams != 0 && i % 2 == 0 && i % 100 != 99) {
        let bad = maestro::flood::send_bad(&mut conn, i).unwrap();
        load.produced.push(bad.clone());
        load.bad.push(bad);
    }
    // Each batch's state written before its outputs are published (as when something older
    // waits), then an abort after the third state batch: its dead-letter copies are unpublished.
    run_until_abort(&server.url(), &dir, "write-before-publish=return;after-flush-written=3*off->return");
    // A new configuration is recorded and dispatched at start, before anything is published:
    // the publish mark must keep that commit from going out as if nothing older waited.
    assert_recovered_with(&mut conn, &server.url(), &dir, &load, &[("MAESTRO_ADMINS", "acme:root")]);
}

/// An old data dir (its projection store in the log's database) whose move into `store/` is
/// aborted after the copy is made durable, and after its rename: the next start ends the move,
/// and nothing is lost or repeated.
#[test]
fn an_abort_in_the_middle_of_moving_an_old_store_out_loses_nothing_and_repeats_nothing() {
    for (n, point) in ["store-move-copied", "store-move-renamed"].iter().enumerate() {
        let server = redis(true);
        let mut conn = connect(&server);
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("engine");
        let load = load(&mut conn, 70 + n as u64);
        // Work left in the store (outbox, positions behind the log) when it is moved.
        run_until_abort(&server.url(), &dir, "after-flush-written=3*off->return");
        to_old_layout(&dir);
        run_until_abort(&server.url(), &dir, &format!("{point}=return"));
        let moved = dir.join(maestro_engine::datadir::STORE_DIR).is_dir();
        assert_eq!(moved, *point == "store-move-renamed", "{point}: store/ after the abort");
        assert!(!store_trees_in_log(&dir).is_empty(), "{point}: the trees are still in db/");
        assert_recovered(&mut conn, &server.url(), &dir, &load);
        assert_eq!(store_trees_in_log(&dir), Vec::<String>::new(), "{point}: the trees left db/");
        assert!(!dir.join("store.tmp").exists(), "{point}: no leftover");
        println!("{point}: recovered");
    }
}

#[test]
fn a_failpoint_that_names_no_point_is_refused() {
    let (code, _, err) =
        maestro_with_env(&["verify", "--data-dir", "/nonexistent"], &[("FAILPOINTS", "after-apend=return")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no crash point `after-apend`"), "{err}");
}

fn maestro_with_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maestro"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
