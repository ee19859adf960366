//! The old producers' formats: one `data` JSON field (templates), or flat fields with JSON
//! strings inside (`payload`, `result`, `details`) and raw text (`logs`).

use super::Flat;
use crate::Role;
use crate::envelope::{Limits, Reject};
use crate::event::{Event, OPERATIONS};
use crate::json::{Obj, validate};
use crate::proto::{execution as ex, healing as he, templates as te};

fn missing(obj: &Obj<'_>, key: &str) -> Reject {
    Reject::new("missing_field", format!("`{}.{key}` is required", obj.name()))
}

fn unknown_type(role: Role, kind: &str) -> Reject {
    Reject::new("unknown_type", format!("type {kind:?} is not a {role:?} message"))
}

/// Decodes the old format of a stream with role `role`.
pub fn decode(role: Role, flat: &Flat<'_>, limits: &Limits) -> Result<Event, Reject> {
    let payload = |name: &str| Obj::parse(name, flat.bytes(name).unwrap_or_default(), limits);
    let required = |name: &str| flat.req(name).map(|_| ());
    Ok(match role {
        Role::TemplatesRequests => {
            required("data")?;
            Event::TemplateRequest(template_request(payload("data")?)?)
        }
        Role::TemplatesResults => {
            required("data")?;
            Event::TemplateResult(template_result(payload("data")?)?)
        }
        Role::TemplatesUsage => {
            required("data")?;
            Event::TemplateUsage(template_usage(payload("data")?)?)
        }
        Role::AutomationJobs => {
            let kind = flat.req("type")?;
            required("payload")?;
            let job = automation_job(kind, payload("payload")?, limits).ok_or_else(|| unknown_type(role, kind))??;
            let timestamp = flat.text("timestamp").map(str::to_string);
            Event::AutomationJob(he::AutomationJob { job: Some(job), timestamp })
        }
        Role::AutomationHealing if flat.text("type") == Some("source_read") => Event::SourceRead(source_read(flat)?),
        Role::AutomationHealing => {
            required("payload")?;
            Event::HealRequest(heal_request(payload("payload")?, limits)?)
        }
        Role::AutomationResults => Event::AutomationResult(automation_result(flat, limits)?),
        Role::AutomationErrors => Event::ErrorReport(error_report(flat)?),
        Role::AutomationValidation => Event::ValidationOutcome(validation_outcome(flat)?),
        Role::K8sJobs => {
            // The old service's defaults: no `type` is an execute, no `payload` is `{}`.
            let kind = flat.text("type").unwrap_or("execute_ephemeral_test");
            let body = flat.bytes("payload").unwrap_or(b"{}");
            let job = k8s_job(kind, Obj::parse("payload", body, limits)?).ok_or_else(|| unknown_type(role, kind))??;
            Event::K8sJob(ex::K8sJob { job: Some(job) })
        }
        Role::K8sResults => Event::K8sResult(k8s_result(flat, limits)?),
        Role::K8sStatus => Event::K8sStatus(k8s_status(flat, limits)?),
    })
}

fn template_request(mut o: Obj<'_>) -> Result<te::TemplateRequest, Reject> {
    let request_id = o.opt_str("request_id")?.unwrap_or_default();
    let template_id = o.opt_str("template_id")?;
    let name = o.req_str("operation")?;
    let operation = OPERATIONS
        .iter()
        .find(|(wire, _)| *wire == name)
        .map(|(_, op)| *op)
        .ok_or_else(|| Reject::new("unknown_operation", format!("operation {name:?} is not one of create, update, delete, retrieve, search, versions, pin, unpin, validate, grant, revoke")))?;
    Ok(te::TemplateRequest {
        request_id,
        template_id,
        operation: operation as i32,
        tenant_id: o.req_str("tenant_id")?,
        user_id: o.req_str("user_id")?,
        parameters_json: o.opt_object_json("parameters")?.unwrap_or_else(|| "{}".into()),
        timestamp: o.opt_str("timestamp")?,
        extra: o.rest(),
    })
}

fn template_result(mut o: Obj<'_>) -> Result<te::TemplateResult, Reject> {
    Ok(te::TemplateResult {
        request_id: o.req_str("request_id")?,
        template_id: o.opt_str("template_id")?,
        status: o.req_str("status")?,
        result_json: o.opt_object_json("result")?,
        error: o.opt_str("error")?,
        duration_ms: o.opt_i64("duration_ms")?.ok_or_else(|| missing(&o, "duration_ms"))?,
        timestamp: o.req_str("timestamp")?,
        extra: o.rest(),
    })
}

fn template_usage(mut o: Obj<'_>) -> Result<te::TemplateUsageEvent, Reject> {
    Ok(te::TemplateUsageEvent {
        event_id: o.req_str("event_id")?,
        template_id: o.req_str("template_id")?,
        tenant_id: o.req_str("tenant_id")?,
        user_id: o.req_str("user_id")?,
        operation: o.req_str("operation")?,
        success: o.opt_bool("success")?.ok_or_else(|| missing(&o, "success"))?,
        duration_ms: o.opt_i64("duration_ms")?.ok_or_else(|| missing(&o, "duration_ms"))?,
        timestamp: o.req_str("timestamp")?,
        extra: o.rest(),
    })
}

fn automation_job(kind: &str, mut o: Obj<'_>, limits: &Limits) -> Option<Result<he::automation_job::Job, Reject>> {
    use he::automation_job::Job;
    Some(match kind {
        "start_monitoring" => (|| {
            let project_path = o.req_str("project_path")?;
            let mut extra = Default::default();
            let config = match o.opt_obj("config")? {
                Some(mut c) => {
                    let config = he::MonitoringConfig {
                        auto_fix: c.opt_bool("auto_fix")?,
                        require_approval: c.opt_bool("require_approval")?,
                        confidence_threshold: c.opt_f64("confidence_threshold")?,
                        auto_commit: c.opt_bool("auto_commit")?,
                        create_pr: c.opt_bool("create_pr")?,
                        max_concurrent_repairs: c.opt_u32("max_concurrent_repairs")?,
                    };
                    c.rest_into("config", &mut extra);
                    config
                }
                None => he::MonitoringConfig::default(),
            };
            o.rest().into_iter().for_each(|(k, v)| {
                extra.insert(k, v);
            });
            Ok(Job::StartMonitoring(he::StartMonitoring { project_path, config: Some(config), extra }))
        })(),
        "stop_monitoring" => (|| {
            let orchestrator_id = o.req_str("orchestrator_id")?;
            Ok(Job::StopMonitoring(he::StopMonitoring { orchestrator_id, extra: o.rest() }))
        })(),
        "heal_test_failure" => heal_request(o, limits).map(Job::HealTestFailure),
        _ => return None,
    })
}

/// Every heal-request shape of the old code (seed contract 3.3): the fields may be at the top
/// level or, in the REST `ManualHealRequest`, inside `error_details` (kept whole in `extra`);
/// the healer README names the file `test_file`. None of them carries the source.
fn heal_request(mut o: Obj<'_>, limits: &Limits) -> Result<he::HealRequest, Reject> {
    let orchestrator_id = o.opt_str("orchestrator_id")?;
    let test_id = o.opt_str("test_id")?;
    let file_path = match o.opt_str("file_path")? {
        Some(path) => Some(path),
        None => o.opt_str("test_file")?,
    };
    let source = o.opt_str("source")?.unwrap_or_default();
    let mut error_message = o.opt_str("error_message")?;
    let mut stack_trace = o.opt_str("stack_trace")?;
    let error_type = o.opt_str("error_type")?.unwrap_or_default();
    let mut line_number = o.opt_i64("line_number")?;
    let details = o.opt_object_json("error_details")?;
    let mut extra = o.rest();
    if let Some(details) = details {
        let mut d = Obj::parse("error_details", details.as_bytes(), limits)?;
        if error_message.is_none() {
            error_message = d.opt_str("error_message")?;
        }
        if stack_trace.is_none() {
            stack_trace = d.opt_str("stack_trace")?;
        }
        if line_number.is_none() {
            line_number = d.opt_i64("line_number")?;
        }
        extra.insert("error_details".into(), details);
    }
    Ok(he::HealRequest {
        orchestrator_id,
        test_id,
        file_path,
        source,
        error_message: error_message.unwrap_or_default(),
        stack_trace,
        error_type,
        line_number,
        extra,
    })
}

/// The engine's source-read fact (flat fields, written by its runner).
fn source_read(flat: &Flat<'_>) -> Result<he::SourceRead, Reject> {
    Ok(he::SourceRead {
        repair_id: flat.req("repair_id")?.into(),
        fact_id: flat.req("fact_id")?.into(),
        file_path: flat.text("file_path").unwrap_or_default().into(),
        source: flat.text("source").map(str::to_string),
        refused: flat.text("refused").map(str::to_string),
    })
}

/// A flat field holding JSON text, checked and kept as sent.
fn json_field(flat: &Flat<'_>, name: &str, limits: &Limits) -> Result<String, Reject> {
    let text = flat.req(name)?;
    validate(name, text.as_bytes(), limits)?;
    Ok(text.to_string())
}

fn automation_result(flat: &Flat<'_>, limits: &Limits) -> Result<he::AutomationResult, Reject> {
    use he::automation_result::Result as R;
    let orchestrator_id = flat.req("orchestrator_id")?.to_string();
    let timestamp = flat.req("timestamp")?.to_string();
    let result = match flat.req("type")? {
        "status_update" => {
            R::StatusUpdate(he::OrchestratorStatus { orchestrator_id, status: flat.req("status")?.into(), timestamp })
        }
        "repair_result" => R::RepairResult(he::RepairResult {
            orchestrator_id,
            result_json: json_field(flat, "result", limits)?,
            timestamp,
        }),
        other => return Err(unknown_type(Role::AutomationResults, other)),
    };
    Ok(he::AutomationResult { result: Some(result) })
}

fn line_number(flat: &Flat<'_>) -> Result<Option<i64>, Reject> {
    flat.text("line_number")
        .map(|n| {
            n.parse().map_err(|_| Reject::new("bad_field", format!("field `line_number` is not an integer: {n:?}")))
        })
        .transpose()
}

fn error_report(flat: &Flat<'_>) -> Result<he::ErrorReport, Reject> {
    Ok(he::ErrorReport {
        error_type: flat.req("error_type")?.into(),
        error_message: flat.req("error_message")?.into(),
        file_path: flat.req("file_path")?.into(),
        line_number: line_number(flat)?,
        stack_trace: flat.text("stack_trace").map(str::to_string),
        severity: flat.text("severity").map(str::to_string),
    })
}

fn validation_outcome(flat: &Flat<'_>) -> Result<he::ValidationOutcome, Reject> {
    let passed = match flat.req("passed")? {
        "true" | "True" | "1" => true,
        "false" | "False" | "0" => false,
        other => return Err(Reject::new("bad_field", format!("field `passed` must be true or false, not {other:?}"))),
    };
    Ok(he::ValidationOutcome {
        repair_id: flat.req("repair_id")?.into(),
        passed,
        message: flat.text("message").map(str::to_string),
    })
}

fn k8s_job(kind: &str, mut o: Obj<'_>) -> Option<Result<ex::k8s_job::Job, Reject>> {
    use ex::k8s_job::Job;
    Some(match kind {
        "execute_ephemeral_test" => execute(o).map(Job::ExecuteEphemeralTest),
        "cleanup_environment" => (|| {
            let execution_id = o.req_str("execution_id")?;
            Ok(Job::CleanupEnvironment(ex::CleanupEnvironment { execution_id, extra: o.rest() }))
        })(),
        "get_logs" => (|| {
            let execution_id = o.req_str("execution_id")?;
            Ok(Job::GetLogs(ex::GetLogs { execution_id, extra: o.rest() }))
        })(),
        _ => return None,
    })
}

fn execute(mut o: Obj<'_>) -> Result<ex::ExecuteEphemeralTest, Reject> {
    let execution_id = o.opt_str("execution_id")?;
    let mut extra = Default::default();
    // A missing spec (the README's job format) is empty, and answered `failed` by the handler
    // for want of an image: every execute gets an answer.
    let mut spec = match o.opt_obj("environment_spec")? {
        Some(spec) => spec,
        None => Obj::parse("environment_spec", b"{}", &Limits::default())?,
    };
    let environment_spec = ex::EnvironmentSpec {
        app_image: spec.opt_str("app_image")?.unwrap_or_default(),
        app_port: spec.opt_u32("app_port")?.unwrap_or_default(),
        database_type: spec.opt_str("database_type")?,
        redis_enabled: spec.opt_bool("redis_enabled")?,
        replicas: spec.opt_u32("replicas")?,
        resources_json: spec.opt_object_json("resources")?,
        env_vars: spec.str_map("env_vars")?,
    };
    spec.rest_into("environment_spec", &mut extra);
    let test_config = match o.opt_obj("test_config")? {
        Some(mut t) => {
            let config = ex::TestConfig {
                commands: t.str_list("commands")?,
                timeout_minutes: t.opt_u32("timeout_minutes")?,
                ttl_minutes: t.opt_u32("ttl_minutes")?,
            };
            t.rest_into("test_config", &mut extra);
            config
        }
        None => ex::TestConfig::default(),
    };
    o.rest().into_iter().for_each(|(k, v)| {
        extra.insert(k, v);
    });
    Ok(ex::ExecuteEphemeralTest {
        execution_id,
        environment_spec: Some(environment_spec),
        test_config: Some(test_config),
        extra,
    })
}

fn k8s_result(flat: &Flat<'_>, limits: &Limits) -> Result<ex::K8sResult, Reject> {
    use ex::k8s_result::Result as R;
    let execution_id = flat.req("execution_id")?.to_string();
    let timestamp = flat.req("timestamp")?.to_string();
    let result = match flat.req("type")? {
        "execution_result" => R::ExecutionResult(ex::ExecutionResult {
            execution_id,
            result_json: json_field(flat, "result", limits)?,
            timestamp,
        }),
        "execution_logs" => {
            R::ExecutionLogs(ex::ExecutionLogs { execution_id, logs: flat.req("logs")?.into(), timestamp })
        }
        other => return Err(unknown_type(Role::K8sResults, other)),
    };
    Ok(ex::K8sResult { result: Some(result) })
}

fn k8s_status(flat: &Flat<'_>, limits: &Limits) -> Result<ex::ExecutionStatus, Reject> {
    match flat.req("type")? {
        "status_update" => {}
        other => return Err(unknown_type(Role::K8sStatus, other)),
    }
    let details_json = match flat.text("details") {
        Some(_) => json_field(flat, "details", limits)?,
        None => "{}".into(),
    };
    Ok(ex::ExecutionStatus {
        execution_id: flat.req("execution_id")?.into(),
        status: flat.req("status")?.into(),
        details_json,
        timestamp: flat.req("timestamp")?.into(),
    })
}
