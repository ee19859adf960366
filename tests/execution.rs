//! The execution domain through a real redis-server and the engine binary, with no cluster:
//! the cap and its queue, status facts arriving out of order or twice, TTL expiry decided on a
//! clock record, cleanup and logs answered saying there is no cluster, an unknown execution
//! answered rather than dead-lettered, `maestro manifests` for kubectl, and replay equal to live.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const JOBS: &str = "maestro:streams:k8s:jobs";
const STATUS: &str = "maestro:streams:k8s:status";
const RESULTS: &str = "maestro:streams:k8s:results";

fn xadd(conn: &mut redis::Connection, stream: &str, fields: &[(&str, String)]) {
    maestro::traffic::xadd(conn, stream, fields).unwrap();
}

fn job(conn: &mut redis::Connection, kind: &str, payload: Value) {
    xadd(conn, JOBS, &[("type", kind.into()), ("payload", payload.to_string())]);
}

fn execute(conn: &mut redis::Connection, id: &str, test_config: Value) {
    let spec = json!({"app_image": "registry.example.com/shop/api:1.4.2", "app_port": 8080,
        "database_type": "postgresql", "redis_enabled": true, "replicas": 1, "env_vars": {"LOG_LEVEL": "debug"}});
    job(
        conn,
        "execute_ephemeral_test",
        json!({"execution_id": id, "environment_spec": spec, "test_config": test_config}),
    );
}

/// A fact as the Kubernetes effect runner publishes it (no engine origin: it is input).
fn fact(conn: &mut redis::Connection, id: &str, status: &str) {
    xadd(conn, STATUS, &maestro::traffic::status_fact(id, status));
}

/// The engine's own status updates: (execution id, status, output id), in order.
fn engine_statuses(conn: &mut redis::Connection) -> Vec<(String, String, String)> {
    read_stream(conn, STATUS)
        .into_iter()
        .filter(|(_, f)| f.contains_key("origin"))
        .map(|(_, f)| (f["execution_id"].clone(), f["status"].clone(), f["output_id"].clone()))
        .collect()
}

fn statuses_of(all: &[(String, String, String)], id: &str) -> Vec<String> {
    all.iter().filter(|(e, _, _)| e == id).map(|(_, s, _)| s.clone()).collect()
}

fn wait_statuses(conn: &mut redis::Connection, what: &str, ready: impl Fn(&[(String, String, String)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = engine_statuses(conn);
        if ready(&all) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not seen within 20 s: {all:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cap_queue_facts_ttl_expiry_cleanup_and_manifests_without_a_cluster() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let env = [("MAESTRO_MAX_ACTIVE_ENVIRONMENTS", "2"), ("MAESTRO_CLOCK_INTERVAL_MS", "200")];
    let mut engine = EngineProc::start(&server.url(), &dir, &env);
    engine.wait_connected();

    execute(&mut conn, "short", json!({"commands": ["pytest -x"], "ttl_seconds": 1}));
    execute(&mut conn, "long", json!({"commands": ["pytest -x", "pytest -k slow"], "ttl_minutes": 60}));
    execute(&mut conn, "waiting", json!({"commands": ["npm test"]}));
    wait_statuses(&mut conn, "three answers", |all| all.len() == 5);
    let all = engine_statuses(&mut conn);
    assert_eq!(statuses_of(&all, "short"), ["requested", "provisioning"]);
    assert_eq!(statuses_of(&all, "long"), ["requested", "provisioning"]);
    assert_eq!(statuses_of(&all, "waiting"), ["queued"], "the cap is 2");

    // Facts as the runner would publish them: out of order, and twice.
    for status in ["running", "ready", "running", "completed", "completed"] {
        fact(&mut conn, "long", status);
    }
    let result = json!({"execution_id": "long", "namespace": "quality-fabric-long", "status": "completed",
        "test_results": [{"job_name": "test-job-1", "command": "pytest -x", "success": true, "output": "12 passed", "duration": 4.1}]});
    xadd(
        &mut conn,
        RESULTS,
        &[
            ("type", "execution_result".into()),
            ("execution_id", "long".into()),
            ("result", result.to_string()),
            ("timestamp", "2026-11-28T10:01:00".into()),
            ("runner", maestro::traffic::ENGINE_RUNNER.into()),
        ],
    );
    // `short` expires on a clock record about a second after its admission; `waiting` gets a slot.
    wait_statuses(&mut conn, "short expired, waiting admitted", |all| {
        statuses_of(all, "short").contains(&"expired".to_string()) && statuses_of(all, "waiting").len() == 3
    });
    job(&mut conn, "cleanup_environment", json!({"execution_id": "waiting"}));
    job(&mut conn, "get_logs", json!({"execution_id": "long"}));
    job(&mut conn, "cleanup_environment", json!({"execution_id": "never-was"}));
    wait_statuses(&mut conn, "the unknown cleanup answered", |all| statuses_of(all, "never-was") == ["not_found"]);
    // Without a cluster the engine's runner answers the cleanup (nothing to delete) and the logs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answered = |conn: &mut redis::Connection| {
        let cleaned = read_stream(conn, STATUS).into_iter().any(|(_, f)| {
            f["execution_id"] == "waiting" && f["status"] == "cleaned" && f["details"].contains("no Kubernetes cluster")
        });
        let logs = read_stream(conn, RESULTS).into_iter().any(|(_, f)| {
            f["execution_id"] == "long" && f["type"] == "execution_logs" && f["logs"].contains("no Kubernetes cluster")
        });
        cleaned && logs
    };
    while !answered(&mut conn) {
        assert!(Instant::now() < deadline, "cleanup and logs were not answered without a cluster");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_drained(&mut conn, Duration::from_secs(20));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    assert!(engine.stderr().contains("no Kubernetes cluster configured"), "{}", engine.stderr());

    let all = engine_statuses(&mut conn);
    assert_eq!(statuses_of(&all, "short"), ["requested", "provisioning", "expired"]);
    assert_eq!(statuses_of(&all, "waiting"), ["queued", "requested", "provisioning"]);
    for stream in [JOBS, STATUS, RESULTS] {
        assert_eq!(read_stream(&mut conn, &format!("{stream}:dead")), vec![], "{stream}: nothing is a dead letter");
    }

    // The expiry was published while handling a clock record.
    let records = export(&dir);
    let (_, _, output_id) = all.iter().find(|(e, s, _)| e == "short" && s == "expired").unwrap();
    let seq: u64 = output_id.split('-').next().unwrap().parse().unwrap();
    assert_eq!(records.iter().find(|r| r["seq"] == seq).unwrap()["kind"], "clock");
    let setting =
        records.iter().find(|r| r["kind"] == "setting" && r["name"] == "execution.max_active_environments").unwrap();
    assert_eq!(
        (setting["name"].as_str(), setting["value"].as_str()),
        (Some("execution.max_active_environments"), Some("2"))
    );

    let d = dir.to_str().unwrap();
    let (code, out, err) = maestro(&["replay", "state", "--projection", "execution", "--data-dir", d]);
    assert_eq!(code, Some(0), "{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    let long = &state["state"]["x/long"];
    let path: Vec<&str> = long["transitions"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap()).collect();
    assert_eq!(path, ["requested", "provisioning", "running", "completed"], "forward only, once each");
    assert_eq!(long["results"][0]["output"], "12 passed");
    assert_eq!(state["state"]["x/waiting"]["cleanup_requested"], true);
    assert_eq!(state["state"]["x/waiting"]["status"], "cleaned", "the no-cluster answer is the engine runner's fact");

    // The manifests for kubectl, rendered again from the log, are valid Kubernetes 1.33.
    let (code, yaml, err) = maestro(&["manifests", "long", "--data-dir", d]);
    assert_eq!(code, Some(0), "{err}");
    for object in ["kind: Namespace", "name: quality-fabric-long", "kind: StatefulSet", "name: test-job-2", "kind: Job"]
    {
        assert!(yaml.contains(object), "{object} missing:\n{yaml}");
    }
    let file = data.path().join("long.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let (ok, stdout, stderr) = python::kubernetes_validate(&[file]);
    assert!(ok, "kubernetes-validate failed:\n{stdout}\n{stderr}");
    let (code, _, err) = maestro(&["manifests", "nope", "--data-dir", d]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no execution nope"), "{err}");

    let (code, out, err) = maestro(&["replay", "check", "--data-dir", d]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.lines().any(|l| l.starts_with("execution") && l.ends_with("equal")), "{out}");
}
