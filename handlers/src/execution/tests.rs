//! The execution handler folded over records in memory: the cap and its queue, TTL expiry on
//! clock records, cleanup, refused specs, facts arriving out of order or twice, and the old
//! service's wire contract (default type, 8-hex ids, `quality-fabric-` namespaces, test
//! suites, lenient database types, answers for unknown ids, trusted runners only).

use super::handler::{Execution, NOT_FOUND, reason};
use super::model::{EnvStatus, Environment, env_key};
use crate::fold::Fold;
use maestro_schemas::ids::execution_id;
use maestro_schemas::{Body, EntryId, StreamSet};
use serde_json::{Value, json};

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

/// The engine's own runner under the default group.
const ENGINE: &str = "maestro-engine/maestro-engine";

fn fact(fold: &mut Fold, ms: u64, id: &str, status: &str) -> Result<(), String> {
    fact_from(fold, ms, id, status, Some(ENGINE))
}

fn fact_from(fold: &mut Fold, ms: u64, id: &str, status: &str, runner: Option<&str>) -> Result<(), String> {
    let mut fields = vec![
        ("type", "status_update".to_string()),
        ("execution_id", id.to_string()),
        ("status", status.to_string()),
        ("details", "{}".to_string()),
        ("timestamp", "2026-11-28T10:00:00".to_string()),
    ];
    fields.extend(runner.map(|r| ("runner", r.to_string())));
    fold.entry(STATUS, ms, &fields).map(|_| ())
}

/// A k8s:jobs entry as the old producers wrote it: `type` (when given) and `payload`.
fn job(fold: &mut Fold, ms: u64, kind: Option<&str>, payload: Value) -> Result<(), String> {
    let mut fields = vec![("payload", payload.to_string())];
    fields.extend(kind.map(|k| ("type", k.to_string())));
    fold.entry(JOBS, ms, &fields).map(|_| ())
}

/// The last status published for `id`, with its details parsed.
fn last_status(fold: &Fold, id: &str) -> (String, Value) {
    let last = fold.published.iter().rfind(|p| p["execution_id"] == id).unwrap();
    (last["status"].clone(), serde_json::from_str(&last["details"]).unwrap())
}

fn ignored_last(fold: &Fold) -> Option<&str> {
    fold.ignored.last().filter(|(seq, _)| *seq == fold.seq).map(|(_, r)| r.as_str())
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
        r#"{"namespace":"quality-fabric-e4","position":2,"entry_id":"1003-0"}"#
    );
    let applies: Vec<&str> = fold.intents.iter().filter(|i| i.kind == "k8s_apply").map(|i| i.id.as_str()).collect();
    assert_eq!(applies, ["k8s_apply/e1/1", "k8s_apply/e2/1"]);
    let payload: serde_json::Value = serde_json::from_slice(&fold.intents[0].payload).unwrap();
    assert_eq!(payload["namespace"], "quality-fabric-e1");
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
    // Valid facts the handler cannot act on are ignored with a reason, never refused.
    fact(&mut fold, 1_600, "nope", "ready").unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::UNKNOWN_EXECUTION));
    fact(&mut fold, 1_700, "e1", "exploded").unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::UNKNOWN_STATUS));
    let result = json!({"execution_id": "e1", "namespace": "quality-fabric-e1", "status": "completed",
        "test_results": [{"job_name": "test-job-1", "command": "pytest -x", "success": true, "output": "2 passed", "duration": 3.2}]});
    fold.entry(
        RESULTS,
        1_800,
        &[
            ("type", "execution_result".into()),
            ("execution_id", "e1".into()),
            ("result", result.to_string()),
            ("timestamp", "2026-11-28T10:00:00".into()),
            ("runner", ENGINE.into()),
        ],
    )
    .unwrap();
    assert_eq!(env(&fold, "e1").results[0]["output"], "2 passed");
    assert_eq!(ignored_last(&fold), None);
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
    // An unknown execution is answered, not refused.
    cleanup(&mut fold, 2_003, "e9").unwrap();
    let (status, details) = last_status(&fold, "e9");
    assert_eq!((status.as_str(), details["request"].as_str()), (NOT_FOUND, Some("cleanup_environment")));

    let bad_port = json!({"execution_id": "bad", "environment_spec": {"app_image": "x", "app_port": 70000}});
    fold.entry(JOBS, 3_001, &[("type", "execute_ephemeral_test".into()), ("payload", bad_port.to_string())]).unwrap();
    let refused = env(&fold, "bad");
    assert_eq!(refused.status, EnvStatus::Failed);
    assert!(refused.reason.unwrap().contains("app_port 70000"));
    assert_eq!(published(&fold, "bad"), ["failed"]);
}

fn spec(database: Option<&str>) -> Value {
    json!({"app_image": "shop/api:1.0", "app_port": 8080, "database_type": database, "resources": null})
}

/// The manifests of the `k8s_apply` intent for `id`.
fn applied(fold: &Fold, id: &str) -> Vec<Value> {
    let intent = fold.intents.iter().find(|i| i.kind == "k8s_apply" && i.id.starts_with(&format!("k8s_apply/{id}/")));
    let payload: Value = serde_json::from_slice(&intent.unwrap().payload).unwrap();
    payload["manifests"].as_array().unwrap().clone()
}

fn names(manifests: &[Value]) -> Vec<String> {
    manifests
        .iter()
        .map(|m| format!("{}/{}", m["kind"].as_str().unwrap(), m["metadata"]["name"].as_str().unwrap()))
        .collect()
}

#[test]
fn a_job_without_type_is_an_execute_with_an_8_hex_id_in_a_quality_fabric_namespace() {
    let mut fold = fold(10);
    job(&mut fold, 5_000, None, json!({"environment_spec": spec(None), "test_config": {"commands": ["pytest"]}}))
        .unwrap();
    let id = execution_id(JOBS, EntryId { ms: 5_000, seq: 0 }, 0);
    assert!(id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
    assert_eq!(published(&fold, &id), ["requested", "provisioning"]);
    let (_, details) = last_status(&fold, &id);
    assert_eq!(details["namespace"], format!("quality-fabric-{id}"));
    assert_eq!(env(&fold, &id).namespace, format!("quality-fabric-{id}"));
    // A producer's own id is kept as it is.
    job(&mut fold, 5_001, None, json!({"execution_id": "run-7", "environment_spec": spec(None)})).unwrap();
    assert_eq!(env(&fold, "run-7").namespace, "quality-fabric-run-7");
}

#[test]
fn a_taken_derived_id_is_derived_again_and_a_taken_producer_id_is_ignored() {
    let mut fold = fold(10);
    let first = execution_id(JOBS, EntryId { ms: 6_000, seq: 0 }, 0);
    // Another producer chose, by chance, the id the next entry derives.
    job(
        &mut fold,
        5_999,
        Some("execute_ephemeral_test"),
        json!({"execution_id": first, "environment_spec": spec(None)}),
    )
    .unwrap();
    job(&mut fold, 6_000, Some("execute_ephemeral_test"), json!({"environment_spec": spec(None)})).unwrap();
    let second = execution_id(JOBS, EntryId { ms: 6_000, seq: 0 }, 1);
    assert_eq!(published(&fold, &second), ["requested", "provisioning"]);
    assert_eq!(published(&fold, &first), ["requested", "provisioning"], "the first one is untouched");
    job(
        &mut fold,
        6_001,
        Some("execute_ephemeral_test"),
        json!({"execution_id": first, "environment_spec": spec(None)}),
    )
    .unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::EXECUTION_EXISTS));
    assert_eq!(published(&fold, &first).len(), 2);
}

#[test]
fn test_suite_commands_become_jobs_after_the_config_commands() {
    let mut fold = fold(10);
    let test_config = json!({"commands": ["make lint"], "test_suites": [
        {"name": "api", "type": "pytest", "test_files": ["tests/api"], "commands": ["pytest tests/api", "pytest -m slow"]},
        {"name": "e2e", "type": "e2e", "patterns": ["*.spec.ts"]},
        {"name": "perf", "type": "performance", "commands": ["k6 run perf.js"], "setup_commands": ["npm ci"]}]});
    job(
        &mut fold,
        1_000,
        None,
        json!({"execution_id": "s1", "environment_spec": spec(None), "test_config": test_config}),
    )
    .unwrap();
    let manifests = applied(&fold, "s1");
    let jobs: Vec<&Value> = manifests.iter().filter(|m| m["kind"] == "Job").collect();
    let commands: Vec<&str> =
        jobs.iter().map(|j| j["spec"]["template"]["spec"]["containers"][0]["command"][2].as_str().unwrap()).collect();
    assert_eq!(commands, ["make lint", "pytest tests/api", "pytest -m slow", "k6 run perf.js"]);
    assert_eq!(jobs[3]["metadata"]["name"], "test-job-4");
    assert_eq!(env(&fold, "s1").commands.len(), 4);
    // Suites alone are enough.
    let only_suites = json!({"test_suites": [{"name": "u", "type": "unit", "commands": ["go test ./..."]}]});
    job(
        &mut fold,
        1_001,
        None,
        json!({"execution_id": "s2", "environment_spec": spec(None), "test_config": only_suites}),
    )
    .unwrap();
    assert_eq!(env(&fold, "s2").commands, ["go test ./..."]);
}

#[test]
fn database_types_are_lower_cased_and_an_unknown_one_warns_and_deploys_none() {
    let mut fold = fold(10);
    for (ms, id, database) in
        [(1_000, "m1", "mongodb"), (1_001, "m2", "MongoDB"), (1_002, "p1", "PostgreSQL"), (1_003, "y1", "mysql")]
    {
        job(&mut fold, ms, None, json!({"execution_id": id, "environment_spec": spec(Some(database))})).unwrap();
        let (status, details) = last_status(&fold, id);
        assert_eq!(status, "provisioning", "{id}");
        assert!(details.get("warning").is_none(), "{id}: {details}");
    }
    assert!(names(&applied(&fold, "m2")).contains(&"StatefulSet/mongodb".to_string()));
    assert!(names(&applied(&fold, "m2")).contains(&"Service/mongodb".to_string()));
    assert!(names(&applied(&fold, "p1")).contains(&"StatefulSet/postgres".to_string()));
    job(&mut fold, 1_004, None, json!({"execution_id": "o1", "environment_spec": spec(Some("oracle"))})).unwrap();
    let (status, details) = last_status(&fold, "o1");
    assert_eq!(status, "provisioning", "provisioning goes on");
    assert!(details["warning"].as_str().unwrap().contains("\"oracle\""), "{details}");
    let kinds = names(&applied(&fold, "o1"));
    assert!(!kinds.iter().any(|k| k.starts_with("StatefulSet/")), "{kinds:?}");
    // A null database type and null resources take the defaults, without a warning.
    job(&mut fold, 1_005, None, json!({"execution_id": "n1", "environment_spec": spec(None)})).unwrap();
    assert!(last_status(&fold, "n1").1.get("warning").is_none());
    let app = applied(&fold, "n1").into_iter().find(|m| m["kind"] == "Deployment").unwrap();
    let resources = &app["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources,
        &json!({"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}})
    );
}

#[test]
fn requests_for_unknown_executions_are_answered() {
    let mut fold = fold(10);
    job(&mut fold, 1_000, Some("get_logs"), json!({"execution_id": "deadbeef"})).unwrap();
    let answer = fold.published.last().unwrap();
    assert_eq!(answer["type"], "execution_logs");
    assert!(answer["logs"].contains("no execution deadbeef"), "{answer:?}");
    let keys: Vec<&str> = answer.keys().map(String::as_str).collect();
    assert_eq!(keys, ["execution_id", "logs", "timestamp", "type"]);
    job(&mut fold, 1_001, Some("cleanup_environment"), json!({"execution_id": "deadbeef"})).unwrap();
    let answer = fold.published.last().unwrap();
    let keys: Vec<&str> = answer.keys().map(String::as_str).collect();
    assert_eq!(keys, ["details", "execution_id", "status", "timestamp", "type"]);
    assert_eq!(answer["status"], NOT_FOUND);
    assert!(fold.intents.is_empty());
    // The README's job format has no type and no spec: an execute answered `failed`.
    job(
        &mut fold,
        1_002,
        None,
        json!({"job_id": "j1", "execution_id": "readme-1", "operation": "create", "config": {}}),
    )
    .unwrap();
    let (status, details) = last_status(&fold, "readme-1");
    assert_eq!(status, "failed");
    assert!(details["error"].as_str().unwrap().contains("app_image"), "{details}");
}

#[test]
fn only_trusted_runners_move_an_environment() {
    let mut fold = fold(10);
    execute(&mut fold, 1_000, "e1", 60);
    fact_from(&mut fold, 1_100, "e1", "ready", None).unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::FACT_FROM_UNKNOWN_RUNNER));
    fact_from(&mut fold, 1_101, "e1", "failed", Some("ci-bot")).unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::FACT_FROM_UNKNOWN_RUNNER));
    // An untrusted fact for an unknown execution is named for its runner.
    fact_from(&mut fold, 1_102, "nope", "failed", Some("ci-bot")).unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::FACT_FROM_UNKNOWN_RUNNER));
    assert_eq!(env(&fold, "e1").status, EnvStatus::Provisioning);
    let logs = [
        ("type", "execution_logs".to_string()),
        ("execution_id", "e1".into()),
        ("logs", "x".into()),
        ("timestamp", "2026-11-28T10:00:00".into()),
    ];
    fold.entry(RESULTS, 1_103, &logs).unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::FACT_FROM_UNKNOWN_RUNNER));
    assert_eq!(env(&fold, "e1").logs_bytes, None);
    // A runner named in the settings is trusted; the engine's own stays trusted.
    let runners = json!([ENGINE, "ci-bot"]).to_string();
    fold.body(Body::Setting { name: super::RUNNERS_SETTING.into(), value: runners }).unwrap();
    fact_from(&mut fold, 1_200, "e1", "ready", Some("ci-bot")).unwrap();
    assert_eq!(env(&fold, "e1").status, EnvStatus::Ready);
    fact(&mut fold, 1_300, "e1", "running").unwrap();
    assert_eq!(env(&fold, "e1").status, EnvStatus::Running);
    // A setting without the default group's identity no longer trusts it.
    let runners = json!(["maestro-engine/other-group"]).to_string();
    fold.body(Body::Setting { name: super::RUNNERS_SETTING.into(), value: runners }).unwrap();
    fact(&mut fold, 1_400, "e1", "completed").unwrap();
    assert_eq!(ignored_last(&fold), Some(reason::FACT_FROM_UNKNOWN_RUNNER));
    assert_eq!(env(&fold, "e1").status, EnvStatus::Running);
}
