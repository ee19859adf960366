//! Redis refusing writes (R13): while the server answers every write with an error (here
//! NOREPLICAS: `min-replicas-to-write 1` and no replica), the engine retries, names the error and
//! loses nothing; once writes are accepted again it resumes, and every entry is recorded once
//! and every request answered once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const REQUESTS: &str = "maestro:streams:templates:requests";
const RESULTS: &str = "maestro:streams:templates:results";

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
        let data = json!({"request_id": id, "operation": "search", "tenant_id": "acme", "user_id": "alice",
            "parameters": {"query": "fastapi", "page": 1, "page_size": 5}});
        let entry: String =
            redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data.to_string()).query(&mut conn).unwrap();
        produced.push((REQUESTS.to_string(), entry));
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
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for (_, fields) in read_stream(&mut conn, RESULTS) {
        let data: serde_json::Value = serde_json::from_str(&fields["data"]).unwrap();
        if let Some(id) = data["request_id"].as_str().filter(|id| id.starts_with("refused-")) {
            *answers.entry(id.to_string()).or_default() += 1;
        }
    }
    assert!(requests.iter().all(|id| answers.get(id) == Some(&1)), "answers: {answers:?}");
}
