//! Protobuf bodies: `type` names the message, `proto` holds its bytes. prost bounds the
//! nesting it follows (100 levels), so a hostile body cannot exhaust the stack.

use crate::Role;
use crate::envelope::{Limits, Reject};
use crate::event::Event;
use crate::json::validate;
use crate::proto::{execution as ex, healing as he, templates as te};
use prost::Message;

fn message<M: Message + Default>(kind: &str, bytes: &[u8]) -> Result<M, Reject> {
    M::decode(bytes).map_err(|e| Reject::new("bad_protobuf", format!("`proto` is not a {kind}: {e}")))
}

/// Checks a JSON text field the way the old-format path checks it; the text is kept as sent,
/// on both paths.
fn canonical(name: &str, text: &mut String, limits: &Limits) -> Result<(), Reject> {
    if !text.is_empty() {
        validate(name, text.as_bytes(), limits)?;
    }
    Ok(())
}

fn canonical_opt(name: &str, text: &mut Option<String>, limits: &Limits) -> Result<(), Reject> {
    match text {
        Some(text) => canonical(name, text, limits),
        None => Ok(()),
    }
}

fn canonical_extra(extra: &mut std::collections::BTreeMap<String, String>, limits: &Limits) -> Result<(), Reject> {
    for (key, value) in extra.iter_mut() {
        canonical(key, value, limits)?;
    }
    Ok(())
}

fn wrong_type(role: Role, kind: &str, holds: Option<&str>) -> Reject {
    match holds {
        Some(holds) => Reject::new("bad_protobuf", format!("`type` says {kind:?} but the message holds {holds:?}")),
        None => Reject::new("unknown_type", format!("type {kind:?} is not a {role:?} message")),
    }
}

/// The one `type` of a role that carries a single message (`None` for roles with several).
fn fixed_type(role: Role) -> Option<&'static str> {
    Some(match role {
        Role::TemplatesRequests => "template_request",
        Role::TemplatesResults => "template_result",
        Role::TemplatesUsage => "template_usage",
        Role::AutomationErrors => "error_report",
        Role::AutomationValidation => "validation_outcome",
        Role::K8sStatus => "status_update",
        Role::AutomationJobs | Role::AutomationHealing | Role::AutomationResults | Role::K8sJobs | Role::K8sResults => {
            return None;
        }
    })
}

/// Decodes a protobuf body of a stream with role `role`.
pub fn decode(role: Role, kind: &str, bytes: &[u8], limits: &Limits) -> Result<Event, Reject> {
    if fixed_type(role).is_some_and(|fixed| fixed != kind) {
        return Err(wrong_type(role, kind, None));
    }
    let event = match role {
        Role::TemplatesRequests => {
            let mut m: te::TemplateRequest = message(kind, bytes)?;
            canonical("parameters", &mut m.parameters_json, limits)?;
            canonical_extra(&mut m.extra, limits)?;
            Event::TemplateRequest(m)
        }
        Role::TemplatesResults => {
            let mut m: te::TemplateResult = message(kind, bytes)?;
            canonical_opt("result", &mut m.result_json, limits)?;
            canonical_extra(&mut m.extra, limits)?;
            Event::TemplateResult(m)
        }
        Role::TemplatesUsage => {
            let mut m: te::TemplateUsageEvent = message(kind, bytes)?;
            canonical_extra(&mut m.extra, limits)?;
            Event::TemplateUsage(m)
        }
        Role::AutomationJobs => Event::AutomationJob(automation_job(kind, bytes, limits)?),
        Role::AutomationHealing if kind == "source_read" => Event::SourceRead(message(kind, bytes)?),
        Role::AutomationHealing => {
            let mut m: he::HealRequest = message(kind, bytes)?;
            canonical_extra(&mut m.extra, limits)?;
            Event::HealRequest(m)
        }
        Role::AutomationResults => {
            let mut m: he::AutomationResult = message(kind, bytes)?;
            if let Some(he::automation_result::Result::RepairResult(r)) = &mut m.result {
                canonical("result", &mut r.result_json, limits)?;
            }
            Event::AutomationResult(m)
        }
        Role::AutomationErrors => Event::ErrorReport(message(kind, bytes)?),
        Role::AutomationValidation => Event::ValidationOutcome(message(kind, bytes)?),
        Role::K8sJobs => Event::K8sJob(k8s_job(kind, bytes, limits)?),
        Role::K8sResults => {
            let mut m: ex::K8sResult = message(kind, bytes)?;
            if let Some(ex::k8s_result::Result::ExecutionResult(r)) = &mut m.result {
                canonical("result", &mut r.result_json, limits)?;
            }
            Event::K8sResult(m)
        }
        Role::K8sStatus => {
            let mut m: ex::ExecutionStatus = message(kind, bytes)?;
            canonical("details", &mut m.details_json, limits)?;
            Event::K8sStatus(m)
        }
    };
    // The entry's `type` must name what the body holds.
    let holds = event.type_name();
    if holds != Some(kind) {
        return Err(wrong_type(role, kind, holds));
    }
    Ok(event)
}

fn automation_job(kind: &str, bytes: &[u8], limits: &Limits) -> Result<he::AutomationJob, Reject> {
    use he::automation_job::Job;
    let mut m: he::AutomationJob = message(kind, bytes)?;
    match &mut m.job {
        Some(Job::StartMonitoring(j)) => canonical_extra(&mut j.extra, limits)?,
        Some(Job::StopMonitoring(j)) => canonical_extra(&mut j.extra, limits)?,
        Some(Job::HealTestFailure(j)) => canonical_extra(&mut j.extra, limits)?,
        None => {}
    }
    Ok(m)
}

fn k8s_job(kind: &str, bytes: &[u8], limits: &Limits) -> Result<ex::K8sJob, Reject> {
    use ex::k8s_job::Job;
    let mut m: ex::K8sJob = message(kind, bytes)?;
    match &mut m.job {
        Some(Job::ExecuteEphemeralTest(j)) => {
            canonical_extra(&mut j.extra, limits)?;
            if let Some(spec) = &mut j.environment_spec {
                canonical_opt("resources", &mut spec.resources_json, limits)?;
            }
        }
        Some(Job::CleanupEnvironment(j)) => canonical_extra(&mut j.extra, limits)?,
        Some(Job::GetLogs(j)) => canonical_extra(&mut j.extra, limits)?,
        None => {}
    }
    Ok(m)
}
