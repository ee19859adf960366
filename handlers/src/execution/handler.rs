//! The execution handler: `execute_ephemeral_test`, `cleanup_environment` and `get_logs` in,
//! status and result facts back from `k8s:status` and `k8s:results`, clock records for TTL
//! expiry. Out: `status_update`s on `k8s:status` for what the engine decides itself (requested
//! or queued, provisioning, expired, failed), and intents for the Kubernetes effect runner
//! (`k8s_apply`, `k8s_delete`, `k8s_logs`). Facts the runner learns from the cluster come back
//! as entries on the streams and move the environment forward, never back, and only when
//! they name a trusted runner (the `runner` field, checked against the `execution.runners`
//! setting record). A valid fact the handler cannot act on (an unknown execution, an untrusted
//! runner, a status it does not know) is ignored with a reason, never dead-lettered; every
//! request is answered on `k8s:status` or `k8s:results`.

use super::manifests::{self, Request, namespace_of};
use super::model::*;
use crate::contract::{Decision, Event, Handler, HandlerError, Intent, Output, Overlay, StateView};
use maestro_schemas::encode::to_fields;
use maestro_schemas::ids::{execution_id as derived_execution_id, naive_iso};
use maestro_schemas::proto::execution::{self as ex, ExecuteEphemeralTest, k8s_job::Job, k8s_result};
use maestro_schemas::{Body, Entry, Event as Typed};
use prost::Message;
use serde_json::{Value, json};

/// The projection's name.
pub const NAME: &str = "execution";

/// The handler, with the streams its answers go to.
#[derive(Clone, Debug)]
pub struct Execution {
    pub status: String,
    pub results: String,
}

impl Execution {
    pub fn new(streams: &maestro_schemas::StreamSet) -> Execution {
        Execution { status: streams.k8s_status.clone(), results: streams.k8s_results.clone() }
    }
}

/// Why a valid entry changed nothing: the reasons the engine counts per stream.
pub mod reason {
    pub const UNKNOWN_EXECUTION: &str = "unknown_execution";
    pub const FACT_FROM_UNKNOWN_RUNNER: &str = "fact_from_unknown_runner";
    pub const UNKNOWN_STATUS: &str = "unknown_status";
    pub const EXECUTION_EXISTS: &str = "execution_exists";
}

/// The status the engine answers a request for an execution it does not know with (the old
/// service answered nothing).
pub const NOT_FOUND: &str = "not_found";

/// One event's work over the projection.
struct Session<'a> {
    tx: Overlay<'a>,
    outputs: Vec<Output>,
    intents: Vec<Intent>,
    status_stream: &'a str,
    results_stream: &'a str,
    /// Set when the event is valid but changes nothing: the reason.
    ignored: Option<&'static str>,
}

impl Session<'_> {
    fn load(&self, id: &str) -> Option<Environment> {
        serde_json::from_slice(&self.tx.get(&env_key(id))?).ok()
    }

    fn save(&mut self, env: &Environment) {
        self.tx.put(env_key(&env.execution_id), serde_json::to_vec(env).unwrap_or_default());
    }

    fn has_free_slot(&self) -> bool {
        let cap = self.cap();
        self.tx.scan_limit(ACTIVE_PREFIX, cap).len() < cap
    }

    /// How many environments wait for a slot (kept as a counter: the queue is never read whole).
    fn queued(&self) -> u64 {
        self.tx.get(QUEUED_KEY).and_then(|v| String::from_utf8(v).ok()?.parse().ok()).unwrap_or(0)
    }

    fn enqueue(&mut self, key: Vec<u8>, id: &str) {
        self.tx.put(key, id.as_bytes().to_vec());
        self.tx.put(QUEUED_KEY.to_vec(), (self.queued() + 1).to_string().into_bytes());
    }

    fn dequeue(&mut self, key: Vec<u8>) {
        if self.tx.get(&key).is_some() {
            self.tx.delete(key);
            self.tx.put(QUEUED_KEY.to_vec(), self.queued().saturating_sub(1).to_string().into_bytes());
        }
    }

    fn cap(&self) -> usize {
        let recorded = self.tx.get(CAP_KEY).and_then(|v| String::from_utf8(v).ok()?.parse::<usize>().ok());
        recorded.unwrap_or(super::DEFAULT_MAX_ACTIVE as usize).max(1)
    }

    /// `{type: status_update, execution_id, status, details, timestamp}` on `k8s:status`.
    fn publish(&mut self, env: &Environment, details: Value, ms: u64) {
        self.publish_status(&env.execution_id, env.status.name(), details, ms);
    }

    fn publish_status(&mut self, id: &str, status: &str, details: Value, ms: u64) {
        let status = ex::ExecutionStatus {
            execution_id: id.to_string(),
            status: status.to_string(),
            details_json: details.to_string(),
            timestamp: naive_iso(ms),
        };
        let fields = to_fields(&maestro_schemas::Event::K8sStatus(status));
        self.outputs.push(Output::new(self.status_stream, fields));
    }

    /// `{type: execution_logs, execution_id, logs, timestamp}` on `k8s:results`.
    fn publish_logs(&mut self, id: &str, logs: String, ms: u64) {
        let logs = ex::ExecutionLogs { execution_id: id.to_string(), logs, timestamp: naive_iso(ms) };
        let result = ex::K8sResult { result: Some(k8s_result::Result::ExecutionLogs(logs)) };
        let fields = to_fields(&maestro_schemas::Event::K8sResult(result));
        self.outputs.push(Output::new(self.results_stream, fields));
    }

    /// Whether a fact entry names a trusted runner.
    fn trusts(&self, entry: &Entry) -> bool {
        let named = entry.field(super::RUNNER_FIELD);
        let Some(runner) = named.and_then(|v| std::str::from_utf8(v).ok()) else { return false };
        self.runners().iter().any(|r| r == runner)
    }

    /// The runner identities whose facts move environments.
    fn runners(&self) -> Vec<String> {
        self.tx.get(RUNNERS_KEY).and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_else(super::default_runners)
    }

    /// An intent for the runner. Its id names the environment's lifecycle step, so that a
    /// retried effect repeats the same id; `get_logs`, which is no step, names its request.
    fn intent(&mut self, kind: &str, env: &Environment, payload: Value) {
        self.intent_at(kind, env, &env.transitions.len().to_string(), payload);
    }

    fn intent_at(&mut self, kind: &str, env: &Environment, at: &str, payload: Value) {
        let id = format!("{kind}/{}/{at}", env.execution_id);
        self.intents.push(Intent { kind: kind.into(), id, payload: payload.to_string().into_bytes() });
    }

    /// Gives queued environments their slot, oldest first, while slots are free.
    fn fill_slots(&mut self, ms: u64) {
        while self.has_free_slot() {
            let Some((key, id)) = self.tx.first(QUEUE_PREFIX) else { return };
            self.dequeue(key);
            let id = String::from_utf8(id).unwrap_or_default();
            let Some(env) = self.load(&id) else { continue };
            let request = self.tx.get(&request_key(&id)).and_then(|b| ExecuteEphemeralTest::decode(b.as_slice()).ok());
            if let Some(request) = request {
                self.admit(env, &request, ms);
            }
        }
    }

    /// Takes a slot: `requested`, the manifests to the effect runner, `provisioning`.
    fn admit(&mut self, mut env: Environment, request: &ExecuteEphemeralTest, ms: u64) {
        let expires = ms.saturating_add(env.ttl_ms);
        env.admitted_ms = Some(ms);
        env.expires_ms = Some(expires);
        env.enter(EnvStatus::Requested, ms);
        // The request's entry id lets a producer that sent no execution_id find its answers.
        let details = json!({"namespace": env.namespace, "expires_at": naive_iso(expires), "entry_id": env.entry_id});
        self.publish(&env, details, ms);
        // `execute` rendered this request already (times only go into annotations), so this
        // cannot fail here; an empty list would still leave a visible, failing apply.
        let rendered = render(request, &env.execution_id, ms, expires).unwrap_or_default();
        let mut details = json!({"namespace": env.namespace, "objects": []});
        let names: Vec<String> = rendered.iter().map(|m| format!("{}/{}", m.kind(), m.name())).collect();
        let payload = json!({"execution_id": env.execution_id, "namespace": env.namespace, "commands": env.commands,
            "timeout_minutes": env.timeout_minutes, "manifests": rendered});
        self.intent("k8s_apply", &env, payload);
        env.enter(EnvStatus::Provisioning, ms);
        details["objects"] = json!(names);
        if let Some(warning) = &env.warning {
            details["warning"] = json!(warning);
        }
        self.publish(&env, details, ms);
        self.tx.put(active_key(&env.execution_id), ms.to_string().into_bytes());
        self.tx.put(expiry_key(expires, &env.execution_id), Vec::new());
        self.save(&env);
    }

    /// Moves an environment to a state that ends its activity, freeing its slot.
    fn leave(&mut self, env: &mut Environment, status: EnvStatus, ms: u64) {
        env.enter(status, ms);
        self.tx.delete(active_key(&env.execution_id));
        if let (EnvStatus::Cleaned, Some(expires)) = (status, env.expires_ms) {
            self.tx.delete(expiry_key(expires, &env.execution_id));
        }
    }

    /// Expires every environment whose TTL ran out at or before `now`: its namespace goes.
    fn expire(&mut self, now: u64) {
        // Expiry keys in key order are in time order: take them from the front while they are due.
        while let Some((key, _)) = self.tx.first(EXPIRY_PREFIX) {
            let Some((_, id)) = expiry_of(&key).filter(|(deadline, _)| *deadline <= now) else { break };
            self.tx.delete(key);
            let Some(mut env) = self.load(&id) else { continue };
            if env.status >= EnvStatus::Expired {
                continue;
            }
            self.leave(&mut env, EnvStatus::Expired, now);
            self.publish(&env, json!({"reason": format!("TTL of {} s ran out", env.ttl_ms / 1000)}), now);
            self.intent("k8s_delete", &env, json!({"execution_id": env.execution_id, "namespace": env.namespace}));
            self.save(&env);
        }
        self.fill_slots(now);
    }
}

/// The manifests of a request, as JSON objects.
pub fn render(
    request: &ExecuteEphemeralTest,
    execution_id: &str,
    requested_ms: u64,
    expires_ms: u64,
) -> Result<Vec<manifests::Manifest>, String> {
    let spec = request.environment_spec.clone().unwrap_or_default();
    let mut test = request.test_config.clone().unwrap_or_default();
    test.commands = commands_of(request);
    manifests::render(&Request { execution_id, spec: &spec, test: &test, requested_ms, expires_ms })
}

/// The commands to run, one job each: `test_config.commands`, then the `commands` of each of
/// `test_config.test_suites` (the old REST model's suites, kept in the request's `extra`), in
/// order. A suite without commands, or a `test_suites` that is not a list of objects, adds none.
pub fn commands_of(request: &ExecuteEphemeralTest) -> Vec<String> {
    let mut commands = request.test_config.as_ref().map(|t| t.commands.clone()).unwrap_or_default();
    let suites: Vec<Value> = request
        .extra
        .get("test_config.test_suites")
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    for suite in &suites {
        let listed = suite.get("commands").and_then(Value::as_array).into_iter().flatten();
        commands.extend(listed.filter_map(Value::as_str).map(str::to_string));
    }
    commands
}

/// The TTL of a request in milliseconds.
fn ttl_ms(run: &ExecuteEphemeralTest) -> Result<u64, HandlerError> {
    let minutes = run.test_config.as_ref().and_then(|t| t.ttl_minutes).unwrap_or(60);
    match run.extra.get("test_config.ttl_seconds") {
        None => Ok(u64::from(minutes) * 60_000),
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(seconds * 1000),
            _ => Err(HandlerError::Invalid(format!("test_config.ttl_seconds is {text}, not a positive whole number"))),
        },
    }
}

impl Execution {
    /// The id of a new execution: the producer's, or the one derived from the entry; a derived
    /// id another execution holds already is derived again (attempt 1, 2, ...). `None` when the
    /// producer's own id is taken.
    fn new_id(s: &Session<'_>, run: &ExecuteEphemeralTest, entry: &Entry) -> Option<String> {
        let id = run.execution_id.clone().unwrap_or_default();
        if s.load(&id).is_none() {
            return Some(id);
        }
        if id != derived_execution_id(&entry.stream, entry.id, 0) {
            return None;
        }
        (1..).map(|n| derived_execution_id(&entry.stream, entry.id, n)).find(|id| s.load(id).is_none())
    }

    fn execute(&self, s: &mut Session<'_>, run: &ExecuteEphemeralTest, entry: &Entry) -> Result<(), HandlerError> {
        let Some(id) = Self::new_id(s, run, entry) else {
            s.ignored = Some(reason::EXECUTION_EXISTS);
            return Ok(());
        };
        let mut run = run.clone();
        run.execution_id = Some(id.clone());
        let run = &run;
        let test = run.test_config.clone().unwrap_or_default();
        let spec = run.environment_spec.clone().unwrap_or_default();
        let ms = entry.id.ms;
        let mut env = Environment {
            execution_id: id.clone(),
            namespace: namespace_of(&id),
            status: EnvStatus::Queued,
            app_image: run.environment_spec.as_ref().map(|s| s.app_image.clone()).unwrap_or_default(),
            commands: commands_of(run),
            ttl_ms: ttl_ms(run)?,
            timeout_minutes: test.timeout_minutes.unwrap_or(30),
            stream: entry.stream.clone(),
            entry_id: entry.id.to_string(),
            requested_ms: ms,
            admitted_ms: None,
            expires_ms: None,
            cleanup_requested: false,
            results: Vec::new(),
            logs_bytes: None,
            logs_ms: None,
            reason: None,
            warning: manifests::database_kind(&spec).err(),
            transitions: Vec::new(),
        };
        // A request whose manifests cannot be rendered is answered as failed, with the reason.
        if let Err(reason) = render(run, &id, ms, ms) {
            env.enter(EnvStatus::Failed, ms);
            env.reason = Some(reason.clone());
            s.publish(&env, json!({"error": reason, "entry_id": env.entry_id}), ms);
            s.save(&env);
            return Ok(());
        }
        s.tx.put(request_key(&id), run.encode_to_vec());
        if s.has_free_slot() && s.tx.first(QUEUE_PREFIX).is_none() {
            s.admit(env, run, ms);
        } else {
            env.enter(EnvStatus::Queued, ms);
            s.enqueue(queue_key(&arrival(&entry.stream, entry.id)), &id);
            let mut details = json!({"namespace": env.namespace, "position": s.queued(), "entry_id": env.entry_id});
            if let Some(warning) = &env.warning {
                details["warning"] = json!(warning);
            }
            s.publish(&env, details, ms);
            s.save(&env);
        }
        Ok(())
    }

    fn cleanup(&self, s: &mut Session<'_>, id: &str, ms: u64) -> Result<(), HandlerError> {
        let Some(mut env) = s.load(id) else {
            let details = json!({"error": format!("no execution {id}"), "request": "cleanup_environment"});
            s.publish_status(id, NOT_FOUND, details, ms);
            return Ok(());
        };
        match env.status {
            EnvStatus::Cleaned => {}
            // Nothing was created yet: it is clean as it is.
            EnvStatus::Queued => {
                let entry = maestro_schemas::EntryId::parse(&env.entry_id).unwrap_or_default();
                s.dequeue(queue_key(&arrival(&env.stream, entry)));
                s.leave(&mut env, EnvStatus::Cleaned, ms);
                s.publish(&env, json!({"reason": "cleaned up before it was provisioned"}), ms);
            }
            // Repeated: the runner answers the first request.
            _ if env.cleanup_requested => {}
            _ => {
                env.cleanup_requested = true;
                if env.status.is_active() {
                    s.tx.delete(active_key(id));
                }
                s.intent("k8s_delete", &env, json!({"execution_id": id, "namespace": env.namespace}));
            }
        }
        s.save(&env);
        s.fill_slots(ms);
        Ok(())
    }

    fn get_logs(&self, s: &mut Session<'_>, id: &str, entry: &Entry) -> Result<(), HandlerError> {
        let Some(env) = s.load(id) else {
            s.publish_logs(id, format!("no execution {id} is known to the engine"), entry.id.ms);
            return Ok(());
        };
        let jobs: Vec<String> = (1..=env.commands.len()).map(manifests::job_name).collect();
        let payload = json!({"execution_id": id, "namespace": env.namespace, "jobs": jobs});
        s.intent_at("k8s_logs", &env, &entry.id.to_string(), payload);
        Ok(())
    }

    /// A status fact: moves the environment forward; a stale or repeated fact changes nothing.
    fn status_fact(&self, s: &mut Session<'_>, fact: &ex::ExecutionStatus, ms: u64) -> Result<(), HandlerError> {
        let id = &fact.execution_id;
        let Some(mut env) = s.load(id) else {
            s.ignored = Some(reason::UNKNOWN_EXECUTION);
            return Ok(());
        };
        let Some(next) = EnvStatus::parse(&fact.status) else {
            s.ignored = Some(reason::UNKNOWN_STATUS);
            return Ok(());
        };
        // The cluster cannot know of an environment still waiting for a slot.
        if env.status == EnvStatus::Queued || !env.status.moves_to(next) {
            return Ok(());
        }
        if next.is_active() {
            env.enter(next, ms);
        } else {
            s.leave(&mut env, next, ms);
        }
        s.save(&env);
        s.fill_slots(ms);
        Ok(())
    }

    fn result_fact(&self, s: &mut Session<'_>, result: &k8s_result::Result, ms: u64) -> Result<(), HandlerError> {
        let id = match result {
            k8s_result::Result::ExecutionResult(r) => &r.execution_id,
            k8s_result::Result::ExecutionLogs(l) => &l.execution_id,
        };
        let Some(mut env) = s.load(id) else {
            s.ignored = Some(reason::UNKNOWN_EXECUTION);
            return Ok(());
        };
        match result {
            k8s_result::Result::ExecutionResult(r) => {
                // The contract's `{..., test_results: [...]}`; a bare list is taken as the jobs.
                let parsed: Value = serde_json::from_str(&r.result_json).unwrap_or(Value::Null);
                let jobs = parsed.get("test_results").or(Some(&parsed)).and_then(Value::as_array).cloned();
                env.results = jobs.unwrap_or_else(|| vec![parsed]);
            }
            k8s_result::Result::ExecutionLogs(l) => {
                env.logs_bytes = Some(l.logs.len() as u64);
                env.logs_ms = Some(ms);
            }
        }
        s.save(&env);
        Ok(())
    }
}

impl Handler for Execution {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> Result<Decision, HandlerError> {
        let mut s = Session {
            tx: Overlay::new(state),
            outputs: Vec::new(),
            intents: Vec::new(),
            status_stream: &self.status,
            results_stream: &self.results,
            ignored: None,
        };
        match (&event.record.body, event.typed.map(|t| &t.event)) {
            (Body::Clock { time_ms }, _) => s.expire(*time_ms),
            (Body::Setting { name, value }, _) if name == super::MAX_ACTIVE_SETTING => {
                s.tx.put(CAP_KEY.to_vec(), value.clone().into_bytes());
            }
            (Body::Setting { name, value }, _) if name == super::RUNNERS_SETTING => {
                // A value that is not a list of strings trusts the engine's runner only.
                let runners: Vec<String> = serde_json::from_str(value).unwrap_or_else(|_| super::default_runners());
                s.tx.put(RUNNERS_KEY.to_vec(), serde_json::to_vec(&runners).unwrap_or_default());
            }
            (Body::Entry(entry), Some(Typed::K8sStatus(_) | Typed::K8sResult(_))) if !s.trusts(entry) => {
                return Ok(Decision::ignored(reason::FACT_FROM_UNKNOWN_RUNNER));
            }
            (Body::Entry(entry), Some(typed)) => {
                let ms = entry.id.ms;
                match typed {
                    Typed::K8sJob(job) => match &job.job {
                        Some(Job::ExecuteEphemeralTest(run)) => self.execute(&mut s, run, entry)?,
                        Some(Job::CleanupEnvironment(c)) => self.cleanup(&mut s, &c.execution_id, ms)?,
                        Some(Job::GetLogs(g)) => self.get_logs(&mut s, &g.execution_id, entry)?,
                        None => {}
                    },
                    Typed::K8sStatus(fact) => self.status_fact(&mut s, fact, ms)?,
                    Typed::K8sResult(ex::K8sResult { result: Some(result) }) => self.result_fact(&mut s, result, ms)?,
                    _ => {}
                }
            }
            _ => {}
        }
        if let Some(reason) = s.ignored {
            return Ok(Decision::ignored(reason));
        }
        Ok(Decision { changes: s.tx.into_changes(), outputs: s.outputs, intents: s.intents, ..Decision::default() })
    }
}
