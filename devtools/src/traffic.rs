//! Realistic traffic in the old Maestro producers' exact formats (domain.md sections 1-5):
//! what `demo` publishes, what `bench` measures and what the tests replay. Deterministic: the
//! same seed gives the same entries.

use maestro_schemas::StreamSet;
use serde_json::{Value, json};

/// SplitMix64: a tiny, seedable generator. Traffic must be reproducible, not unpredictable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One entry to XADD: the stream key and its field/value pairs.
pub type Message = (String, Vec<(String, String)>);

/// Generates the realistic mix of domain.md section 5.
#[derive(Clone, Debug)]
pub struct Traffic {
    rng: Rng,
    streams: StreamSet,
    /// Part of every request id, so that two generators never re-send each other's requests.
    seed: u64,
    n: u64,
    /// The templates this generator created and did not delete, (tenant, id): reads, updates
    /// and deletes go to them, as a real registry's clients ask for what exists.
    catalogue: Vec<(u64, String)>,
}

const LANGUAGES: [&str; 5] = ["python", "typescript", "go", "ruby", "javascript"];
const FRAMEWORKS: [&str; 5] = ["fastapi", "express", "gin", "rails", "nextjs"];
const CATEGORIES: [&str; 6] = ["backend", "frontend", "api", "devops", "data", "cli"];

/// A naive ISO-8601 timestamp without zone, as the old Python producers wrote them.
fn naive_timestamp(n: u64) -> String {
    let ms = 1_795_851_623_000 + n * 37;
    let text = maestro_schemas::ids::format_utc_ms(ms);
    format!("{}{:03}", text.trim_end_matches('Z'), n % 1000)
}

/// A template body of about `bytes` bytes (Jinja2, as most catalogue entries are).
pub fn template_body(rng: &mut Rng, bytes: usize) -> String {
    let mut body = String::from("# {{ project_name }}\n\n{% if use_docker %}FROM python:3.12-slim\n{% endif %}\n");
    let mut i = 0;
    while body.len() < bytes {
        i += 1;
        let lang = rng.pick(&LANGUAGES);
        body.push_str(&format!(
            "def handler_{i}(request):\n    \"\"\"Handle {{{{ resource_name }}}} #{i} for {lang}.\"\"\"\n    return {{\"status\": \"ok\", \"id\": {{{{ id_{i} }}}}}}\n\n"
        ));
    }
    body.truncate(bytes);
    body
}

/// A pytest file of about `bytes` bytes, the kind heal requests carry.
pub fn pytest_source(bytes: usize) -> String {
    let mut src = String::from("import pytest\nimport requests\n\nBASE_URL = \"http://localhost:8000\"\n\n");
    let mut i = 0;
    while src.len() < bytes {
        i += 1;
        src.push_str(&format!(
            "def test_endpoint_{i}():\n    response = requests.get(f\"{{BASE_URL}}/items/{i}\", timeout=5)\n    assert response.status_code == 200\n    data = response.json()\n    assert data[\"id\"] == {i}\n\n"
        ));
    }
    src
}

/// A manifest that passes the quality gate (score 100 less what the mix leaves out).
pub fn manifest(rng: &mut Rng, name: &str) -> Value {
    json!({
        "name": name, "version": "1.2.0", "description": "A production-ready service template with tests",
        "author": "platform-team", "engine": "jinja2",
        "metadata": {"language": rng.pick(&LANGUAGES), "framework": rng.pick(&FRAMEWORKS), "category": rng.pick(&CATEGORIES),
                     "tags": ["rest", "docker", "ci"], "license": "MIT"},
        "placeholders": [{"variable": "PROJECT_NAME", "description": "The project's name", "type": "string", "required": true}],
        "hooks": {"pre_generation": ["hooks/check.py"], "post_generation": ["hooks/init.sh"]},
        "documentation": {"readme": "README.md", "examples": ["basic"]},
        "configuration": {"supported_os": ["linux", "darwin"], "architecture": ["amd64", "arm64"]}
    })
}

impl Traffic {
    pub fn new(seed: u64, streams: StreamSet) -> Traffic {
        Traffic { rng: Rng::new(seed), streams, seed, n: 0, catalogue: Vec::new() }
    }

    /// The next entry of the mix: templates requests dominate (retrieve and search most of
    /// them), then the engines' result, usage and status traffic, a trickle of heal requests
    /// and a few executions.
    pub fn next_message(&mut self) -> Message {
        self.n += 1;
        match self.rng.below(100) {
            0..=54 => self.template_request(),
            55..=66 => self.template_result(),
            67..=78 => self.template_usage(),
            79..=80 => self.automation_job(),
            81..=83 => self.heal_request(),
            84..=87 => self.automation_result(),
            88..=89 => self.k8s_job(),
            90..=92 => self.k8s_result(),
            _ => self.k8s_status(),
        }
    }

    /// A control message of about 300 bytes for stream number `i % 9`: the shape `bench
    /// ingest` measures, one per stream in turn. Short shapes are padded with a `trace` key
    /// inside their JSON field, which the old consumers ignore.
    pub fn control_message(&mut self, i: u64) -> Message {
        self.n += 1;
        let (stream, mut fields) = match i % 9 {
            0 => self.template_request_of("retrieve"),
            1 => self.template_result(),
            2 => self.template_usage(),
            3 => self.stop_monitoring(),
            4 => {
                // The REST heal body (ManualHealRequest): a file and the error's details, no source;
                // it names an orchestrator of the mix, so the mix asks the engine to read no file.
                let payload = json!({"orchestrator_id": format!("orch-{:04}", self.n % 97), "error_type": "test_failure", "file_path": format!("tests/test_api_{}.py", self.n % 40), "error_details": {"error_message": "AssertionError: assert 404 == 200", "line_number": 9}});
                (self.streams.automation_healing.clone(), vec![("payload".into(), payload.to_string())])
            }
            5 => self.repair_result(),
            6 => self.get_logs(),
            7 => self.k8s_result(),
            _ => self.k8s_status(),
        };
        pad_json_fields(&mut fields, 300);
        (stream, fields)
    }

    fn template_request(&mut self) -> Message {
        let op = *self.rng.pick(&[
            "retrieve", "retrieve", "retrieve", "retrieve", "retrieve", "search", "search", "search", "search",
            "create", "create", "update", "versions", "validate", "delete",
        ]);
        self.template_request_of(op)
    }

    /// A request for `op`: a create adds a template to the catalogue; other operations name
    /// one of it (a random, likely missing one while it is empty).
    fn template_request_of(&mut self, op: &str) -> Message {
        let n = self.n;
        let (tenant, template) = match op {
            "create" => {
                let created = (self.rng.below(8), format!("tpl-{}-{n:08}", self.seed));
                self.catalogue.push(created.clone());
                created
            }
            _ if self.catalogue.is_empty() => (self.rng.below(8), format!("tpl-{:05}", self.rng.below(2000))),
            "delete" => {
                let at = self.rng.below(self.catalogue.len() as u64) as usize;
                self.catalogue.swap_remove(at)
            }
            _ => self.rng.pick(&self.catalogue).clone(),
        };
        let parameters = match op {
            "search" => {
                json!({"query": self.rng.pick(&["fastapi docker", "react", "cli tool", "grpc"]), "language": self.rng.pick(&LANGUAGES), "page": 1, "page_size": 20})
            }
            "create" | "update" => {
                // Bodies 2-60 KB, median about 12 KB.
                let size = match self.rng.below(10) {
                    0..=4 => 2_000 + self.rng.below(10_000),
                    5..=8 => 12_000 + self.rng.below(14_000),
                    _ => 26_000 + self.rng.below(34_000),
                } as usize;
                let name = format!("service-{}", self.rng.below(5000));
                let content = template_body(&mut self.rng, size);
                json!({"name": name, "content": content, "manifest": manifest(&mut self.rng, &name),
                       "description": "A production-ready service template with tests", "tags": ["rest", "docker", "ci"]})
            }
            "validate" => json!({"manifest": manifest(&mut self.rng, "validate-me")}),
            _ => json!({}),
        };
        let data = json!({
            "request_id": format!("req-{}-{n:08}", self.seed), "template_id": template, "operation": op,
            "tenant_id": format!("tenant-{tenant}"), "user_id": format!("user-{}", self.rng.below(50)),
            "parameters": parameters, "timestamp": naive_timestamp(n),
        });
        (self.streams.templates_requests.clone(), vec![("data".into(), data.to_string())])
    }

    fn template_result(&mut self) -> Message {
        let n = self.n;
        let data = json!({
            "request_id": format!("req-{}-{n:08}", self.seed), "template_id": format!("tpl-{:05}", self.rng.below(2000)), "status": "success",
            "result": {"template": {"id": "tpl", "name": "fastapi-service", "version": "1.2.0"}}, "error": null,
            "duration_ms": 3 + self.rng.below(40), "timestamp": naive_timestamp(n),
        });
        (self.streams.templates_results.clone(), vec![("data".into(), data.to_string())])
    }

    fn template_usage(&mut self) -> Message {
        let n = self.n;
        let data = json!({
            "event_id": format!("evt-{n:08}"), "template_id": format!("tpl-{:05}", self.rng.below(2000)),
            "tenant_id": format!("tenant-{}", self.rng.below(8)), "user_id": format!("user-{}", self.rng.below(50)),
            "operation": "retrieve", "success": true, "duration_ms": 3 + self.rng.below(40), "timestamp": naive_timestamp(n),
        });
        (self.streams.templates_usage.clone(), vec![("data".into(), data.to_string())])
    }

    fn automation_job(&mut self) -> Message {
        let n = self.n;
        let (kind, payload) = if self.rng.below(3) == 0 {
            (
                "start_monitoring",
                json!({"project_path": format!("/srv/projects/app-{}", n % 17), "config": {"auto_fix": true, "require_approval": false, "confidence_threshold": 0.75, "auto_commit": false, "create_pr": false, "max_concurrent_repairs": 3}}),
            )
        } else {
            ("heal_test_failure", self.heal_payload())
        };
        let fields = vec![
            ("type".into(), kind.into()),
            ("payload".into(), payload.to_string()),
            ("timestamp".into(), naive_timestamp(n)),
        ];
        (self.streams.automation_jobs.clone(), fields)
    }

    fn stop_monitoring(&mut self) -> Message {
        let payload = json!({"orchestrator_id": format!("orch-{:04}", self.n % 97)});
        let fields = vec![
            ("type".into(), "stop_monitoring".into()),
            ("payload".into(), payload.to_string()),
            ("timestamp".into(), naive_timestamp(self.n)),
        ];
        (self.streams.automation_jobs.clone(), fields)
    }

    /// A heal request in one of the old code's shapes (seed contract 3.3), none with the
    /// source: the REST body, an `ErrorEvent` dict, the orchestrator's error details, the
    /// healer README example. Each names an orchestrator of the mix, as the orchestrator's own
    /// requests would.
    fn heal_payload(&mut self) -> Value {
        let (message, kind) = *self.rng.pick(&[
            ("ModuleNotFoundError: No module named 'requests_mock'", "import_error"),
            ("AssertionError: assert 404 == 200", "test_failure"),
            ("requests.exceptions.ReadTimeout: TimeoutError after 5s", "test_failure"),
            ("AttributeError: 'Response' object has no attribute 'items'", "test_failure"),
            ("FileNotFoundError: [Errno 2] No such file or directory: '/tmp/out'", "runtime_error"),
        ]);
        let line = 2 + self.rng.below(200);
        let orchestrator = format!("orch-{:04}", self.n % 97);
        let file = format!("tests/test_api_{}.py", self.n % 40);
        let trace =
            format!("Traceback (most recent call last):\n  File \"{file}\", line {line}, in test_endpoint\n{message}");
        let mut payload = match self.n % 4 {
            0 => json!({"error_type": kind, "file_path": file,
                "error_details": {"error_message": message, "stack_trace": trace, "line_number": line}}),
            1 => json!({"error_id": format!("pytest_{}", -(self.n as i64) * 7_919), "error_type": kind,
                "severity": "high", "file_path": file, "line_number": line, "stack_trace": trace,
                "error_message": message, "context": {"output": message}, "timestamp": naive_timestamp(self.n),
                "healable": true, "confidence": 0.85}),
            2 => json!({"error_message": message, "stack_trace": trace, "context": {"test_name": "test_endpoint"},
                "file_path": file}),
            _ => json!({"error_type": kind, "error_message": message, "stack_trace": trace, "test_file": file}),
        };
        payload["orchestrator_id"] = json!(orchestrator);
        payload
    }

    fn heal_request(&mut self) -> Message {
        let payload = self.heal_payload();
        (self.streams.automation_healing.clone(), vec![("payload".into(), payload.to_string())])
    }

    fn automation_result(&mut self) -> Message {
        let n = self.n;
        let fields = vec![
            ("type".into(), "status_update".into()),
            ("orchestrator_id".into(), format!("orch-{:04}", n % 97)),
            ("status".into(), "started".into()),
            ("timestamp".into(), naive_timestamp(n)),
        ];
        (self.streams.automation_results.clone(), fields)
    }

    fn repair_result(&mut self) -> Message {
        let n = self.n;
        let result = json!({"repair_id": format!("rep-{n:06}"), "status": "validating", "strategy": "assertion_update", "confidence_score": 0.82, "decision": "apply_with_review", "validation_passed": null});
        let fields = vec![
            ("type".into(), "repair_result".into()),
            ("orchestrator_id".into(), format!("orch-{:04}", n % 97)),
            ("result".into(), result.to_string()),
            ("timestamp".into(), naive_timestamp(n)),
        ];
        (self.streams.automation_results.clone(), fields)
    }

    fn k8s_job(&mut self) -> Message {
        let n = self.n;
        // The old service's spec: any database type (lower-cased; unknown ones deploy none),
        // `resources` often null, commands in `test_config.commands` or in REST-style suites.
        let database = [Some("postgresql"), Some("mysql"), Some("mongodb"), None, Some("PostgreSQL")][(n % 5) as usize];
        let test_config = if n.is_multiple_of(2) {
            json!({"commands": ["pytest -q tests/api", "pytest -q tests/e2e"], "timeout_minutes": 30, "ttl_minutes": 60})
        } else {
            json!({"test_suites": [{"name": "api", "type": "pytest", "test_files": ["tests/api"], "commands": ["pytest -q tests/api"]},
                {"name": "e2e", "type": "e2e", "patterns": ["e2e/*.spec.ts"], "commands": ["npx playwright test"]}]})
        };
        let mut payload = json!({
            "environment_spec": {"app_image": "ghcr.io/acme/shop:1.4.2", "app_port": 8080, "database_type": database, "redis_enabled": n.is_multiple_of(2), "replicas": 1, "resources": null, "env_vars": {"LOG_LEVEL": "info"}},
            "test_config": test_config,
        });
        // Most producers let the engine name the execution; some name it themselves.
        if n.is_multiple_of(4) {
            payload["execution_id"] = json!(format!("exec-{n:06}"));
        }
        let mut fields = vec![("payload".into(), payload.to_string())];
        // The old producers often left `type` out: an execute is the default.
        if !n.is_multiple_of(3) {
            fields.insert(0, ("type".into(), "execute_ephemeral_test".into()));
        }
        (self.streams.k8s_jobs.clone(), fields)
    }

    fn get_logs(&mut self) -> Message {
        let payload = json!({"execution_id": format!("exec-{:06}", self.n % 500)});
        (
            self.streams.k8s_jobs.clone(),
            vec![("type".into(), "get_logs".into()), ("payload".into(), payload.to_string())],
        )
    }

    fn k8s_result(&mut self) -> Message {
        let n = self.n;
        let id = format!("exec-{:06}", n % 500);
        let result = json!({"execution_id": id, "namespace": format!("quality-fabric-{id}"), "test_results": [{"job_name": "test-job-1", "command": "pytest -q tests/api", "success": true, "output": "42 passed in 3.1s", "duration": 3.4}], "status": "completed"});
        let fields = vec![
            ("type".into(), "execution_result".into()),
            ("execution_id".into(), format!("exec-{:06}", n % 500)),
            ("result".into(), result.to_string()),
            ("timestamp".into(), naive_timestamp(n)),
        ];
        (self.streams.k8s_results.clone(), fields)
    }

    fn k8s_status(&mut self) -> Message {
        let n = self.n;
        let status = *self.rng.pick(&["provisioning", "ready", "completed", "failed"]);
        let fields = vec![
            ("type".into(), "status_update".into()),
            ("execution_id".into(), format!("exec-{:06}", n % 500)),
            ("status".into(), status.into()),
            ("details".into(), json!({"namespace": format!("quality-fabric-exec-{:06}", n % 500)}).to_string()),
            ("timestamp".into(), naive_timestamp(n)),
        ];
        (self.streams.k8s_status.clone(), fields)
    }
}

/// Appends one entry to a stream as a producer would; returns its entry id.
pub fn xadd(conn: &mut redis::Connection, stream: &str, fields: &[(&str, String)]) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    cmd.query(conn)
}

/// The engine's own runner identity under the default consumer group.
pub const ENGINE_RUNNER: &str = "maestro-engine/maestro-engine";

/// A `status_update` fact for `k8s:status`, as the engine's Kubernetes effect runner publishes
/// it (under the default group): the runner names itself, so the engine acts on it.
pub fn status_fact(execution_id: &str, status: &str) -> Vec<(&'static str, String)> {
    vec![
        ("type", "status_update".to_string()),
        ("execution_id", execution_id.to_string()),
        ("status", status.to_string()),
        ("details", "{}".to_string()),
        ("timestamp", "2026-11-28T10:00:00".to_string()),
        ("runner", ENGINE_RUNNER.to_string()),
    ]
}

/// Pads the first JSON-object field so that the entry reaches about `target` bytes.
fn pad_json_fields(fields: &mut [(String, String)], target: usize) {
    let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    let Some(short) = target.checked_sub(size + 12).filter(|n| *n > 0) else { return };
    if let Some((_, value)) = fields.iter_mut().find(|(_, v)| v.starts_with('{') && v.ends_with('}')) {
        value.pop();
        value.push_str(&format!(",\"trace\":\"{}\"}}", "0".repeat(short)));
    }
}

/// Writes messages with pipelined XADDs, `chunk` at a time. Returns the entry ids, in order.
pub fn publish(conn: &mut redis::Connection, messages: &[Message]) -> redis::RedisResult<Vec<String>> {
    let mut pipe = redis::pipe();
    for (stream, fields) in messages {
        let cmd = pipe.cmd("XADD").arg(stream).arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value);
        }
    }
    pipe.query(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_schemas::envelope::Limits;
    use maestro_schemas::{EntryId, Origin, decode};

    #[test]
    fn every_generated_message_decodes() {
        let streams = StreamSet::default();
        let mut traffic = Traffic::new(7, streams.clone());
        for i in 0..2_000 {
            let (stream, fields) = if i % 2 == 0 { traffic.next_message() } else { traffic.control_message(i) };
            let raw: Vec<(Vec<u8>, Vec<u8>)> =
                fields.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect();
            let role = streams.role_of(&stream).unwrap();
            let origin = Origin { stream: &stream, entry: EntryId { ms: i, seq: 0 } };
            if let Err(reject) = decode(role, origin, &raw, &Limits::default()) {
                panic!("{stream} {raw:?}: {reject}");
            }
        }
    }

    #[test]
    fn control_messages_are_about_300_bytes() {
        let mut traffic = Traffic::new(1, StreamSet::default());
        let sizes: Vec<usize> =
            (0..900).map(|i| traffic.control_message(i).1.iter().map(|(k, v)| k.len() + v.len()).sum()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((150..=450).contains(&mean), "mean control message is {mean} bytes");
    }
}
