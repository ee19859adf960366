//! Events back into entry fields: the old consumers' exact shapes (field names, JSON key order,
//! explicit nulls), or the protobuf form (`type` + `proto`). `decode(encode(e)) == e` for every
//! normalised event: a proptest law holds it.

use crate::event::{Event, operation_name};
use crate::proto::{execution as ex, healing as he, templates as te};
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Field/value pairs, text only (every old format is text).
pub type TextFields = Vec<(String, String)>;

/// Parses JSON text the decoder produced (always valid); a broken one becomes its text.
fn raw(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn opt(value: &Option<String>) -> Value {
    value.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

/// Adds kept unknown keys back: `a.b` goes inside object `a` when there is one.
fn put_extra(object: &mut Map<String, Value>, extra: &BTreeMap<String, String>) {
    for (key, text) in extra {
        match key.split_once('.') {
            Some((outer, inner)) if object.get(outer).is_some_and(Value::is_object) => {
                if let Some(Value::Object(nested)) = object.get_mut(outer) {
                    nested.insert(inner.to_string(), raw(text));
                }
            }
            _ => {
                object.insert(key.clone(), raw(text));
            }
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn text(map: Map<String, Value>) -> String {
    Value::Object(map).to_string()
}

fn pair(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// The old format of an event.
pub fn to_fields(event: &Event) -> TextFields {
    match event {
        Event::TemplateRequest(r) => vec![pair("data", text(template_request(r)))],
        Event::TemplateResult(r) => vec![pair("data", template_result_json(r))],
        Event::TemplateUsage(u) => vec![pair("data", template_usage_json(u))],
        Event::AutomationJob(job) => automation_job(job),
        Event::HealRequest(heal) => vec![pair("payload", text(heal_request(heal)))],
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
pub fn to_proto_fields(event: &Event) -> Vec<(String, Vec<u8>)> {
    let bytes = match event {
        Event::TemplateRequest(m) => m.encode_to_vec(),
        Event::TemplateResult(m) => m.encode_to_vec(),
        Event::TemplateUsage(m) => m.encode_to_vec(),
        Event::AutomationJob(m) => m.encode_to_vec(),
        Event::HealRequest(m) => m.encode_to_vec(),
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

fn template_request(r: &te::TemplateRequest) -> Map<String, Value> {
    let operation = te::Operation::try_from(r.operation).ok().and_then(operation_name).unwrap_or("unknown");
    let mut map = Map::new();
    map.insert("request_id".into(), json!(r.request_id));
    if let Some(template) = &r.template_id {
        map.insert("template_id".into(), json!(template));
    }
    map.insert("operation".into(), json!(operation));
    map.insert("tenant_id".into(), json!(r.tenant_id));
    map.insert("user_id".into(), json!(r.user_id));
    map.insert("parameters".into(), raw(&r.parameters_json));
    if let Some(timestamp) = &r.timestamp {
        map.insert("timestamp".into(), json!(timestamp));
    }
    put_extra(&mut map, &r.extra);
    map
}

/// The `data` JSON of a template result, in the old service's key order with explicit nulls.
pub fn template_result_json(r: &te::TemplateResult) -> String {
    let mut map = object(json!({
        "request_id": r.request_id,
        "template_id": opt(&r.template_id),
        "status": r.status,
        "result": r.result_json.as_deref().map_or(Value::Null, raw),
        "error": opt(&r.error),
        "duration_ms": r.duration_ms,
        "timestamp": r.timestamp,
    }));
    put_extra(&mut map, &r.extra);
    text(map)
}

/// The `data` JSON of a usage event, in the old service's key order.
pub fn template_usage_json(u: &te::TemplateUsageEvent) -> String {
    let mut map = object(json!({
        "event_id": u.event_id,
        "template_id": u.template_id,
        "tenant_id": u.tenant_id,
        "user_id": u.user_id,
        "operation": u.operation,
        "success": u.success,
        "duration_ms": u.duration_ms,
        "timestamp": u.timestamp,
    }));
    put_extra(&mut map, &u.extra);
    text(map)
}

fn automation_job(job: &he::AutomationJob) -> TextFields {
    use he::automation_job::Job;
    let (kind, payload) = match &job.job {
        Some(Job::StartMonitoring(start)) => {
            let c = start.config.unwrap_or_default();
            let mut map = object(json!({
                "project_path": start.project_path,
                "config": {
                    "auto_fix": c.auto_fix, "require_approval": c.require_approval,
                    "confidence_threshold": c.confidence_threshold, "auto_commit": c.auto_commit,
                    "create_pr": c.create_pr, "max_concurrent_repairs": c.max_concurrent_repairs,
                },
            }));
            put_extra(&mut map, &start.extra);
            ("start_monitoring", map)
        }
        Some(Job::StopMonitoring(stop)) => {
            let mut map = object(json!({ "orchestrator_id": stop.orchestrator_id }));
            put_extra(&mut map, &stop.extra);
            ("stop_monitoring", map)
        }
        Some(Job::HealTestFailure(heal)) => ("heal_test_failure", heal_request(heal)),
        None => ("", Map::new()),
    };
    let mut fields = vec![pair("type", kind), pair("payload", text(payload))];
    if let Some(timestamp) = &job.timestamp {
        fields.push(pair("timestamp", timestamp));
    }
    fields
}

fn heal_request(heal: &he::HealRequest) -> Map<String, Value> {
    let mut map = Map::new();
    let mut optional = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            map.insert(key.into(), json!(value));
        }
    };
    optional("orchestrator_id", &heal.orchestrator_id);
    optional("test_id", &heal.test_id);
    optional("file_path", &heal.file_path);
    map.insert("source".into(), json!(heal.source));
    map.insert("error_message".into(), json!(heal.error_message));
    if let Some(trace) = &heal.stack_trace {
        map.insert("stack_trace".into(), json!(trace));
    }
    map.insert("error_type".into(), json!(heal.error_type));
    if let Some(line) = heal.line_number {
        map.insert("line_number".into(), json!(line));
    }
    put_extra(&mut map, &heal.extra);
    map
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
        Some(Job::CleanupEnvironment(c)) => {
            let mut map = object(json!({ "execution_id": c.execution_id }));
            put_extra(&mut map, &c.extra);
            ("cleanup_environment", map)
        }
        Some(Job::GetLogs(g)) => {
            let mut map = object(json!({ "execution_id": g.execution_id }));
            put_extra(&mut map, &g.extra);
            ("get_logs", map)
        }
        None => ("", Map::new()),
    };
    vec![pair("type", kind), pair("payload", text(payload))]
}

fn execute(run: &ex::ExecuteEphemeralTest) -> Map<String, Value> {
    let spec = run.environment_spec.clone().unwrap_or_default();
    let mut env = Map::new();
    env.insert("app_image".into(), json!(spec.app_image));
    env.insert("app_port".into(), json!(spec.app_port));
    if let Some(db) = &spec.database_type {
        env.insert("database_type".into(), json!(db));
    }
    env.insert("redis_enabled".into(), json!(spec.redis_enabled));
    env.insert("replicas".into(), json!(spec.replicas));
    if let Some(resources) = &spec.resources_json {
        env.insert("resources".into(), raw(resources));
    }
    env.insert("env_vars".into(), json!(spec.env_vars));
    let test = run.test_config.clone().unwrap_or_default();
    let mut map = Map::new();
    if let Some(id) = &run.execution_id {
        map.insert("execution_id".into(), json!(id));
    }
    map.insert("environment_spec".into(), Value::Object(env));
    map.insert(
        "test_config".into(),
        json!({ "commands": test.commands, "timeout_minutes": test.timeout_minutes, "ttl_minutes": test.ttl_minutes }),
    );
    put_extra(&mut map, &run.extra);
    map
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
