//! Events back into entry fields: the old consumers' exact shapes (field names, JSON key order,
//! explicit nulls), or the protobuf form (`type` + `proto`). `decode(encode(e)) == e` for every
//! normalised event: a proptest law holds it.

use crate::event::{Event, operation_name};
use crate::proto::{execution as ex, healing as he, templates as te};
use prost::Message;
use serde::Serialize;
use std::collections::BTreeMap;

/// Field/value pairs, text only (every old format is text).
pub type TextFields = Vec<(String, String)>;

/// A JSON object written key by key, in the order given. Values the decoder kept as text (the
/// producer's parameters, result objects, unknown keys) go in verbatim.
#[derive(Debug, Default)]
struct JsonObject(String);

impl JsonObject {
    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(&serde_json::to_string(key).unwrap_or_default());
        self.0.push(':');
    }

    /// A value that is already JSON text.
    fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key);
        self.0.push_str(json);
        self
    }

    fn value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> &mut Self {
        self.raw(key, &serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
    }

    fn opt<T: Serialize>(&mut self, key: &str, value: &Option<T>) -> &mut Self {
        match value {
            Some(value) => self.value(key, value),
            None => self,
        }
    }

    /// Kept unknown keys: those named `<prefix>.<key>` belong inside object `prefix` and are
    /// written by [`JsonObject::nested_extra`] instead.
    fn extra(&mut self, extra: &BTreeMap<String, String>, nested: &[&str]) -> &mut Self {
        for (key, json) in extra {
            if !key.split_once('.').is_some_and(|(outer, _)| nested.contains(&outer)) {
                self.raw(key, json);
            }
        }
        self
    }

    fn nested_extra(&mut self, extra: &BTreeMap<String, String>, prefix: &str) -> &mut Self {
        for (key, json) in extra {
            if let Some(inner) = key.strip_prefix(prefix).and_then(|k| k.strip_prefix('.')) {
                self.raw(inner, json);
            }
        }
        self
    }

    fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.0);
        if text.is_empty() {
            text.push('{');
        }
        text.push('}');
        text
    }
}

fn pair(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// The old format of an event.
pub fn to_fields(event: &Event) -> TextFields {
    match event {
        Event::TemplateRequest(r) => vec![pair("data", template_request(r))],
        Event::TemplateResult(r) => vec![pair("data", template_result_json(r))],
        Event::TemplateUsage(u) => vec![pair("data", template_usage_json(u))],
        Event::AutomationJob(job) => automation_job(job),
        Event::HealRequest(heal) => vec![pair("payload", heal_request(heal))],
        Event::SourceRead(read) => {
            let mut fields =
                vec![pair("type", "source_read"), pair("repair_id", &read.repair_id), pair("fact_id", &read.fact_id)];
            fields.push(pair("file_path", &read.file_path));
            if let Some(source) = &read.source {
                fields.push(pair("source", source));
            }
            if let Some(refused) = &read.refused {
                fields.push(pair("refused", refused));
            }
            fields
        }
        Event::AutomationResult(result) => automation_result(result),
        Event::ErrorReport(report) => error_report(report),
        Event::ValidationOutcome(outcome) => {
            let mut fields = vec![pair("repair_id", &outcome.repair_id), pair("passed", outcome.passed.to_string())];
            if let Some(message) = &outcome.message {
                fields.push(pair("message", message));
            }
            fields
        }
        Event::K8sJob(job) => k8s_job(job),
        Event::K8sResult(result) => k8s_result(result),
        Event::K8sStatus(s) => vec![
            pair("type", "status_update"),
            pair("execution_id", &s.execution_id),
            pair("status", &s.status),
            pair("details", &s.details_json),
            pair("timestamp", &s.timestamp),
        ],
    }
}

/// The protobuf form of an event: `type` and the role message's bytes in `proto`.
pub fn to_proto_fields(event: &Event) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bytes = match event {
        Event::TemplateRequest(m) => m.encode_to_vec(),
        Event::TemplateResult(m) => m.encode_to_vec(),
        Event::TemplateUsage(m) => m.encode_to_vec(),
        Event::AutomationJob(m) => m.encode_to_vec(),
        Event::HealRequest(m) => m.encode_to_vec(),
        Event::SourceRead(m) => m.encode_to_vec(),
        Event::AutomationResult(m) => m.encode_to_vec(),
        Event::ErrorReport(m) => m.encode_to_vec(),
        Event::ValidationOutcome(m) => m.encode_to_vec(),
        Event::K8sJob(m) => m.encode_to_vec(),
        Event::K8sResult(m) => m.encode_to_vec(),
        Event::K8sStatus(m) => m.encode_to_vec(),
    };
    let kind = event.type_name().unwrap_or_default();
    vec![("type".into(), kind.as_bytes().to_vec()), ("proto".into(), bytes)]
}

fn template_request(r: &te::TemplateRequest) -> String {
    let operation = te::Operation::try_from(r.operation).ok().and_then(operation_name).unwrap_or("unknown");
    JsonObject::default()
        .value("request_id", &r.request_id)
        .opt("template_id", &r.template_id)
        .value("operation", operation)
        .value("tenant_id", &r.tenant_id)
        .value("user_id", &r.user_id)
        .raw("parameters", &r.parameters_json)
        .opt("timestamp", &r.timestamp)
        .extra(&r.extra, &[])
        .finish()
}

/// The `data` JSON of a template result, in the old service's key order with explicit nulls.
pub fn template_result_json(r: &te::TemplateResult) -> String {
    template_result_json_with(r, &r.duration_ms.to_string())
}

/// [`template_result_json`] with `duration_ms` written as the given JSON text (a handler's
/// placeholder that the engine fills in when it publishes).
pub fn template_result_json_with(r: &te::TemplateResult, duration_ms: &str) -> String {
    JsonObject::default()
        .value("request_id", &r.request_id)
        .value("template_id", &r.template_id)
        .value("status", &r.status)
        .raw("result", r.result_json.as_deref().unwrap_or("null"))
        .value("error", &r.error)
        .raw("duration_ms", duration_ms)
        .value("timestamp", &r.timestamp)
        .extra(&r.extra, &[])
        .finish()
}

/// The `data` JSON of a usage event, in the old service's key order.
pub fn template_usage_json(u: &te::TemplateUsageEvent) -> String {
    template_usage_json_with(u, &u.duration_ms.to_string())
}

/// [`template_usage_json`] with `duration_ms` written as the given JSON text.
pub fn template_usage_json_with(u: &te::TemplateUsageEvent, duration_ms: &str) -> String {
    JsonObject::default()
        .value("event_id", &u.event_id)
        .value("template_id", &u.template_id)
        .value("tenant_id", &u.tenant_id)
        .value("user_id", &u.user_id)
        .value("operation", &u.operation)
        .value("success", &u.success)
        .raw("duration_ms", duration_ms)
        .value("timestamp", &u.timestamp)
        .extra(&u.extra, &[])
        .finish()
}

fn automation_job(job: &he::AutomationJob) -> TextFields {
    use he::automation_job::Job;
    let (kind, payload) = match &job.job {
        Some(Job::StartMonitoring(start)) => {
            let c = start.config.unwrap_or_default();
            let config = JsonObject::default()
                .value("auto_fix", &c.auto_fix)
                .value("require_approval", &c.require_approval)
                .value("confidence_threshold", &c.confidence_threshold)
                .value("auto_commit", &c.auto_commit)
                .value("create_pr", &c.create_pr)
                .value("max_concurrent_repairs", &c.max_concurrent_repairs)
                .nested_extra(&start.extra, "config")
                .finish();
            let payload = JsonObject::default()
                .value("project_path", &start.project_path)
                .raw("config", &config)
                .extra(&start.extra, &["config"])
                .finish();
            ("start_monitoring", payload)
        }
        Some(Job::StopMonitoring(stop)) => {
            let payload =
                JsonObject::default().value("orchestrator_id", &stop.orchestrator_id).extra(&stop.extra, &[]).finish();
            ("stop_monitoring", payload)
        }
        Some(Job::HealTestFailure(heal)) => ("heal_test_failure", heal_request(heal)),
        None => ("", "{}".to_string()),
    };
    let mut fields = vec![pair("type", kind), pair("payload", payload)];
    if let Some(timestamp) = &job.timestamp {
        fields.push(pair("timestamp", timestamp));
    }
    fields
}

fn heal_request(heal: &he::HealRequest) -> String {
    JsonObject::default()
        .opt("orchestrator_id", &heal.orchestrator_id)
        .opt("test_id", &heal.test_id)
        .opt("file_path", &heal.file_path)
        .opt("source", &Some(&heal.source).filter(|s| !s.is_empty()))
        .value("error_message", &heal.error_message)
        .opt("stack_trace", &heal.stack_trace)
        .value("error_type", &heal.error_type)
        .opt("line_number", &heal.line_number)
        .extra(&heal.extra, &[])
        .finish()
}

fn automation_result(result: &he::AutomationResult) -> TextFields {
    use he::automation_result::Result as R;
    match &result.result {
        Some(R::StatusUpdate(s)) => vec![
            pair("type", "status_update"),
            pair("orchestrator_id", &s.orchestrator_id),
            pair("status", &s.status),
            pair("timestamp", &s.timestamp),
        ],
        Some(R::RepairResult(r)) => vec![
            pair("type", "repair_result"),
            pair("orchestrator_id", &r.orchestrator_id),
            pair("result", &r.result_json),
            pair("timestamp", &r.timestamp),
        ],
        None => Vec::new(),
    }
}

fn error_report(report: &he::ErrorReport) -> TextFields {
    let mut fields = vec![
        pair("error_type", &report.error_type),
        pair("error_message", &report.error_message),
        pair("file_path", &report.file_path),
    ];
    if let Some(line) = report.line_number {
        fields.push(pair("line_number", line.to_string()));
    }
    if let Some(trace) = &report.stack_trace {
        fields.push(pair("stack_trace", trace));
    }
    if let Some(severity) = &report.severity {
        fields.push(pair("severity", severity));
    }
    fields
}

fn k8s_job(job: &ex::K8sJob) -> TextFields {
    use ex::k8s_job::Job;
    let (kind, payload) = match &job.job {
        Some(Job::ExecuteEphemeralTest(run)) => ("execute_ephemeral_test", execute(run)),
        Some(Job::CleanupEnvironment(c)) => (
            "cleanup_environment",
            JsonObject::default().value("execution_id", &c.execution_id).extra(&c.extra, &[]).finish(),
        ),
        Some(Job::GetLogs(g)) => {
            ("get_logs", JsonObject::default().value("execution_id", &g.execution_id).extra(&g.extra, &[]).finish())
        }
        None => ("", "{}".to_string()),
    };
    vec![pair("type", kind), pair("payload", payload)]
}

fn execute(run: &ex::ExecuteEphemeralTest) -> String {
    let spec = run.environment_spec.clone().unwrap_or_default();
    let mut env = JsonObject::default();
    env.value("app_image", &spec.app_image).value("app_port", &spec.app_port).opt("database_type", &spec.database_type);
    env.value("redis_enabled", &spec.redis_enabled).value("replicas", &spec.replicas);
    if let Some(resources) = &spec.resources_json {
        env.raw("resources", resources);
    }
    let env = env.value("env_vars", &spec.env_vars).nested_extra(&run.extra, "environment_spec").finish();
    let test = run.test_config.clone().unwrap_or_default();
    let test = JsonObject::default()
        .value("commands", &test.commands)
        .value("timeout_minutes", &test.timeout_minutes)
        .value("ttl_minutes", &test.ttl_minutes)
        .nested_extra(&run.extra, "test_config")
        .finish();
    JsonObject::default()
        .opt("execution_id", &run.execution_id)
        .raw("environment_spec", &env)
        .raw("test_config", &test)
        .extra(&run.extra, &["environment_spec", "test_config"])
        .finish()
}

fn k8s_result(result: &ex::K8sResult) -> TextFields {
    use ex::k8s_result::Result as R;
    match &result.result {
        Some(R::ExecutionResult(r)) => vec![
            pair("type", "execution_result"),
            pair("execution_id", &r.execution_id),
            pair("result", &r.result_json),
            pair("timestamp", &r.timestamp),
        ],
        Some(R::ExecutionLogs(l)) => vec![
            pair("type", "execution_logs"),
            pair("execution_id", &l.execution_id),
            pair("logs", &l.logs),
            pair("timestamp", &l.timestamp),
        ],
        None => Vec::new(),
    }
}
