//! Typed events: what a stream entry means, whichever form (old JSON or protobuf) it came in.

use crate::Role;
use crate::proto::{execution, healing, templates};

/// The schema version this build decodes to. Events of older versions are upcast on read (see
/// [`crate::decode::upcast`]); the log keeps the entries as they came.
pub const SCHEMA_VERSION: u32 = 1;

/// A decoded entry with the schema version it is expressed in.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedEvent {
    pub schema_version: u32,
    pub event: Event,
}

/// One event per stream role.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    TemplateRequest(templates::TemplateRequest),
    TemplateResult(templates::TemplateResult),
    TemplateUsage(templates::TemplateUsageEvent),
    AutomationJob(healing::AutomationJob),
    HealRequest(healing::HealRequest),
    SourceRead(healing::SourceRead),
    AutomationResult(healing::AutomationResult),
    ErrorReport(healing::ErrorReport),
    ValidationOutcome(healing::ValidationOutcome),
    K8sJob(execution::K8sJob),
    K8sResult(execution::K8sResult),
    K8sStatus(execution::ExecutionStatus),
}

impl Event {
    /// The stream role this event belongs to.
    pub fn role(&self) -> Role {
        match self {
            Event::TemplateRequest(_) => Role::TemplatesRequests,
            Event::TemplateResult(_) => Role::TemplatesResults,
            Event::TemplateUsage(_) => Role::TemplatesUsage,
            Event::AutomationJob(_) => Role::AutomationJobs,
            Event::HealRequest(_) | Event::SourceRead(_) => Role::AutomationHealing,
            Event::AutomationResult(_) => Role::AutomationResults,
            Event::ErrorReport(_) => Role::AutomationErrors,
            Event::ValidationOutcome(_) => Role::AutomationValidation,
            Event::K8sJob(_) => Role::K8sJobs,
            Event::K8sResult(_) => Role::K8sResults,
            Event::K8sStatus(_) => Role::K8sStatus,
        }
    }

    /// The entry's `type`: the old producers' value on flat streams, the message name otherwise.
    /// `None` when a oneof is empty (a protobuf message that names no case).
    pub fn type_name(&self) -> Option<&'static str> {
        use execution::k8s_job::Job as K;
        use execution::k8s_result::Result as KR;
        use healing::automation_job::Job as A;
        use healing::automation_result::Result as AR;
        Some(match self {
            Event::TemplateRequest(_) => "template_request",
            Event::TemplateResult(_) => "template_result",
            Event::TemplateUsage(_) => "template_usage",
            Event::AutomationJob(job) => match job.job.as_ref()? {
                A::StartMonitoring(_) => "start_monitoring",
                A::StopMonitoring(_) => "stop_monitoring",
                A::HealTestFailure(_) => "heal_test_failure",
            },
            Event::HealRequest(_) => "heal_request",
            Event::SourceRead(_) => "source_read",
            Event::AutomationResult(result) => match result.result.as_ref()? {
                AR::StatusUpdate(_) => "status_update",
                AR::RepairResult(_) => "repair_result",
            },
            Event::ErrorReport(_) => "error_report",
            Event::ValidationOutcome(_) => "validation_outcome",
            Event::K8sJob(job) => match job.job.as_ref()? {
                K::ExecuteEphemeralTest(_) => "execute_ephemeral_test",
                K::CleanupEnvironment(_) => "cleanup_environment",
                K::GetLogs(_) => "get_logs",
            },
            Event::K8sResult(result) => match result.result.as_ref()? {
                KR::ExecutionResult(_) => "execution_result",
                KR::ExecutionLogs(_) => "execution_logs",
            },
            Event::K8sStatus(_) => "status_update",
        })
    }
}

/// The wire names of template operations.
pub const OPERATIONS: [(&str, templates::Operation); 11] = [
    ("create", templates::Operation::Create),
    ("update", templates::Operation::Update),
    ("delete", templates::Operation::Delete),
    ("retrieve", templates::Operation::Retrieve),
    ("search", templates::Operation::Search),
    ("versions", templates::Operation::Versions),
    ("pin", templates::Operation::Pin),
    ("unpin", templates::Operation::Unpin),
    ("validate", templates::Operation::Validate),
    ("grant", templates::Operation::Grant),
    ("revoke", templates::Operation::Revoke),
];

/// The wire name of an operation (`None` for `Unspecified`).
pub fn operation_name(operation: templates::Operation) -> Option<&'static str> {
    OPERATIONS.iter().find(|(_, op)| *op == operation).map(|(name, _)| *name)
}

/// The error types of the healing domain.
pub const ERROR_TYPES: [&str; 7] =
    ["test_failure", "build_error", "type_error", "lint_error", "runtime_error", "import_error", "dependency_error"];

/// The severities of the healing domain.
pub const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];
