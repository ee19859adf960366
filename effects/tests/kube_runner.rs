//! The Kubernetes effect runner against a mocked API server (`tower_test::mock::pair`): every
//! request's method, path, `fieldManager`, `force` and content type is checked, for
//! provisioning, readiness, job completion, logs and deletion, with API errors and retries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::{Request, Response};
use kube::client::Body;
use maestro_effects::kube::{FactKeys, FactStream, KubeRunner, KubeSettings};
use maestro_engine::effects::Fact;
use maestro_handlers::execution::handler::render;
use maestro_schemas::proto::execution::{EnvironmentSpec, ExecuteEphemeralTest, TestConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const NS: &str = "quality-fabric-e1";
const RUNNER: &str = "maestro-engine/test";
const APPLY: &str = "application/apply-patch+yaml";

/// One expected request and the mocked API server's answer.
struct Expect {
    method: &'static str,
    path: String,
    query: Vec<&'static str>,
    content_type: Option<&'static str>,
    status: u16,
    /// The answer; `None` echoes the request body (what an apply returns).
    body: Option<Value>,
    text: Option<&'static str>,
}

fn apply(path: &str) -> Expect {
    Expect {
        method: "PATCH",
        path: path.into(),
        query: vec!["fieldManager=maestro", "force=true"],
        content_type: Some(APPLY),
        status: 200,
        body: None,
        text: None,
    }
}

fn get(path: &str, body: Value) -> Expect {
    Expect {
        method: "GET",
        path: path.into(),
        query: vec![],
        content_type: None,
        status: 200,
        body: Some(body),
        text: None,
    }
}

fn failure(mut expect: Expect, code: u16) -> Expect {
    expect.status = code;
    expect.body = Some(json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": "etcd is sad",
        "reason": "InternalError", "code": code}));
    expect
}

/// A client whose API server answers `script` in order, checking each request; the task
/// fails the test on any surprise and returns how many requests it served.
fn mock(script: Vec<Expect>) -> (kube::Client, tokio::task::JoinHandle<usize>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut served = 0;
        for expect in script {
            let (request, respond) = handle.next_request().await.expect("the runner stopped early");
            let (parts, body) = request.into_parts();
            let at = format!("request {served}: {} {}", parts.method, parts.uri);
            assert_eq!(parts.method.as_str(), expect.method, "{at}");
            assert_eq!(parts.uri.path(), expect.path, "{at}");
            let query = parts.uri.query().unwrap_or_default();
            for wanted in &expect.query {
                assert!(query.split('&').any(|q| q == *wanted), "{at}: query lacks {wanted}");
            }
            let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok());
            if let Some(wanted) = expect.content_type {
                assert_eq!(content_type, Some(wanted), "{at}");
            }
            let sent = body.collect_bytes().await.unwrap();
            let answer = match (&expect.body, expect.text) {
                (_, Some(text)) => text.as_bytes().to_vec(),
                (Some(body), None) => serde_json::to_vec(body).unwrap(),
                (None, None) => {
                    let object: Value = serde_json::from_slice(&sent).unwrap();
                    let name = expect.path.rsplit('/').next().unwrap();
                    assert_eq!(object["metadata"]["name"], name, "{at}: applies the object it names");
                    sent.to_vec()
                }
            };
            let response = Response::builder().status(expect.status).body(Body::from(answer)).unwrap();
            respond.send_response(response);
            served += 1;
        }
        served
    });
    (kube::Client::new(service, "default"), server)
}

/// The streams the runners under test send their facts to.
fn keys() -> FactKeys {
    FactKeys { status: "test:k8s:status".into(), results: "test:k8s:results".into() }
}

/// Which of [`keys`] a fact went to.
fn which(stream: &str) -> FactStream {
    match stream {
        "test:k8s:status" => FactStream::Status,
        "test:k8s:results" => FactStream::Results,
        other => panic!("a fact on a stream the runner was not given: {other}"),
    }
}

fn runner(client: kube::Client) -> (KubeRunner, UnboundedReceiver<Fact>) {
    let (facts, receiver) = tokio::sync::mpsc::unbounded_channel();
    let settings = KubeSettings {
        log_cap_bytes: 4096,
        poll: Duration::from_millis(5),
        ready_timeout: Duration::from_secs(5),
        attempts: 3,
    };
    (
        KubeRunner {
            client,
            identity: RUNNER.into(),
            settings,
            keys: keys(),
            facts,
            runtime: tokio::runtime::Handle::current(),
        },
        receiver,
    )
}

fn facts(receiver: &mut UnboundedReceiver<Fact>) -> Vec<(FactStream, Value)> {
    facts_and_ends(receiver).0
}

/// The facts sent, and for each the intent it is the last fact of.
fn facts_and_ends(receiver: &mut UnboundedReceiver<Fact>) -> (Vec<(FactStream, Value)>, Vec<Option<String>>) {
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    while let Ok(fact) = receiver.try_recv() {
        ends.push(fact.finishes);
        out.push((which(&fact.stream), fact.fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect()));
    }
    (out, ends)
}

/// The handler's apply intent for an app-only environment with one test command.
fn apply_payload() -> Value {
    let spec =
        EnvironmentSpec { app_image: "shop/api:1.0".into(), app_port: 8080, replicas: Some(2), ..Default::default() };
    let test = TestConfig { commands: vec!["pytest -x".into()], timeout_minutes: Some(1), ttl_minutes: Some(60) };
    let request = ExecuteEphemeralTest { environment_spec: Some(spec), test_config: Some(test), ..Default::default() };
    let manifests = render(&request, "e1", 0, 3_600_000).unwrap();
    json!({"execution_id": "e1", "namespace": NS, "commands": ["pytest -x"], "timeout_minutes": 1, "manifests": manifests})
}

fn deployment(ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": NS},
        "status": {"readyReplicas": ready}})
}

fn job(status: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "test-job-1", "namespace": NS}, "status": status})
}

fn pod_list(names: &[&str]) -> Value {
    let items: Vec<Value> = names.iter().map(|n| json!({"metadata": {"name": n}})).collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

#[tokio::test]
async fn provisioning_readiness_job_completion_and_logs_with_a_retried_api_error() {
    let ns = format!("/api/v1/namespaces/{NS}");
    let apps = format!("/apis/apps/v1/namespaces/{NS}");
    let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs/test-job-1");
    let finished =
        json!({"succeeded": 1, "startTime": "2026-11-28T10:00:00Z", "completionTime": "2026-11-28T10:00:42Z"});
    let log = Expect {
        query: vec!["limitBytes=4096"],
        text: Some("===== 12 passed in 3.1s ====="),
        ..get(&format!("{ns}/pods/test-job-1-x7k2p/log"), Value::Null)
    };
    let script = vec![
        apply(&ns),
        apply(&format!("{ns}/resourcequotas/maestro-quota")),
        apply(&format!("{ns}/limitranges/maestro-limits")),
        failure(apply(&format!("{apps}/deployments/app")), 500),
        apply(&format!("{apps}/deployments/app")),
        apply(&format!("{ns}/services/app-service")),
        get(&format!("{apps}/deployments/app"), deployment(1)),
        get(&format!("{apps}/deployments/app"), deployment(2)),
        apply(&jobs),
        get(&jobs, job(json!({"active": 1}))),
        get(&jobs, job(finished)),
        Expect {
            query: vec!["labelSelector=job-name%3Dtest-job-1"],
            ..get(&format!("{ns}/pods"), pod_list(&["test-job-1-x7k2p"]))
        },
        log,
    ];
    let (client, server) = mock(script);
    let (runner, mut receiver) = runner(client);
    runner.provision("k8s_apply/e1/1", &apply_payload()).await;
    assert_eq!(server.await.unwrap(), 13, "every expected request was made");
    let (facts, finishes) = facts_and_ends(&mut receiver);
    let kinds: Vec<String> = facts
        .iter()
        .map(|(_, f)| {
            format!("{}:{}", f["type"].as_str().unwrap(), f.get("status").and_then(Value::as_str).unwrap_or("-"))
        })
        .collect();
    assert_eq!(
        kinds,
        ["status_update:ready", "status_update:running", "execution_result:-", "status_update:completed"]
    );
    let (stream, result) = &facts[2];
    assert_eq!(*stream, FactStream::Results);
    let result: Value = serde_json::from_str(result["result"].as_str().unwrap()).unwrap();
    let expected = json!({"job_name": "test-job-1", "command": "pytest -x", "success": true,
        "output": "===== 12 passed in 3.1s =====", "duration": 42.0});
    // The old consumers' `result`: exactly these keys, the jobs in `test_results`.
    let keys: Vec<&str> = result.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["execution_id", "namespace", "test_results", "status"]);
    assert_eq!((result["execution_id"].as_str(), result["namespace"].as_str()), (Some("e1"), Some(NS)));
    assert_eq!((result["test_results"][0].clone(), result["status"].as_str()), (expected, Some("completed")));
    assert_eq!(facts[3].1["fact_id"], "k8s_apply/e1/1/completed", "deterministic: a repeat is recognisable");
    assert_eq!(finishes, [None, None, None, Some("k8s_apply/e1/1".to_string())], "the last fact ends the intent");
    assert!(facts.iter().all(|(_, f)| f["runner"] == RUNNER), "every fact names its runner: {facts:?}");
}

#[tokio::test]
async fn a_persistent_api_error_is_reported_as_a_failed_fact_naming_it() {
    let path = format!("/api/v1/namespaces/{NS}");
    let script = vec![failure(apply(&path), 503), failure(apply(&path), 503), failure(apply(&path), 503)];
    let (client, server) = mock(script);
    let (runner, mut receiver) = runner(client);
    runner.provision("k8s_apply/e1/1", &apply_payload()).await;
    assert_eq!(server.await.unwrap(), 3, "three attempts");
    let (facts, finishes) = facts_and_ends(&mut receiver);
    assert_eq!(facts.len(), 1, "{facts:?}");
    assert_eq!(finishes, [Some("k8s_apply/e1/1".to_string())], "a failure ends the intent");
    assert_eq!(facts[0].1["status"], "failed");
    let details = facts[0].1["details"].as_str().unwrap();
    assert!(details.contains("apply quality-fabric-e1") && details.contains("after 3 attempts"), "{details}");
}

#[tokio::test]
async fn deletion_reports_cleaned_also_when_the_namespace_is_gone_already() {
    let path = format!("/api/v1/namespaces/{NS}");
    for status in [200, 404] {
        let body = if status == 404 {
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "gone"})
        } else {
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}, "status": {"phase": "Terminating"}})
        };
        let delete =
            Expect { method: "DELETE", content_type: None, status, body: Some(body), ..get(&path, Value::Null) };
        let (client, server) = mock(vec![delete]);
        let (runner, mut receiver) = runner(client);
        runner.delete("k8s_delete/e1/3", &json!({"execution_id": "e1", "namespace": NS})).await;
        assert_eq!(server.await.unwrap(), 1);
        let facts = facts(&mut receiver);
        assert_eq!(facts.len(), 1, "{status}: {facts:?}");
        assert_eq!(facts[0].1["status"], "cleaned", "{status}");
    }
}

#[tokio::test]
async fn logs_are_fetched_per_job_and_capped() {
    let ns = format!("/api/v1/namespaces/{NS}");
    let log = Expect {
        query: vec!["limitBytes=4096"],
        text: Some("collected 3 items"),
        ..get(&format!("{ns}/pods/test-job-1-a/log"), Value::Null)
    };
    let script = vec![
        Expect {
            query: vec!["labelSelector=job-name%3Dtest-job-1"],
            ..get(&format!("{ns}/pods"), pod_list(&["test-job-1-a"]))
        },
        log,
        get(&format!("{ns}/pods"), pod_list(&[])),
    ];
    let (client, server) = mock(script);
    let (runner, mut receiver) = runner(client);
    let payload = json!({"execution_id": "e1", "namespace": NS, "jobs": ["test-job-1", "test-job-2"]});
    runner.logs("k8s_logs/e1/2", &payload).await;
    assert_eq!(server.await.unwrap(), 3);
    let facts = facts(&mut receiver);
    assert_eq!(facts[0].1["type"], "execution_logs");
    let logs = facts[0].1["logs"].as_str().unwrap();
    assert!(logs.contains("=== test-job-1 ===\ncollected 3 items"), "{logs}");
    assert!(logs.contains("=== test-job-2 ===\n(no log: no pod of test-job-2)"), "{logs}");
}

#[test]
fn without_a_cluster_deletion_and_logs_are_answered_saying_so_and_applies_wait() {
    use maestro_effects::kube::{NO_CLUSTER, NoCluster};
    use maestro_engine::effects::{EffectRunner, Ran};
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let mut runner = NoCluster { identity: RUNNER.into(), keys: keys(), facts: sender };
    let payload = json!({"execution_id": "e1", "namespace": NS, "jobs": ["test-job-1"]}).to_string().into_bytes();
    let intent =
        |kind: &str, id: &str| maestro_handlers::Intent { kind: kind.into(), id: id.into(), payload: payload.clone() };
    assert!(!runner.handles("k8s_apply"), "an apply waits for a runner that can apply it");
    assert_eq!(runner.run(&intent("k8s_delete", "k8s_delete/e1/3")), Ok(Ran::Started));
    assert_eq!(runner.run(&intent("k8s_logs", "k8s_logs/e1/1-0")), Ok(Ran::Started));
    let pointless = runner.obsoletes(&intent("k8s_delete", "k8s_delete/e1/3")).expect("a deletion obsoletes");
    assert!(pointless(&intent("k8s_apply", "k8s_apply/e1/1")), "the environment's apply");
    let other = maestro_handlers::Intent {
        kind: "k8s_apply".into(),
        id: "k8s_apply/e2/1".into(),
        payload: json!({"execution_id": "e2"}).to_string().into_bytes(),
    };
    assert!(!pointless(&other), "not another environment's");
    assert!(runner.obsoletes(&intent("k8s_logs", "k8s_logs/e1/1-0")).is_none());
    let mut sent = Vec::new();
    while let Ok(fact) = receiver.try_recv() {
        sent.push(fact);
    }
    let finishes: Vec<Option<&str>> = sent.iter().map(|f| f.finishes.as_deref()).collect();
    assert_eq!(finishes, [Some("k8s_delete/e1/3"), Some("k8s_logs/e1/1-0")], "each answer ends its intent");
    let facts: Vec<(FactStream, Value)> = sent
        .into_iter()
        .map(|fact| (which(&fact.stream), fact.fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
        .collect();
    assert_eq!(facts.len(), 2, "{facts:?}");
    let (stream, cleaned) = &facts[0];
    assert_eq!(
        (*stream, cleaned["type"].as_str(), cleaned["status"].as_str()),
        (FactStream::Status, Some("status_update"), Some("cleaned"))
    );
    assert!(cleaned["details"].as_str().unwrap().contains(NO_CLUSTER));
    let (stream, logs) = &facts[1];
    assert_eq!((*stream, logs["type"].as_str()), (FactStream::Results, Some("execution_logs")));
    assert!(logs["logs"].as_str().unwrap().contains(NO_CLUSTER));
    assert!(facts.iter().all(|(_, f)| f["runner"] == RUNNER && f["execution_id"] == "e1"), "{facts:?}");
}
