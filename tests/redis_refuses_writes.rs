//! Redis refusing writes (R13): while the server answers every write with an error (here
//! NOREPLICAS: `min-replicas-to-write 1` and no replica), the engine retries, names the error and
//! loses nothing; once writes are accepted again it resumes, and every entry is recorded once
//! and every request answered once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::{Duration, Instant};

const REQUESTS: &str = "maestro:streams:templates:requests";

fn refuse_writes(conn: &mut redis::Connection, refuse: bool) {
    let replicas = if refuse { "1" } else { "0" };
    redis::cmd("CONFIG").arg("SET").arg("min-replicas-to-write").arg(replicas).query::<()>(conn).unwrap();
}

#[test]
fn writes_refused_by_redis_are_retried_and_nothing_is_lost_or_repeated() {
    let server = redis(true);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let mut engine = EngineProc::start(&server.url(), &dir, &[]);
    engine.wait_connected();
    // Entries wait while the engine is stopped, then Redis refuses every write it tries.
    sigstop(engine.child.id());
    let mut produced = produce(&mut conn, 180, 21, true);
    let requests: Vec<String> = (0..30).map(|i| format!("refused-{i}")).collect();
    for id in &requests {
        produced.push((REQUESTS.to_string(), maestro::flood::send_search(&mut conn, id).unwrap()));
    }
    refuse_writes(&mut conn, true);
    sigcont(engine.child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine.stderr().contains("NOREPLICAS") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(engine.child.try_wait().unwrap().is_none(), "the engine exits when Redis refuses writes");
    assert!(engine.stderr().contains("NOREPLICAS"), "the refusal is not named:\n{}", engine.stderr());
    refuse_writes(&mut conn, false);
    wait_drained(&mut conn, Duration::from_secs(60));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    assert!(engine.stderr().contains("redis available again"), "{}", engine.stderr());
    assert_exactly_once(&produced, &export(&dir));
    let answers = answers_to(&mut conn, "refused-");
    assert!(requests.iter().all(|id| answers.get(id) == Some(&1)), "answers: {answers:?}");
}
