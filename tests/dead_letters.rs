//! Dead letters are for the poison only: a realistic mix in the old shapes on all nine streams
//! leaves nothing on a dead-letter stream but the poison planted in it, and the valid entries
//! that refer to nothing known (facts of other engines' executions, their repair results) are
//! counted as ignored, by stream and reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn a_realistic_mix_dead_letters_only_its_poison_and_counts_what_it_ignores() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_http_addr();
    let admins: Vec<String> = (0..8).flat_map(|t| (0..50).map(move |u| format!("tenant-{t}:user-{u}"))).collect();
    let admins = admins.join(",");
    let mut engine = EngineProc::start_with(&server.url(), &dir, &[("MAESTRO_ADMINS", &admins)], &["--http", &addr]);

    let good = produce(&mut conn, 1_500, 31, false);
    let poison = [
        ("maestro:streams:templates:requests", vec![("data", "{not json")]),
        ("maestro:streams:automation:jobs", vec![("type", "frobnicate"), ("payload", "{}")]),
        ("maestro:streams:k8s:jobs", vec![("type", "execute_ephemeral_test"), ("payload", "[1, 2")]),
        ("maestro:streams:k8s:status", vec![("type", "status_update")]),
    ];
    let mut planted = BTreeSet::new();
    for (stream, fields) in &poison {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(*stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let id: String = cmd.query(&mut conn).unwrap();
        planted.insert((stream.to_string(), id));
    }
    wait_drained(&mut conn, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(engine.terminate().success(), "{}", engine.stderr());

    let mut dead = BTreeSet::new();
    for stream in streams() {
        for (_, fields) in read_stream(&mut conn, &format!("{stream}:dead")) {
            dead.insert((fields["dead_stream"].clone(), fields["dead_id"].clone()));
        }
    }
    assert_eq!(dead, planted, "the dead-letter streams hold exactly the poison");
    let ignored: Vec<&str> = metrics.lines().filter(|l| l.starts_with("maestro_ignored_total{")).collect();
    assert!(!ignored.is_empty(), "the mix's foreign facts are counted as ignored:\n{metrics}");
    for line in &ignored {
        assert!(line.contains("reason=\"") && line.contains("stream=\""), "{line}");
    }
    assert_exactly_once(&[good, planted.into_iter().collect()].concat(), &export(&dir));
}
