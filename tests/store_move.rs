//! An old data dir, its projection store in the log's database (`db/`), is read by the
//! read-only tools as it is, and moved into a database of its own (`store/`) by the engine's
//! first start: every projection's state is what it was, replay equals live, the log
//! verifies, and a second start moves nothing. The data dir is written by the engine binary
//! from a real `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const MOVED: &str = "moved the projection store out of the log's database";
const CAUGHT_UP: &str = "projections caught up with the log";

/// No clock records: a start appends nothing, so the states before and after compare at the
/// same seq.
const ENV: [(&str, &str); 2] = [("MAESTRO_ADMINS", "acme:alice"), ("MAESTRO_CLOCK_INTERVAL_MS", "0")];

/// `replay check` (every projection's live and rebuilt state hash at its seq) and the
/// templates projection as `replay state` prints it.
fn states(dir: &Path) -> (String, String) {
    let d = dir.to_str().unwrap();
    let (code, check, err) = maestro(&["replay", "check", "--data-dir", d]);
    assert_eq!(code, Some(0), "replay check:\n{check}\n{err}");
    let (code, state, err) = maestro(&["replay", "state", "--data-dir", d, "--projection", "templates"]);
    assert_eq!(code, Some(0), "replay state: {err}");
    (check, state)
}

/// Every key of the projection store's trees in `db` but the catch-up guard (`g`, which each
/// start rewrites), by tree and key.
fn store_keys(db: &sled::Db) -> BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in db.tree_names().into_iter().filter(|name| maestro_engine::store::Store::owns_tree(name)) {
        for item in db.open_tree(&name).unwrap().iter() {
            let (key, value) = item.unwrap();
            if key.as_ref() != b"g" {
                out.insert((name.to_vec(), key.to_vec()), value.to_vec());
            }
        }
    }
    out
}

/// Starts the engine on `dir`, waits until it reads, stops it; returns its stderr.
fn start_and_stop(url: &str, dir: &Path) -> String {
    let mut engine = EngineProc::start(url, dir, &ENV);
    engine.wait_connected();
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    engine.stderr()
}

#[test]
fn an_old_data_dir_is_read_as_it_is_and_moved_once_keeping_every_projection() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &ENV);
    produce(&mut conn, 200, 11, false);
    create_large_template(&mut conn, 5);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    // Every start appends to one stderr file: catch-ups so far.
    let caught_up = engine.stderr().matches(CAUGHT_UP).count();
    let before = states(&dir);
    assert!(before.1.contains("tpl-1"), "the templates projection holds the template: {}", before.1);

    to_old_layout(&dir);
    let old_keys = store_keys(&open_sled(&dir));
    assert!(old_keys.len() > 200, "the old store holds state: {} keys", old_keys.len());
    assert_eq!(states(&dir), before, "the read-only tools read an old data dir's store in db/");
    assert!(!dir.join("store").exists(), "and leave it where it is");

    let stderr = start_and_stop(&server.url(), &dir);
    assert_eq!(stderr.matches(MOVED).count(), 1, "{stderr}");
    // A store that lost anything in the move would be caught up from the log (and end equal):
    // the moved store is the old one only if nothing was dispatched again.
    assert_eq!(stderr.matches(CAUGHT_UP).count(), caught_up, "the moved store was behind the log: {stderr}");
    assert_eq!(store_keys(&open_store_sled(&dir)), old_keys, "store/ holds the old store, key for key");
    assert_eq!(store_trees_in_log(&dir), Vec::<String>::new(), "the store's trees left db/");
    assert_eq!(states(&dir), before, "every projection's state is what it was");
    let (code, out, err) = maestro(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "verify:\n{out}\n{err}");

    let stderr = start_and_stop(&server.url(), &dir);
    assert_eq!(stderr.matches(MOVED).count(), 1, "a second start moves nothing: {stderr}");
    assert_eq!(states(&dir), before);
}
