//! The old template service's clients against the engine: requests built and published with
//! the old producers' model and redis-py, every answer parsed with the old consumers' pydantic
//! models (`tests/python/old_models/templates.py`, written from the wire contract), through a
//! real `redis-server` and the engine binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::python::conformance;
use common::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn old_clients_get_answers_their_models_parse() {
    let server = redis(false);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let admins = [("MAESTRO_ADMINS", "tenant-123:user-456,test-tenant:user-456")];
    let mut engine = EngineProc::start(&server.url(), &dir, &admins);
    engine.wait_connected();

    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests");
    // A full run makes 118 checks.
    conformance("templates", &[&server.url(), manifests.to_str().unwrap()], 110, || engine.stderr());

    let mut conn = connect(&server);
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    // Only the five undecodable entries are dead letters; valid requests never are.
    let dead = read_stream(&mut conn, "maestro:streams:templates:requests:dead");
    let reasons: Vec<&str> = dead.iter().map(|(_, f)| f["dead_reason"].as_str()).collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| **r == "unknown_operation").count(), 1, "{reasons:?}");

    let d = dir.to_str().unwrap();
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", d]);
    assert_eq!(code, Some(0), "replay equals live: {out}{err}");
}
