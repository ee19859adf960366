//! The Kubernetes effect runner: runs the execution handler's intents against a cluster and
//! reports what happened as facts for `k8s:status` and `k8s:results`, which the engine
//! publishes and then reads back like any producer's entries.
//!
//! - `k8s_apply`: server-side apply (field manager `maestro`, forced) of everything but the
//!   jobs, readiness of the deployments and statefulsets (`ready`), then the jobs (`running`),
//!   their completion and capped logs (`execution_result`, then `completed` or `failed`).
//! - `k8s_delete`: the namespace is deleted (`cleaned`; a namespace already gone is cleaned).
//! - `k8s_logs`: each job's pod logs, capped per job (`execution_logs`).
//!
//! An intent is handed to a task ([`Ran::Started`]) and stays in flight until the task's last
//! fact is published: an engine killed mid-provisioning runs the intent again at its next start,
//! and the task goes through every step again (server-side apply changes nothing that is
//! there, readiness is polled again, repeated facts have the same ids). A deletion makes the
//! environment's apply, waiting or in flight, pointless ([`EffectRunner::obsoletes`]): an apply
//! run after it would create a namespace nothing deletes again. API errors are retried with a
//! back-off and, when they persist, reported as a `failed` fact naming the error. Every fact carries a
//! `fact_id` derived from the intent, and the handler takes facts forward-only, so a repeated
//! effect changes nothing. Every fact names the runner (`runner`, the engine's identity): the
//! handler acts only on facts of runners it trusts.
//!
//! Without a cluster, [`NoCluster`] answers deletion and logs (there is no cluster, so nothing to
//! delete and no logs); it takes no `k8s_apply`: those wait, environments stay `provisioning`,
//! until the engine starts with a cluster and this runner applies them.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use maestro_engine::effects::{EffectRunner, Fact, Obsoletes, Ran};
use maestro_handlers::Intent;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The intent kinds this runner takes.
pub const KINDS: [&str; 3] = ["k8s_apply", "k8s_delete", "k8s_logs"];

/// Which of the runner's two streams a fact goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactStream {
    Status,
    Results,
}

/// The keys of the streams the runner's facts go to: the configured `k8s:status` and
/// `k8s:results`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactKeys {
    pub status: String,
    pub results: String,
}

impl FactKeys {
    pub fn of(streams: &maestro_schemas::StreamSet) -> FactKeys {
        FactKeys { status: streams.k8s_status.clone(), results: streams.k8s_results.clone() }
    }

    fn key(&self, stream: FactStream) -> String {
        match stream {
            FactStream::Status => self.status.clone(),
            FactStream::Results => self.results.clone(),
        }
    }
}

/// A deletion of an environment makes its apply pointless, whether it waits for a runner or is
/// in flight.
fn deletion_obsoletes(ran: &Intent) -> Option<Obsoletes> {
    if ran.kind != "k8s_delete" {
        return None;
    }
    let deleted = execution_id(&ran.payload)?;
    Some(Box::new(move |other: &Intent| {
        other.kind == "k8s_apply" && execution_id(&other.payload).as_deref() == Some(deleted.as_str())
    }))
}

fn execution_id(payload: &[u8]) -> Option<String> {
    let payload: Value = serde_json::from_slice(payload).ok()?;
    payload["execution_id"].as_str().map(str::to_string)
}

/// How patient the runner is.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// Bytes of log kept per job.
    pub log_cap_bytes: i64,
    /// Between two polls of an object's status.
    pub poll: Duration,
    /// How long deployments and statefulsets may take to become ready.
    pub ready_timeout: Duration,
    /// Attempts of one API call before the effect is reported failed.
    pub attempts: u32,
}

impl Default for KubeSettings {
    fn default() -> KubeSettings {
        KubeSettings {
            log_cap_bytes: 1024 * 1024,
            poll: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(600),
            attempts: 4,
        }
    }
}

/// The runner: a client, the settings, and where facts go.
#[derive(Clone)]
pub struct KubeRunner {
    pub client: kube::Client,
    /// The `runner` field of every fact.
    pub identity: String,
    pub settings: KubeSettings,
    pub keys: FactKeys,
    pub facts: UnboundedSender<Fact>,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for KubeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRunner").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl EffectRunner for KubeRunner {
    fn handles(&self, kind: &str) -> bool {
        KINDS.contains(&kind)
    }

    fn run(&mut self, intent: &Intent) -> Result<Ran, String> {
        let payload: Value =
            serde_json::from_slice(&intent.payload).map_err(|e| format!("intent {}: payload: {e}", intent.id))?;
        let runner = self.clone();
        let (kind, id) = (intent.kind.clone(), intent.id.clone());
        self.runtime.spawn(async move {
            match kind.as_str() {
                "k8s_apply" => runner.provision(&id, &payload).await,
                "k8s_delete" => runner.delete(&id, &payload).await,
                _ => runner.logs(&id, &payload).await,
            }
        });
        Ok(Ran::Started)
    }

    fn obsoletes(&self, ran: &Intent) -> Option<Obsoletes> {
        deletion_obsoletes(ran)
    }
}

/// A fact's fields in the old flat shape (`type`, `execution_id`, the rest, `timestamp`), then
/// the runner's identity and the fact's id, derived from the intent.
fn fact_fields(
    identity: &str,
    intent: &str,
    kind: &str,
    execution_id: &str,
    rest: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut fields =
        vec![("type".to_string(), kind.to_string()), ("execution_id".to_string(), execution_id.to_string())];
    fields.extend(rest.iter().map(|(k, v)| (k.to_string(), v.clone())));
    fields.push(("timestamp".into(), now_naive()));
    fields.push((maestro_handlers::execution::RUNNER_FIELD.into(), identity.to_string()));
    let tag = rest.iter().find(|(k, _)| *k == "status").map_or(kind, |(_, v)| v.as_str());
    fields.push(("fact_id".into(), format!("{intent}/{tag}")));
    fields
}

/// The `result` of an `execution_result` fact, as the old service's consumers read it.
pub fn execution_result(execution_id: &str, namespace: &str, test_results: Vec<Value>) -> (Value, &'static str) {
    let passed = test_results.iter().all(|r| r["success"] == true);
    let status = if passed { "completed" } else { "failed" };
    let result = json!({"execution_id": execution_id, "namespace": namespace, "test_results": test_results,
        "status": status});
    (result, status)
}

fn text(payload: &Value, key: &str) -> String {
    payload[key].as_str().unwrap_or_default().to_string()
}

/// The naive ISO time of now, as the old services wrote it. (Facts are data; the engine orders
/// by entry id.)
fn now_naive() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    maestro_schemas::ids::naive_iso(ms)
}

impl KubeRunner {
    fn fact(&self, intent: &str, stream: FactStream, kind: &str, execution_id: &str, rest: &[(&str, String)]) {
        self.send(intent, stream, kind, execution_id, rest, false);
    }

    /// The task's last fact: once published, the intent is no longer in flight.
    fn last_fact(&self, intent: &str, stream: FactStream, kind: &str, execution_id: &str, rest: &[(&str, String)]) {
        self.send(intent, stream, kind, execution_id, rest, true);
    }

    fn send(
        &self,
        intent: &str,
        stream: FactStream,
        kind: &str,
        execution_id: &str,
        rest: &[(&str, String)],
        last: bool,
    ) {
        let fields = fact_fields(&self.identity, intent, kind, execution_id, rest);
        let finishes = last.then(|| intent.to_string());
        // A closed channel means the engine is stopping; the intent is still in flight and is
        // run again at the next start.
        let _ = self.facts.send(Fact { stream: self.keys.key(stream), fields, finishes });
    }

    fn status(&self, intent: &str, execution_id: &str, status: &str, details: Value) {
        let rest = [("status", status.to_string()), ("details", details.to_string())];
        self.fact(intent, FactStream::Status, "status_update", execution_id, &rest);
    }

    fn last_status(&self, intent: &str, execution_id: &str, status: &str, details: Value) {
        let rest = [("status", status.to_string()), ("details", details.to_string())];
        self.last_fact(intent, FactStream::Status, "status_update", execution_id, &rest);
    }

    /// Retries an API call with a doubling back-off; the last error names the call.
    async fn retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T, String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = kube::Result<T>>,
    {
        let mut wait = self.settings.poll / 4;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) if attempt >= self.settings.attempts => {
                    return Err(format!("{what}: {error} (after {attempt} attempts)"));
                }
                Err(error) => {
                    tracing::warn!(what, %error, attempt, "kubernetes call failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Server-side apply of objects, in order.
    pub async fn apply_objects(&self, namespace: &str, objects: &[Value]) -> Result<(), String> {
        for object in objects {
            self.apply(namespace, object).await?;
        }
        Ok(())
    }

    /// Server-side apply of one object, by its kind.
    async fn apply(&self, namespace: &str, object: &Value) -> Result<(), String> {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let c = self.client.clone();
        match kind {
            "Namespace" => self.apply_as::<Namespace>(Api::all(c), &name, object).await,
            "ResourceQuota" => self.apply_as::<ResourceQuota>(Api::namespaced(c, namespace), &name, object).await,
            "LimitRange" => self.apply_as::<LimitRange>(Api::namespaced(c, namespace), &name, object).await,
            "Deployment" => self.apply_as::<Deployment>(Api::namespaced(c, namespace), &name, object).await,
            "StatefulSet" => self.apply_as::<StatefulSet>(Api::namespaced(c, namespace), &name, object).await,
            "Service" => self.apply_as::<Service>(Api::namespaced(c, namespace), &name, object).await,
            "Job" => self.apply_as::<Job>(Api::namespaced(c, namespace), &name, object).await,
            other => Err(format!("no way to apply a {other:?}")),
        }
    }

    async fn apply_as<K>(&self, api: Api<K>, name: &str, object: &Value) -> Result<(), String>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let typed: K = serde_json::from_value(object.clone()).map_err(|e| format!("{name}: {e}"))?;
        let params = PatchParams::apply("maestro").force();
        let patch = Patch::Apply(&typed);
        self.retry(&format!("apply {name}"), || api.patch(name, &params, &patch)).await.map(|_| ())
    }

    /// Provisions an environment and runs its tests, reporting each step as a fact.
    pub async fn provision(&self, intent: &str, payload: &Value) {
        let id = text(payload, "execution_id");
        if let Err(error) = self.provision_steps(intent, payload).await {
            tracing::error!(execution_id = id, error, "provisioning failed");
            self.last_status(intent, &id, "failed", json!({"error": error}));
        }
    }

    async fn provision_steps(&self, intent: &str, payload: &Value) -> Result<(), String> {
        let (id, namespace) = (text(payload, "execution_id"), text(payload, "namespace"));
        let manifests = payload["manifests"].as_array().cloned().unwrap_or_default();
        let (jobs, others): (Vec<Value>, Vec<Value>) = manifests.into_iter().partition(|m| m["kind"] == "Job");
        self.apply_objects(&namespace, &others).await?;
        self.wait_ready(&namespace, &others).await?;
        self.status(intent, &id, "ready", json!({"namespace": namespace}));
        self.apply_objects(&namespace, &jobs).await?;
        self.status(intent, &id, "running", json!({"jobs": jobs.len()}));
        let timeout = Duration::from_secs(payload["timeout_minutes"].as_u64().unwrap_or(30) * 60);
        let mut results = Vec::new();
        for object in &jobs {
            results.push(self.wait_job(&namespace, object, timeout).await?);
        }
        let jobs = results.len();
        let (result, status) = execution_result(&id, &namespace, results);
        self.fact(intent, FactStream::Results, "execution_result", &id, &[("result", result.to_string())]);
        self.last_status(intent, &id, status, json!({"namespace": namespace, "jobs": jobs}));
        Ok(())
    }

    /// Polls the deployments and statefulsets until every one has its replicas ready.
    async fn wait_ready(&self, namespace: &str, objects: &[Value]) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.settings.ready_timeout;
        for object in objects {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
            loop {
                let ready = match object["kind"].as_str() {
                    Some("Deployment") => {
                        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
                        let d = self.retry(&format!("get deployment {name}"), || api.get(name)).await?;
                        d.status.and_then(|s| s.ready_replicas).unwrap_or(0)
                    }
                    Some("StatefulSet") => {
                        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
                        let s = self.retry(&format!("get statefulset {name}"), || api.get(name)).await?;
                        s.status.and_then(|s| s.ready_replicas).unwrap_or(0)
                    }
                    _ => break,
                };
                if ready >= wanted {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "{name}: {ready} of {wanted} replicas ready after {:?}",
                        self.settings.ready_timeout
                    ));
                }
                tokio::time::sleep(self.settings.poll).await;
            }
        }
        Ok(())
    }

    /// Polls a job until it succeeded or failed; its result with the pod's capped log.
    async fn wait_job(&self, namespace: &str, object: &Value, timeout: Duration) -> Result<Value, String> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let command = object["metadata"]["annotations"]["maestro.io/command"].as_str().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.retry(&format!("get job {name}"), || api.get(name)).await?;
            let status = job.status.unwrap_or_default();
            let done = status.succeeded.unwrap_or(0) > 0 || status.failed.unwrap_or(0) > 1;
            if done || tokio::time::Instant::now() >= deadline {
                let success = status.succeeded.unwrap_or(0) > 0;
                let duration = match (status.start_time, status.completion_time) {
                    (Some(start), Some(end)) => end.0.duration_since(start.0).as_secs_f64(),
                    _ => 0.0,
                };
                let output = self.job_log(namespace, name).await.unwrap_or_else(|e| format!("(no log: {e})"));
                return Ok(json!({"job_name": name, "command": command, "success": success && done,
                    "output": output, "duration": duration}));
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// The log of a job's first pod, at most `log_cap_bytes`.
    async fn job_log(&self, namespace: &str, job: &str) -> Result<String, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let selector = ListParams::default().labels(&format!("job-name={job}"));
        let list = self.retry(&format!("list pods of {job}"), || pods.list(&selector)).await?;
        let Some(pod) = list.items.first().and_then(|p| p.metadata.name.clone()) else {
            return Err(format!("no pod of {job}"));
        };
        let params = LogParams { limit_bytes: Some(self.settings.log_cap_bytes), ..LogParams::default() };
        self.retry(&format!("log of {pod}"), || pods.logs(&pod, &params)).await
    }

    /// Deletes the namespace; a namespace already gone counts as deleted.
    pub async fn delete(&self, intent: &str, payload: &Value) {
        let (id, namespace) = (text(payload, "execution_id"), text(payload, "namespace"));
        let api: Api<Namespace> = Api::all(self.client.clone());
        let deleted = self
            .retry(&format!("delete namespace {namespace}"), || async {
                match api.delete(&namespace, &DeleteParams::foreground()).await {
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    other => other.map(|_| ()),
                }
            })
            .await;
        match deleted {
            Ok(()) => self.last_status(intent, &id, "cleaned", json!({"namespace": namespace})),
            // Left in flight: the next start deletes again.
            Err(error) => {
                tracing::error!(execution_id = id, error, "namespace deletion failed; retried at the next start")
            }
        }
    }

    /// Fetches each job's capped log and reports them as one `execution_logs` fact.
    pub async fn logs(&self, intent: &str, payload: &Value) {
        let (id, namespace) = (text(payload, "execution_id"), text(payload, "namespace"));
        let mut logs = String::new();
        for job in payload["jobs"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let log = self.job_log(&namespace, job).await.unwrap_or_else(|e| format!("(no log: {e})"));
            logs.push_str(&format!("=== {job} ===\n{log}\n"));
        }
        self.last_fact(intent, FactStream::Results, "execution_logs", &id, &[("logs", logs)]);
    }
}

/// The runner when no cluster is configured: it answers what can be answered without one.
/// `k8s_delete` is `cleaned` (nothing was created: the apply waits for a cluster runner, and the
/// deletion makes it pointless), `k8s_logs` an `execution_logs` saying there are none. It takes
/// no `k8s_apply`: those wait, the environment stays `provisioning` (its manifests can be
/// applied by hand: `maestro manifests`) until the engine starts with a cluster.
#[derive(Clone, Debug)]
pub struct NoCluster {
    pub identity: String,
    pub keys: FactKeys,
    pub facts: UnboundedSender<Fact>,
}

/// What the no-cluster answers say.
pub const NO_CLUSTER: &str = "no Kubernetes cluster is configured";

/// The kinds [`NoCluster`] answers.
pub const NO_CLUSTER_KINDS: [&str; 2] = ["k8s_delete", "k8s_logs"];

impl EffectRunner for NoCluster {
    fn handles(&self, kind: &str) -> bool {
        NO_CLUSTER_KINDS.contains(&kind)
    }

    fn obsoletes(&self, ran: &Intent) -> Option<Obsoletes> {
        deletion_obsoletes(ran)
    }

    fn run(&mut self, intent: &Intent) -> Result<Ran, String> {
        let payload: Value =
            serde_json::from_slice(&intent.payload).map_err(|e| format!("intent {}: payload: {e}", intent.id))?;
        let (id, namespace) = (text(&payload, "execution_id"), text(&payload, "namespace"));
        let (stream, kind, rest) = match intent.kind.as_str() {
            "k8s_delete" => {
                let details = json!({"namespace": namespace, "cluster": null,
                    "note": format!("{NO_CLUSTER}: nothing was created, nothing to delete")});
                (
                    FactStream::Status,
                    "status_update",
                    vec![("status", "cleaned".to_string()), ("details", details.to_string())],
                )
            }
            "k8s_logs" => {
                let logs = format!("{NO_CLUSTER}: no test jobs ran in {namespace}, so there are no logs");
                (FactStream::Results, "execution_logs", vec![("logs", logs)])
            }
            other => return Err(format!("no answer without a cluster to a {other:?} intent")),
        };
        let fields = fact_fields(&self.identity, &intent.id, kind, &id, &rest);
        // In flight until the answer is published: a crash before that answers again.
        let _ = self.facts.send(Fact { stream: self.keys.key(stream), fields, finishes: Some(intent.id.clone()) });
        Ok(Ran::Started)
    }
}
