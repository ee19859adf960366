//! The execution handler folded over records in memory: the cap and its queue, TTL expiry on
//! clock records, cleanup, refused specs, and facts arriving out of order or twice.

use super::handler::Execution;
use super::model::{EnvStatus, Environment, env_key};
use crate::fold::Fold;
use maestro_schemas::{Body, StreamSet};
use serde_json::json;

const JOBS: &str = "maestro:streams:k8s:jobs";
const STATUS: &str = "maestro:streams:k8s:status";
const RESULTS: &str = "maestro:streams:k8s:results";

fn fold(cap: u32) -> Fold {
    let mut fold = Fold::new(Execution::new(&StreamSet::default()));
    fold.body(Body::Setting { name: super::MAX_ACTIVE_SETTING.into(), value: cap.to_string() }).unwrap();
    fold
}

fn execute(fold: &mut Fold, ms: u64, id: &str, ttl_minutes: u32) {
    let payload = json!({"execution_id": id,
        "environment_spec": {"app_image": "shop/api:1.0", "app_port": 8080, "database_type": "postgresql"},
        "test_config": {"commands": ["pytest -x", "pytest -k slow"], "ttl_minutes": ttl_minutes}});
    fold.entry(JOBS, ms, &[("type", "execute_ephemeral_test".into()), ("payload", payload.to_string())]).unwrap();
}

fn fact(fold: &mut Fold, ms: u64, id: &str, status: &str) -> Result<(), String> {
    let fields = [
        ("type", "status_update".to_string()),
        ("execution_id", id.to_string()),
        ("status", status.to_string()),
        ("details", "{}".to_string()),
        ("timestamp", "2026-11-28T10:00:00".to_string()),
    ];
    fold.entry(STATUS, ms, &fields).map(|_| ())
}

fn env(fold: &Fold, id: &str) -> Environment {
    serde_json::from_slice(&fold.state[&env_key(id)]).unwrap()
}

/// The statuses published for one execution, in order.
fn published(fold: &Fold, id: &str) -> Vec<String> {
    fold.published.iter().filter(|p| p["execution_id"] == id).map(|p| p["status"].clone()).collect()
}

#[test]
fn the_cap_queues_in_order_and_a_finished_environment_frees_its_slot() {
    let mut fold = fold(2);
    for (i, id) in ["e1", "e2", "e3", "e4"].iter().enumerate() {
        execute(&mut fold, 1_000 + i as u64, id, 60);
    }
    assert_eq!(published(&fold, "e1"), ["requested", "provisioning"]);
    assert_eq!(published(&fold, "e3"), ["queued"]);
    assert_eq!(
        fold.published.iter().filter(|p| p["execution_id"] == "e4").map(|p| p["details"].clone()).next_back().unwrap(),
        r#"{"position":2}"#
    );
    let applies: Vec<&str> = fold.intents.iter().filter(|i| i.kind == "k8s_apply").map(|i| i.id.as_str()).collect();
    assert_eq!(applies, ["k8s_apply/e1/1", "k8s_apply/e2/1"]);
    let payload: serde_json::Value = serde_json::from_slice(&fold.intents[0].payload).unwrap();
    assert_eq!(payload["namespace"], "maestro-exec-e1");
    assert_eq!(payload["manifests"].as_array().unwrap().len(), 9, "{payload}");
    fact(&mut fold, 2_000, "e1", "completed").unwrap();
    assert_eq!(env(&fold, "e1").status, EnvStatus::Completed);
    assert_eq!(published(&fold, "e3"), ["queued", "requested", "provisioning"], "the oldest waiting one starts");
    assert_eq!(env(&fold, "e4").status, EnvStatus::Queued);
}

#[test]
fn ttl_expiry_is_decided_on_clock_records() {
    let mut fold = fold(1);
    execute(&mut fold, 10_000, "e1", 1);
    execute(&mut fold, 10_001, "e2", 1);
    fold.clock(69_999);
    assert_eq!(env(&fold, "e1").status, EnvStatus::Provisioning);
    fold.clock(70_000);
    let expired = env(&fold, "e1");
    assert_eq!((expired.status, expired.expires_ms), (EnvStatus::Expired, Some(70_000)));
    assert_eq!(published(&fold, "e1"), ["requested", "provisioning", "expired"]);
    assert!(fold.intents.iter().any(|i| i.kind == "k8s_delete" && i.id.starts_with("k8s_delete/e1/")));
    // The slot went to e2, whose TTL counts from its admission at the clock's time.
    assert_eq!(env(&fold, "e2").expires_ms, Some(130_000));
    // The runner's `cleaned` fact ends it; a late `ready` changes nothing.
    fact(&mut fold, 71_000, "e1", "cleaned").unwrap();
    fact(&mut fold, 71_001, "e1", "ready").unwrap();
    assert_eq!(env(&fold, "e1").status, EnvStatus::Cleaned);
}

#[test]
fn facts_out_of_order_or_twice_only_move_forward() {
    let mut fold = fold(10);
    execute(&mut fold, 1_000, "e1", 60);
    fact(&mut fold, 1_100, "e1", "running").unwrap();
    fact(&mut fold, 1_200, "e1", "ready").unwrap();
    fact(&mut fold, 1_300, "e1", "running").unwrap();
    fact(&mut fold, 1_400, "e1", "failed").unwrap();
    fact(&mut fold, 1_500, "e1", "completed").unwrap();
    let e1 = env(&fold, "e1");
    let path: Vec<&str> = e1.transitions.iter().map(|(s, _)| s.name()).collect();
    assert_eq!(path, ["requested", "provisioning", "running", "failed"]);
    let error = fact(&mut fold, 1_600, "nope", "ready").unwrap_err();
    assert!(error.contains("no execution nope"), "{error}");
    let error = fact(&mut fold, 1_700, "e1", "exploded").unwrap_err();
    assert!(error.contains("not a lifecycle state"), "{error}");
    let result = json!({"jobs": [{"job_name": "test-1", "command": "pytest -x", "success": true, "output": "2 passed", "duration": 3.2}]});
    fold.entry(
        RESULTS,
        1_800,
        &[
            ("type", "execution_result".into()),
            ("execution_id", "e1".into()),
            ("result", result.to_string()),
            ("timestamp", "2026-11-28T10:00:00".into()),
        ],
    )
    .unwrap();
    assert_eq!(env(&fold, "e1").results[0]["output"], "2 passed");
    // Two log requests are two effects, each named by its request.
    for ms in [1_900, 1_901] {
        let payload = json!({"execution_id": "e1"}).to_string();
        fold.entry(JOBS, ms, &[("type", "get_logs".into()), ("payload", payload)]).unwrap();
    }
    let logs: Vec<&str> = fold.intents.iter().filter(|i| i.kind == "k8s_logs").map(|i| i.id.as_str()).collect();
    assert_eq!(logs, ["k8s_logs/e1/1900-0", "k8s_logs/e1/1901-0"]);
}

#[test]
fn cleanup_and_refused_specs() {
    let mut fold = fold(1);
    execute(&mut fold, 1_000, "e1", 60);
    execute(&mut fold, 1_001, "e2", 60);
    let cleanup = |fold: &mut Fold, ms, id: &str| {
        let payload = json!({"execution_id": id}).to_string();
        fold.entry(JOBS, ms, &[("type", "cleanup_environment".into()), ("payload", payload)])
    };
    cleanup(&mut fold, 2_000, "e2").unwrap();
    assert_eq!(published(&fold, "e2"), ["queued", "cleaned"], "a queued environment has nothing to delete");
    cleanup(&mut fold, 2_001, "e1").unwrap();
    assert!(env(&fold, "e1").cleanup_requested);
    assert_eq!(fold.intents.iter().filter(|i| i.kind == "k8s_delete").count(), 1);
    cleanup(&mut fold, 2_002, "e1").unwrap();
    assert_eq!(fold.intents.iter().filter(|i| i.kind == "k8s_delete").count(), 1, "asked twice, deleted once");
    assert!(cleanup(&mut fold, 2_003, "e9").unwrap_err().contains("no execution e9"));

    let bad = json!({"execution_id": "bad", "environment_spec": {"app_image": "x", "app_port": 8080, "database_type": "oracle"}});
    // The schema refuses an unknown database type already; a bad port gets past it.
    let bad_port = json!({"execution_id": "bad", "environment_spec": {"app_image": "x", "app_port": 70000}});
    assert!(
        fold.entry(JOBS, 3_000, &[("type", "execute_ephemeral_test".into()), ("payload", bad.to_string())]).is_err()
    );
    fold.entry(JOBS, 3_001, &[("type", "execute_ephemeral_test".into()), ("payload", bad_port.to_string())]).unwrap();
    let refused = env(&fold, "bad");
    assert_eq!(refused.status, EnvStatus::Failed);
    assert!(refused.reason.unwrap().contains("app_port 70000"));
    assert_eq!(published(&fold, "bad"), ["failed"]);
}
