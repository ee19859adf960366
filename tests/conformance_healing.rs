//! Healing conformance: the old healing service's producers and consumers, as a Python script
//! with redis-py and pydantic models written from the wire contract (seed contract section 3),
//! against a real redis-server and the engine binary with its default settings. Then replay
//! equals live.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

/// Checks the script makes on a full run; a run that checks less has lost coverage.
const FLOOR: u64 = 150;

#[test]
fn old_healing_producers_and_consumers_work_unchanged() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let project = data.path().join("shop");
    maestro::heal_demo::write_project(&project).unwrap();
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    engine.wait_connected();

    common::python::conformance("healing", &[&server.url(), project.to_str().unwrap()], FLOOR, || engine.stderr());

    // Nothing of this ordinary traffic is a dead letter.
    wait_drained(&mut conn, std::time::Duration::from_secs(20));
    let dead: Vec<String> = redis::cmd("KEYS").arg("*:dead").query(&mut conn).unwrap();
    for key in &dead {
        let entries = read_stream(&mut conn, key);
        assert!(entries.is_empty(), "{key}: {entries:?}");
    }
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();

    let (code, out, err) = maestro(&["replay", "check", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.lines().any(|l| l.starts_with("healing") && l.ends_with("equal")), "{out}");
}
