//! What both decode paths share: defaults and derived ids (normalise), then the domain's rules
//! on values (validate).

use super::Origin;
use crate::envelope::{Limits, Reject};
use crate::event::{ERROR_TYPES, Event, SEVERITIES};
use crate::ids::{derived_id, execution_id};
use crate::proto::{execution as ex, healing as he, templates as te};

/// The request id a producer gave, before any is derived.
pub fn producer_request_id(event: &Event) -> Option<String> {
    match event {
        Event::TemplateRequest(r) if !r.request_id.is_empty() => Some(r.request_id.clone()),
        _ => None,
    }
}

/// Fills the old services' defaults and the ids derived from the entry, so that an event means
/// the same whether a field was left out or given its default.
pub fn normalize(mut event: Event, origin: Origin<'_>) -> Event {
    match &mut event {
        Event::TemplateRequest(r) => {
            if r.request_id.is_empty() {
                r.request_id = derived_id("req", origin.stream, origin.entry);
            }
            if r.parameters_json.is_empty() {
                r.parameters_json = "{}".into();
            }
        }
        Event::AutomationJob(job) => match &mut job.job {
            Some(he::automation_job::Job::StartMonitoring(start)) => {
                monitoring_defaults(start.config.get_or_insert_with(Default::default));
            }
            Some(he::automation_job::Job::HealTestFailure(heal)) => heal_defaults(heal),
            _ => {}
        },
        Event::HealRequest(heal) => heal_defaults(heal),
        Event::K8sJob(ex::K8sJob { job: Some(ex::k8s_job::Job::ExecuteEphemeralTest(run)) }) => {
            if run.execution_id.as_deref().is_none_or(str::is_empty) {
                run.execution_id = Some(execution_id(origin.stream, origin.entry, 0));
            }
            if let Some(spec) = &mut run.environment_spec {
                spec.redis_enabled.get_or_insert(false);
                spec.replicas.get_or_insert(1);
            }
            let config = run.test_config.get_or_insert_with(Default::default);
            config.timeout_minutes.get_or_insert(30);
            config.ttl_minutes.get_or_insert(60);
        }
        Event::K8sStatus(status) if status.details_json.is_empty() => status.details_json = "{}".into(),
        _ => {}
    }
    event
}

fn monitoring_defaults(config: &mut he::MonitoringConfig) {
    config.auto_fix.get_or_insert(true);
    config.require_approval.get_or_insert(false);
    config.confidence_threshold.get_or_insert(0.75);
    config.auto_commit.get_or_insert(false);
    config.create_pr.get_or_insert(false);
    config.max_concurrent_repairs.get_or_insert(3);
}

fn heal_defaults(heal: &mut he::HealRequest) {
    if heal.error_type.is_empty() {
        heal.error_type = "test_failure".into();
    }
}

fn required(what: &str, value: &str) -> Result<(), Reject> {
    if value.is_empty() { Err(Reject::new("missing_field", format!("`{what}` is required"))) } else { Ok(()) }
}

fn one_of(what: &str, value: &str, allowed: &[&str]) -> Result<(), Reject> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Reject::new("bad_field", format!("`{what}` is {value:?}, not one of {}", allowed.join(", "))))
    }
}

/// Checks the lengths of ids.
fn ids(limits: &Limits, ids: &[(&str, &str)]) -> Result<(), Reject> {
    for (what, id) in ids {
        if id.len() > limits.max_id_bytes {
            return Err(Reject::new(
                "too_long",
                format!("`{what}` is {} bytes, the limit is {}", id.len(), limits.max_id_bytes),
            ));
        }
    }
    Ok(())
}

/// The domain's rules on values, for both decode paths.
pub fn validate(event: &Event, limits: &Limits) -> Result<(), Reject> {
    match event {
        Event::TemplateRequest(r) => template_request(r, limits),
        Event::TemplateResult(r) => {
            one_of("status", &r.status, &["success", "error"])?;
            let template = r.template_id.as_deref().unwrap_or_default();
            ids(limits, &[("request_id", &r.request_id), ("template_id", template)])
        }
        Event::TemplateUsage(u) => {
            required("event_id", &u.event_id)?;
            ids(limits, &[("event_id", &u.event_id), ("template_id", &u.template_id), ("tenant_id", &u.tenant_id)])
        }
        Event::AutomationJob(job) => match &job.job {
            Some(he::automation_job::Job::StartMonitoring(start)) => {
                required("project_path", &start.project_path)?;
                let threshold = start.config.as_ref().and_then(|c| c.confidence_threshold).unwrap_or(0.75);
                if !(0.0..=1.0).contains(&threshold) {
                    return Err(Reject::new(
                        "bad_field",
                        format!("`config.confidence_threshold` is {threshold}, not within 0 to 1"),
                    ));
                }
                Ok(())
            }
            Some(he::automation_job::Job::StopMonitoring(stop)) => {
                required("orchestrator_id", &stop.orchestrator_id)?;
                ids(limits, &[("orchestrator_id", &stop.orchestrator_id)])
            }
            Some(he::automation_job::Job::HealTestFailure(heal)) => heal_request(heal, limits),
            None => Err(Reject::new("unknown_type", "the job names no type")),
        },
        Event::HealRequest(heal) => heal_request(heal, limits),
        Event::ErrorReport(report) => {
            one_of("error_type", &report.error_type, &ERROR_TYPES)?;
            match &report.severity {
                Some(severity) => one_of("severity", severity, &SEVERITIES),
                None => Ok(()),
            }
        }
        Event::ValidationOutcome(outcome) => required("repair_id", &outcome.repair_id),
        Event::SourceRead(read) => {
            required("repair_id", &read.repair_id)?;
            required("fact_id", &read.fact_id)?;
            if read.source.is_some() == read.refused.is_some() {
                return Err(Reject::new(
                    "bad_field",
                    "a source_read fact carries exactly one of `source` and `refused`",
                ));
            }
            Ok(())
        }
        Event::K8sJob(job) => k8s_job(job, limits),
        Event::K8sStatus(status) => {
            required("execution_id", &status.execution_id)?;
            required("status", &status.status)
        }
        Event::AutomationResult(_) | Event::K8sResult(_) => Ok(()),
    }
}

fn template_request(r: &te::TemplateRequest, limits: &Limits) -> Result<(), Reject> {
    match te::Operation::try_from(r.operation) {
        Ok(te::Operation::Unspecified) | Err(_) => {
            return Err(Reject::new("unknown_operation", format!("operation {} is not known", r.operation)));
        }
        Ok(_) => {}
    }
    required("tenant_id", &r.tenant_id)?;
    required("user_id", &r.user_id)?;
    if !r.parameters_json.starts_with('{') {
        return Err(Reject::new("bad_field", "`parameters` must be a JSON object"));
    }
    let template = r.template_id.as_deref().unwrap_or_default();
    ids(
        limits,
        &[
            ("request_id", &r.request_id),
            ("template_id", template),
            ("tenant_id", &r.tenant_id),
            ("user_id", &r.user_id),
        ],
    )
}

/// A request without a file or without a message is still a request the old code could send
/// (the orchestrator's error details name no file): the handler answers it with a repair
/// result, so it is not rejected here.
fn heal_request(heal: &he::HealRequest, limits: &Limits) -> Result<(), Reject> {
    one_of("error_type", &heal.error_type, &ERROR_TYPES)?;
    ids(limits, &[("orchestrator_id", heal.orchestrator_id.as_deref().unwrap_or_default())])
}

fn k8s_job(job: &ex::K8sJob, limits: &Limits) -> Result<(), Reject> {
    use ex::k8s_job::Job;
    match &job.job {
        Some(Job::ExecuteEphemeralTest(run)) => {
            // The spec's values (image, port, database type) are the handler's to judge: a spec it
            // cannot provision is answered `failed`, an unknown database type is a warning.
            ids(limits, &[("execution_id", run.execution_id.as_deref().unwrap_or_default())])
        }
        Some(Job::CleanupEnvironment(ex::CleanupEnvironment { execution_id, .. }))
        | Some(Job::GetLogs(ex::GetLogs { execution_id, .. })) => {
            required("execution_id", execution_id)?;
            ids(limits, &[("execution_id", execution_id)])
        }
        None => Err(Reject::new("unknown_type", "the job names no type")),
    }
}
