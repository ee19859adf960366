//! The partition of an entry, decided by the projection that must stay whole: templates by
//! tenant (a tenant's registry, grants and history), healing by orchestrator (its repairs,
//! queue and statistics), execution by execution id (an environment's lifecycle). The key is
//! read with the one decoder (`maestro_schemas::decode`), so it is the value the handlers key
//! their state on, defaults and derived ids included; its hash names the partition
//! (`maestro_schemas::partition::partition_of`).
//!
//! An entry the decoder refuses (malformed, over a limit, of an unknown type) has no key: it
//! goes to partition 0, whose engine dead-letters it as today. Healing entries that name no
//! orchestrator (error reports, validation outcomes, source-read facts, heal requests without
//! `orchestrator_id`) go to the default orchestrator's partition: the handler picks their
//! owner from the state (the project that holds the file), which a pure function of the entry
//! cannot see.

use crate::healing::model::DEFAULT_ORCHESTRATOR;
use maestro_schemas::ids::derived_id;
use maestro_schemas::partition::partition_of;
use maestro_schemas::proto::execution::k8s_job::Job as K8sJob;
use maestro_schemas::proto::healing::automation_job::Job as AutomationJob;
use maestro_schemas::{EntryId, Event, Limits, Origin, Role, decode};

/// The text an entry's partition is hashed from, or `None` when the entry cannot be read or
/// its stream is not routed.
pub fn partition_text(
    role: Role,
    stream: &str,
    id: EntryId,
    fields: &[(Vec<u8>, Vec<u8>)],
    limits: &Limits,
) -> Option<String> {
    if !role.is_routed() {
        return None;
    }
    let decoded = decode(role, Origin { stream, entry: id }, fields, limits).ok()?;
    let named = |orchestrator: Option<&String>| {
        orchestrator.filter(|o| !o.is_empty()).cloned().unwrap_or_else(|| DEFAULT_ORCHESTRATOR.to_string())
    };
    Some(match decoded.event.event {
        Event::TemplateRequest(request) => request.tenant_id,
        Event::AutomationJob(job) => match job.job? {
            // The orchestrator a start registers is named after its entry (the handler's id).
            AutomationJob::StartMonitoring(_) => derived_id("orch", stream, id),
            AutomationJob::StopMonitoring(stop) => stop.orchestrator_id,
            AutomationJob::HealTestFailure(heal) => named(heal.orchestrator_id.as_ref()),
        },
        Event::HealRequest(heal) => named(heal.orchestrator_id.as_ref()),
        Event::SourceRead(_) | Event::ErrorReport(_) | Event::ValidationOutcome(_) => named(None),
        Event::K8sJob(job) => match job.job? {
            K8sJob::ExecuteEphemeralTest(run) => run.execution_id.unwrap_or_default(),
            K8sJob::CleanupEnvironment(cleanup) => cleanup.execution_id,
            K8sJob::GetLogs(logs) => logs.execution_id,
        },
        _ => return None,
    })
}

/// The partition (`0..partitions`) of an entry of a routed stream; 0 for one it cannot read.
pub fn partition(
    role: Role,
    stream: &str,
    id: EntryId,
    fields: &[(Vec<u8>, Vec<u8>)],
    limits: &Limits,
    partitions: u32,
) -> u32 {
    partition_text(role, stream, id, fields, limits).map_or(0, |text| partition_of(text.as_bytes(), partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_schemas::StreamSet;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    fn text(role: Role, pairs: &[(&str, &str)]) -> Option<String> {
        let streams = StreamSet::default();
        let stream = streams.all().into_iter().find(|(r, _)| *r == role).map(|(_, k)| k.to_string()).unwrap();
        partition_text(role, &stream, EntryId { ms: 1_795_851_623_000, seq: 4 }, &fields(pairs), &Limits::default())
    }

    #[test]
    fn template_requests_go_by_tenant() {
        let data = r#"{"request_id":"r1","operation":"retrieve","tenant_id":"acme","user_id":"alice","parameters":{}}"#;
        assert_eq!(text(Role::TemplatesRequests, &[("data", data)]).as_deref(), Some("acme"));
    }

    #[test]
    fn healing_goes_by_orchestrator() {
        let start = r#"{"project_path":"/srv/app","config":{"auto_fix":true}}"#;
        let started = text(Role::AutomationJobs, &[("type", "start_monitoring"), ("payload", start)]).unwrap();
        let entry = EntryId { ms: 1_795_851_623_000, seq: 4 };
        assert_eq!(started, derived_id("orch", "maestro:streams:automation:jobs", entry));
        let stop = r#"{"orchestrator_id":"orch-7"}"#;
        assert_eq!(text(Role::AutomationJobs, &[("type", "stop_monitoring"), ("payload", stop)]).unwrap(), "orch-7");
        let heal = r#"{"orchestrator_id":"orch-9","file_path":"tests/test_a.py","error_message":"AssertionError"}"#;
        assert_eq!(text(Role::AutomationHealing, &[("payload", heal)]).unwrap(), "orch-9");
        let unnamed = r#"{"test_file":"tests/test_a.py","error_message":"AssertionError"}"#;
        assert_eq!(text(Role::AutomationHealing, &[("payload", unnamed)]).unwrap(), DEFAULT_ORCHESTRATOR);
        let report = [("error_type", "test_failure"), ("error_message", "boom"), ("file_path", "/srv/app/t.py")];
        assert_eq!(text(Role::AutomationErrors, &report).unwrap(), DEFAULT_ORCHESTRATOR);
    }

    #[test]
    fn executions_go_by_execution_id_derived_when_missing() {
        let named = r#"{"execution_id":"exec-1","environment_spec":{"app_image":"a:1","app_port":80},"test_config":{"commands":["true"]}}"#;
        assert_eq!(text(Role::K8sJobs, &[("type", "execute_ephemeral_test"), ("payload", named)]).unwrap(), "exec-1");
        let unnamed = r#"{"environment_spec":{"app_image":"a:1","app_port":80},"test_config":{"commands":["true"]}}"#;
        let derived = text(Role::K8sJobs, &[("payload", unnamed)]).unwrap();
        let entry = EntryId { ms: 1_795_851_623_000, seq: 4 };
        assert_eq!(derived, maestro_schemas::ids::execution_id("maestro:streams:k8s:jobs", entry, 0));
        let logs = r#"{"execution_id":"exec-1"}"#;
        assert_eq!(text(Role::K8sJobs, &[("type", "get_logs"), ("payload", logs)]).unwrap(), "exec-1");
        assert_eq!(text(Role::K8sJobs, &[("type", "cleanup_environment"), ("payload", logs)]).unwrap(), "exec-1");
    }

    #[test]
    fn unreadable_entries_and_answers_have_no_key_and_go_to_partition_zero() {
        assert_eq!(text(Role::TemplatesRequests, &[("data", "{not json")]), None);
        assert_eq!(text(Role::K8sJobs, &[("type", "launch_rocket"), ("payload", "{}")]), None);
        let result = r#"{"request_id":"r1","status":"success"}"#;
        assert_eq!(text(Role::TemplatesResults, &[("data", result)]), None);
        let id = EntryId { ms: 1, seq: 0 };
        let bad = fields(&[("data", "{not json")]);
        let stream = "maestro:streams:templates:requests";
        assert_eq!(partition(Role::TemplatesRequests, stream, id, &bad, &Limits::default(), 8), 0);
    }

    #[test]
    fn one_tenants_entries_share_a_partition() {
        let stream = "maestro:streams:templates:requests";
        let partitions: Vec<u32> = (0..20)
            .map(|i| {
                let data = format!(
                    r#"{{"request_id":"r{i}","operation":"search","tenant_id":"globex","user_id":"u{i}","parameters":{{}}}}"#
                );
                let id = EntryId { ms: 1000 + i, seq: 0 };
                partition(Role::TemplatesRequests, stream, id, &fields(&[("data", &data)]), &Limits::default(), 12)
            })
            .collect();
        assert!(partitions.iter().all(|p| *p == partitions[0]), "{partitions:?}");
        assert_eq!(partitions[0], partition_of(b"globex", 12));
    }
}
