//! Conformance with the old k8s execution service's wire contract (seed contract section 4):
//! a Python script publishes every k8s:jobs shape the old producers sent, with redis-py as they
//! did, and parses every answer with pydantic models written from the contract; the engine runs
//! with no cluster and trusts one runner identity besides its own. Then the log is read back:
//! a fact from an untrusted producer moved nothing, the trusted runner's did, and no ordinary
//! traffic became a dead letter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// A passing run makes 171 checks (every answer is awaited before the streams are parsed, so
/// the count does not depend on timing); a run that lost one section's answers, or one of the
/// per-entry parses, would fall below this.
const CHECKS_FLOOR: u64 = 160;

#[test]
fn old_producers_and_consumers_work_unchanged_against_the_engine() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let env = [("MAESTRO_EXECUTION_RUNNERS", "[ci-runner]"), ("MAESTRO_CLOCK_INTERVAL_MS", "500")];
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    engine.wait_connected();

    let stdout = python::conformance("execution", &[&server.url()], CHECKS_FLOOR, || engine.stderr());
    let ids_line = stdout.lines().find_map(|l| l.strip_prefix("IDS ")).unwrap();
    let ids: Value = serde_json::from_str(ids_line).unwrap();

    wait_drained(&mut conn, Duration::from_secs(20));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    for stream in ["k8s:jobs", "k8s:status", "k8s:results"] {
        let dead = read_stream(&mut conn, &format!("maestro:streams:{stream}:dead"));
        assert!(dead.is_empty(), "{stream}: ordinary traffic was dead-lettered: {dead:?}");
    }

    let d = dir.to_str().unwrap();
    let (code, out, err) = maestro(&["replay", "state", "--projection", "execution", "--data-dir", d]);
    assert_eq!(code, Some(0), "{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    let env_of = |name: &str| state["state"][format!("x/{}", ids[name].as_str().unwrap())].clone();
    let foreign = env_of("foreign");
    assert_eq!(foreign["status"], "provisioning", "a foreign producer's facts moved it: {foreign}");
    assert_eq!(foreign["logs_bytes"], Value::Null, "{foreign}");
    let trusted = env_of("trusted");
    assert_eq!(trusted["status"], "completed", "{trusted}");
    assert_eq!(trusted["results"][0]["job_name"], "test-job-1", "{trusted}");
    assert_eq!(env_of("typed_postgresql")["status"], "cleaned");
    // The trusted runners are in the log, so a replay trusts the same ones.
    let records = export(&dir);
    let runners = records.iter().find(|r| r["kind"] == "setting" && r["name"] == "execution.runners").unwrap();
    assert_eq!(runners["value"], r#"["maestro-engine/maestro-engine","ci-runner"]"#);
    let (code, out, err) = maestro(&["replay", "check", "--data-dir", d]);
    assert_eq!(code, Some(0), "{out}\n{err}");
}
