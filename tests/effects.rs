//! Effect intents are never lost: the engine binary against real `redis-server`s and a fake
//! Kubernetes API server (plain HTTP, named by a kubeconfig the test writes). An intent kind
//! with no runner waits across a restart, while other kinds run, and runs once the engine starts
//! with a runner for it; a deletion answered meanwhile keeps its environment's apply from ever
//! running; a provisioning task cut short by a kill is resumed at the next start and reaches its
//! facts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JOBS: &str = "maestro:streams:k8s:jobs";
const STATUS: &str = "maestro:streams:k8s:status";
const RESULTS: &str = "maestro:streams:k8s:results";

/// What the fake API server was asked, and whether its deployments are ready.
#[derive(Default)]
struct ApiState {
    ready: bool,
    requests: Vec<String>,
}

/// A Kubernetes API server that knows just enough for the runner: server-side apply echoes the
/// object, deployments and statefulsets are ready when `ready` says so, jobs have succeeded,
/// every job has one pod with a short log, namespaces can be deleted.
struct FakeApi {
    addr: String,
    state: Arc<Mutex<ApiState>>,
}

impl FakeApi {
    fn start(ready: bool) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(ApiState { ready, requests: Vec::new() }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeApi { addr, state }
    }

    fn set_ready(&self, ready: bool) {
        self.state.lock().unwrap().ready = ready;
    }

    /// The requests so far, as "METHOD path".
    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn asked(&self, what: &str) -> bool {
        self.requests().iter().any(|r| r.contains(what))
    }

    /// A kubeconfig naming this server, written into `dir`.
    fn kubeconfig(&self, dir: &Path) -> String {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: tester\n    namespace: default\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

/// Answers one request and closes the connection.
fn serve(stream: TcpStream, state: &Mutex<ApiState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
    let path = target.split('?').next().unwrap().to_string();
    let ready = {
        let mut state = state.lock().unwrap();
        state.requests.push(format!("{method} {path}"));
        state.ready
    };
    let (code, answer) = answer(&method, &path, &body, ready);
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&answer));
}

fn answer(method: &str, path: &str, body: &[u8], ready: bool) -> (u16, Vec<u8>) {
    let name = path.rsplit('/').next().unwrap_or_default();
    let kind_of = |plural: &str| path.contains(&format!("/{plural}/"));
    let object = match method {
        "PATCH" => return (200, body.to_vec()),
        "DELETE" => json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
            "status": {"phase": "Terminating"}}),
        _ if path.ends_with("/log") => return (200, b"12 passed".to_vec()),
        _ if path.ends_with("/pods") => json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [{"metadata": {"name": "test-job-1-abc"}}]}),
        _ if kind_of("deployments") || kind_of("statefulsets") => {
            let kind = if kind_of("deployments") { "Deployment" } else { "StatefulSet" };
            json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
                "status": {"readyReplicas": if ready { 100 } else { 0 }}})
        }
        _ if kind_of("jobs") => json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "status": {"succeeded": 1, "startTime": "2026-11-28T10:00:00Z", "completionTime": "2026-11-28T10:00:03Z"}}),
        _ => {
            let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound",
                "code": 404, "message": format!("{method} {path}: not known to the fake")});
            return (404, status.to_string().into_bytes());
        }
    };
    (200, object.to_string().into_bytes())
}

fn job(conn: &mut redis::Connection, kind: &str, payload: Value) {
    maestro::traffic::xadd(conn, JOBS, &[("type", kind.into()), ("payload", payload.to_string())]).unwrap();
}

fn execute(conn: &mut redis::Connection, id: &str) {
    let spec = json!({"app_image": "registry.example.com/shop/api:1.4.2", "app_port": 8080,
        "database_type": "postgresql", "redis_enabled": true, "replicas": 1});
    let test = json!({"commands": ["pytest -x"], "ttl_minutes": 60});
    job(conn, "execute_ephemeral_test", json!({"execution_id": id, "environment_spec": spec, "test_config": test}));
}

/// The statuses the runner reported for `id` (facts: no engine origin), in order.
fn runner_statuses(conn: &mut redis::Connection, id: &str) -> Vec<String> {
    read_stream(conn, STATUS)
        .into_iter()
        .filter(|(_, f)| !f.contains_key("origin") && f["execution_id"] == id && f.contains_key("runner"))
        .map(|(_, f)| f["status"].clone())
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, stderr: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; engine stderr:\n{}", stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(addr: &str) -> Value {
    serde_json::from_str(&http_get(addr, "/status").1).unwrap()
}

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

fn start(server: &RedisServer, dir: &Path, addr: &str, kubeconfig: Option<&str>) -> EngineProc {
    let mut env = vec![("MAESTRO_CLOCK_INTERVAL_MS", "200")];
    if let Some(path) = kubeconfig {
        env.push(("KUBECONFIG", path));
    }
    let engine = EngineProc::start_with(&server.url(), dir, &env, &["--http", addr]);
    engine.wait_connected();
    engine
}

/// The child inherits the test's environment: a cluster configured there would make the
/// "no runner" half meaningless.
fn assert_no_cluster_configured() {
    assert!(
        std::env::var_os("KUBECONFIG").is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none(),
        "these tests start the engine without a cluster: unset KUBECONFIG and KUBERNETES_SERVICE_HOST"
    );
}

#[test]
fn an_intent_kind_without_a_runner_waits_across_a_restart_and_runs_once_a_runner_takes_it() {
    assert_no_cluster_configured();
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_addr();

    // No cluster: the applies wait; the logs and the cleanup (other kinds, later in the log) run.
    let mut engine = start(&server, &dir, &addr, None);
    execute(&mut conn, "kept");
    execute(&mut conn, "dropped");
    job(&mut conn, "get_logs", json!({"execution_id": "kept"}));
    job(&mut conn, "cleanup_environment", json!({"execution_id": "dropped"}));
    let logs_answered = |conn: &mut redis::Connection| {
        read_stream(conn, RESULTS).iter().any(|(_, f)| f["execution_id"] == "kept" && f["type"] == "execution_logs")
    };
    wait_until(
        "logs and cleanup answered while the applies wait",
        Duration::from_secs(20),
        || logs_answered(&mut conn) && runner_statuses(&mut conn, "dropped") == ["cleaned"],
        || engine.stderr(),
    );
    wait_until(
        "one apply waiting in /status",
        Duration::from_secs(10),
        || status(&addr)["effects_waiting"] == json!({"k8s_apply": 1}),
        || format!("{}\n{}", status(&addr), engine.stderr()),
    );
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metrics.contains("maestro_effects_waiting{kind=\"k8s_apply\"} 1"), "{metrics}");
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert_eq!(engine.stderr().matches("no effect runner takes this kind").count(), 1, "{}", engine.stderr());

    // Still no cluster: the apply is still there after a restart, and still waits.
    let mut engine = start(&server, &dir, &addr, None);
    assert_eq!(status(&addr)["effects_waiting"], json!({"k8s_apply": 1}));
    assert!(engine.terminate().success(), "{}", engine.stderr());

    // A cluster: the kept apply runs and reaches its facts; the cleaned one never runs.
    let api = FakeApi::start(true);
    let kubeconfig = api.kubeconfig(data.path());
    let mut engine = start(&server, &dir, &addr, Some(&kubeconfig));
    wait_until(
        "the waiting apply ran to completion",
        Duration::from_secs(30),
        || runner_statuses(&mut conn, "kept").contains(&"completed".to_string()),
        || format!("{:#?}\n{}", api.requests(), engine.stderr()),
    );
    assert_eq!(runner_statuses(&mut conn, "kept"), ["ready", "running", "completed"]);
    assert!(api.asked("PATCH /api/v1/namespaces/quality-fabric-kept"), "{:#?}", api.requests());
    assert!(!api.asked("quality-fabric-dropped"), "a cleaned environment was applied: {:#?}", api.requests());
    wait_until(
        "nothing waits or is in flight",
        Duration::from_secs(10),
        || {
            let now = status(&addr);
            now["effects_waiting"] == json!({}) && now["effects_in_flight"] == 0
        },
        || format!("{}\n{}", status(&addr), engine.stderr()),
    );
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metrics.contains("maestro_effects_waiting{kind=\"k8s_apply\"} 0"), "{metrics}");
    wait_drained(&mut conn, Duration::from_secs(20));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();

    let d = dir.to_str().unwrap();
    let (code, out, err) = maestro(&["replay", "state", "--projection", "execution", "--data-dir", d]);
    assert_eq!(code, Some(0), "{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["state"]["x/kept"]["status"], "completed", "{out}");
    assert_eq!(state["state"]["x/dropped"]["status"], "cleaned", "{out}");
}

#[test]
fn a_provisioning_task_cut_short_by_a_kill_is_resumed_at_the_next_start() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_addr();
    let api = FakeApi::start(false);
    let kubeconfig = api.kubeconfig(data.path());

    // The runner applies and then polls readiness, which never comes: kill it there.
    let mut engine = start(&server, &dir, &addr, Some(&kubeconfig));
    execute(&mut conn, "e1");
    wait_until(
        "readiness polled",
        Duration::from_secs(20),
        || api.asked("GET /apis/apps/v1/namespaces/quality-fabric-e1/"),
        || format!("{:#?}\n{}", api.requests(), engine.stderr()),
    );
    assert_eq!(status(&addr)["effects_in_flight"], 1);
    engine.kill();
    assert_eq!(runner_statuses(&mut conn, "e1"), Vec::<String>::new(), "killed before any fact");

    // The next start runs the intent again from the start, and this time it becomes ready.
    api.set_ready(true);
    let applies_before = api.requests().iter().filter(|r| r.starts_with("PATCH")).count();
    let mut engine = start(&server, &dir, &addr, Some(&kubeconfig));
    wait_until(
        "the resumed task reached its facts",
        Duration::from_secs(30),
        || runner_statuses(&mut conn, "e1").contains(&"completed".to_string()),
        || format!("{:#?}\n{}", api.requests(), engine.stderr()),
    );
    assert_eq!(runner_statuses(&mut conn, "e1"), ["ready", "running", "completed"]);
    let applies_after = api.requests().iter().filter(|r| r.starts_with("PATCH")).count();
    assert!(applies_after > applies_before, "the task was run again from its first step");
    assert!(engine.stderr().contains("in flight when the engine last stopped"), "{}", engine.stderr());
    wait_until(
        "nothing in flight once the last fact is published",
        Duration::from_secs(10),
        || status(&addr)["effects_in_flight"] == 0,
        || format!("{}\n{}", status(&addr), engine.stderr()),
    );
    wait_drained(&mut conn, Duration::from_secs(20));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();

    // Nothing is left to resume: a third start applies nothing.
    let requests = api.requests().len();
    let mut engine = start(&server, &dir, &addr, Some(&kubeconfig));
    std::thread::sleep(Duration::from_millis(500));
    assert!(engine.terminate().success(), "{}", engine.stderr());
    assert_eq!(api.requests().len(), requests, "a finished task is not run again");
    let d = dir.to_str().unwrap();
    let (code, out, err) = maestro(&["replay", "state", "--projection", "execution", "--data-dir", d]);
    assert_eq!(code, Some(0), "{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["state"]["x/e1"]["status"], "completed", "{out}");
}
