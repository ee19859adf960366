//! Laws of the decoder, by proptest:
//! - every normalised event survives `decode(encode(e)) == e` in both forms (old format and
//!   protobuf), so the two paths give identical typed events;
//! - arbitrary field maps and byte strings never panic `decode`: each gets an event or a typed
//!   reject (the CI profile of R7).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use maestro_schemas::encode::{to_fields, to_proto_fields};
use maestro_schemas::envelope::Limits;
use maestro_schemas::event::{ERROR_TYPES, SEVERITIES};
use maestro_schemas::proto::{execution as ex, healing as he, templates as te};
use maestro_schemas::{EntryId, Event, Origin, StreamSet, decode};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn ident() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,11}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

/// A compact JSON object text with scalar values (no floats: their text form is not unique).
fn object_json() -> impl Strategy<Value = String> {
    vec(
        (
            "[a-z]{1,6}",
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                text().prop_map(|s| serde_json::to_string(&s).unwrap()),
                any::<bool>().prop_map(|b| b.to_string())
            ],
        ),
        0..4,
    )
    .prop_map(|pairs| {
        let mut seen = std::collections::BTreeSet::new();
        let body: Vec<String> =
            pairs.into_iter().filter(|(k, _)| seen.insert(k.clone())).map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

/// Unknown keys kept as JSON text; `x_` keeps them clear of every known key.
fn extra() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(
        "x_[a-z]{1,6}",
        prop_oneof![any::<i32>().prop_map(|n| n.to_string()), Just("null".to_string()), object_json()],
        0..3,
    )
}

fn template_request() -> impl Strategy<Value = Event> {
    (ident(), option::of(ident()), 1i32..=11, ident(), ident(), object_json(), option::of(text()), extra()).prop_map(
        |(request_id, template_id, operation, tenant_id, user_id, parameters_json, timestamp, extra)| {
            Event::TemplateRequest(te::TemplateRequest {
                request_id,
                template_id,
                operation,
                tenant_id,
                user_id,
                parameters_json,
                timestamp,
                extra,
            })
        },
    )
}

fn template_result() -> impl Strategy<Value = Event> {
    (
        ident(),
        option::of(ident()),
        prop_oneof![Just("success"), Just("error")],
        option::of(object_json()),
        option::of(text()),
        any::<i64>(),
        text(),
        extra(),
    )
        .prop_map(|(request_id, template_id, status, result_json, error, duration_ms, timestamp, extra)| {
            Event::TemplateResult(te::TemplateResult {
                request_id,
                template_id,
                status: status.into(),
                result_json,
                error,
                duration_ms,
                timestamp,
                extra,
            })
        })
}

fn template_usage() -> impl Strategy<Value = Event> {
    (ident(), text(), text(), text(), text(), any::<bool>(), any::<i64>(), text(), extra()).prop_map(
        |(event_id, template_id, tenant_id, user_id, operation, success, duration_ms, timestamp, extra)| {
            Event::TemplateUsage(te::TemplateUsageEvent {
                event_id,
                template_id,
                tenant_id,
                user_id,
                operation,
                success,
                duration_ms,
                timestamp,
                extra,
            })
        },
    )
}

fn heal() -> impl Strategy<Value = he::HealRequest> {
    let located = prop_oneof![
        ident().prop_map(|t| (Some(t), None)),
        text().prop_map(|f| (None, Some(format!("tests/{f}.py")))),
        (ident(), ident()).prop_map(|(t, f)| (Some(t), Some(f))),
    ];
    (
        option::of(ident()),
        located,
        text(),
        "\\PC{1,24}",
        option::of(text()),
        proptest::sample::select(ERROR_TYPES.to_vec()),
        option::of(any::<i64>()),
        extra(),
    )
        .prop_map(
            |(
                orchestrator_id,
                (test_id, file_path),
                source,
                error_message,
                stack_trace,
                error_type,
                line_number,
                extra,
            )| he::HealRequest {
                orchestrator_id,
                test_id,
                file_path,
                source,
                error_message,
                stack_trace,
                error_type: error_type.into(),
                line_number,
                extra,
            },
        )
}

fn automation_job() -> impl Strategy<Value = Event> {
    use he::automation_job::Job;
    let config = (any::<bool>(), any::<bool>(), 0u32..=4, any::<bool>(), any::<bool>(), any::<u32>()).prop_map(
        |(a, r, t, c, p, m)| he::MonitoringConfig {
            auto_fix: Some(a),
            require_approval: Some(r),
            confidence_threshold: Some(f64::from(t) / 4.0),
            auto_commit: Some(c),
            create_pr: Some(p),
            max_concurrent_repairs: Some(m),
        },
    );
    let job = prop_oneof![
        (ident(), config, extra(), option::of(object_json())).prop_map(|(project_path, config, mut extra, nested)| {
            if let Some(nested) = nested {
                extra.insert("config.x_nested".into(), nested);
            }
            Job::StartMonitoring(he::StartMonitoring { project_path, config: Some(config), extra })
        }),
        (ident(), extra())
            .prop_map(|(orchestrator_id, extra)| Job::StopMonitoring(he::StopMonitoring { orchestrator_id, extra })),
        heal().prop_map(Job::HealTestFailure),
    ];
    (job, option::of(text()))
        .prop_map(|(job, timestamp)| Event::AutomationJob(he::AutomationJob { job: Some(job), timestamp }))
}

fn automation_result() -> impl Strategy<Value = Event> {
    use he::automation_result::Result as R;
    prop_oneof![
        (ident(), ident(), text()).prop_map(|(orchestrator_id, status, timestamp)| R::StatusUpdate(
            he::OrchestratorStatus { orchestrator_id, status, timestamp }
        )),
        (ident(), object_json(), text()).prop_map(|(orchestrator_id, result_json, timestamp)| R::RepairResult(
            he::RepairResult { orchestrator_id, result_json, timestamp }
        )),
    ]
    .prop_map(|result| Event::AutomationResult(he::AutomationResult { result: Some(result) }))
}

fn error_report() -> impl Strategy<Value = Event> {
    (
        proptest::sample::select(ERROR_TYPES.to_vec()),
        text(),
        text(),
        option::of(any::<i64>()),
        option::of(text()),
        option::of(proptest::sample::select(SEVERITIES.to_vec())),
    )
        .prop_map(|(error_type, error_message, file_path, line_number, stack_trace, severity)| {
            Event::ErrorReport(he::ErrorReport {
                error_type: error_type.into(),
                error_message,
                file_path,
                line_number,
                stack_trace,
                severity: severity.map(Into::into),
            })
        })
}

fn validation_outcome() -> impl Strategy<Value = Event> {
    (ident(), any::<bool>(), option::of(text())).prop_map(|(repair_id, passed, message)| {
        Event::ValidationOutcome(he::ValidationOutcome { repair_id, passed, message })
    })
}

fn k8s_job() -> impl Strategy<Value = Event> {
    use ex::k8s_job::Job;
    let spec = (
        ident(),
        any::<u32>(),
        option::of(prop_oneof![Just("postgresql"), Just("mysql")]),
        any::<bool>(),
        any::<u32>(),
        option::of(object_json()),
        btree_map("[A-Z_]{1,8}", text(), 0..3),
    )
        .prop_map(|(app_image, app_port, db, redis, replicas, resources_json, env_vars)| ex::EnvironmentSpec {
            app_image,
            app_port,
            database_type: db.map(Into::into),
            redis_enabled: Some(redis),
            replicas: Some(replicas),
            resources_json,
            env_vars,
        });
    let test = (vec(text(), 0..3), any::<u32>(), any::<u32>()).prop_map(|(commands, timeout, ttl)| ex::TestConfig {
        commands,
        timeout_minutes: Some(timeout),
        ttl_minutes: Some(ttl),
    });
    let job = prop_oneof![
        (ident(), spec, test, extra()).prop_map(|(id, spec, test, extra)| Job::ExecuteEphemeralTest(
            ex::ExecuteEphemeralTest {
                execution_id: Some(id),
                environment_spec: Some(spec),
                test_config: Some(test),
                extra,
            }
        )),
        (ident(), extra())
            .prop_map(|(execution_id, extra)| Job::CleanupEnvironment(ex::CleanupEnvironment { execution_id, extra })),
        (ident(), extra()).prop_map(|(execution_id, extra)| Job::GetLogs(ex::GetLogs { execution_id, extra })),
    ];
    job.prop_map(|job| Event::K8sJob(ex::K8sJob { job: Some(job) }))
}

fn k8s_result() -> impl Strategy<Value = Event> {
    use ex::k8s_result::Result as R;
    prop_oneof![
        (ident(), object_json(), text()).prop_map(|(execution_id, result_json, timestamp)| R::ExecutionResult(
            ex::ExecutionResult { execution_id, result_json, timestamp }
        )),
        (ident(), text(), text()).prop_map(|(execution_id, logs, timestamp)| R::ExecutionLogs(ex::ExecutionLogs {
            execution_id,
            logs,
            timestamp
        })),
    ]
    .prop_map(|result| Event::K8sResult(ex::K8sResult { result: Some(result) }))
}

fn k8s_status() -> impl Strategy<Value = Event> {
    (ident(), ident(), object_json(), text()).prop_map(|(execution_id, status, details_json, timestamp)| {
        Event::K8sStatus(ex::ExecutionStatus { execution_id, status, details_json, timestamp })
    })
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        template_request(),
        template_result(),
        template_usage(),
        automation_job(),
        heal().prop_map(Event::HealRequest),
        automation_result(),
        error_report(),
        validation_outcome(),
        k8s_job(),
        k8s_result(),
        k8s_status(),
    ]
}

fn streams() -> StreamSet {
    StreamSet {
        automation_errors: Some("maestro:streams:automation:errors".into()),
        automation_validation: Some("maestro:streams:automation:validation".into()),
        ..StreamSet::default()
    }
}

fn origin() -> Origin<'static> {
    Origin { stream: "s", entry: EntryId { ms: 1, seq: 0 } }
}

fn bytes(fields: Vec<(String, String)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn old_format_round_trips(event in any_event()) {
        let fields = bytes(to_fields(&event));
        let decoded = decode(event.role(), origin(), &fields, &Limits::default());
        prop_assert!(decoded.is_ok(), "{:?}\n{fields:?}", decoded);
        prop_assert_eq!(decoded.unwrap().event.event, event);
    }

    #[test]
    fn protobuf_form_round_trips_to_the_same_event(event in any_event()) {
        let fields = to_proto_fields(&event);
        let decoded = decode(event.role(), origin(), &fields, &Limits::default());
        prop_assert!(decoded.is_ok(), "{:?}", decoded);
        prop_assert_eq!(decoded.unwrap().event.event, event);
    }
}

/// Arbitrary entries: field names from the real vocabulary, noise and raw bytes, values from
/// JSON-ish text and raw bytes. Every one must come back as an event or a typed reject; none
/// may panic.
fn arbitrary_fields() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        proptest::sample::select(vec![
            "data",
            "type",
            "payload",
            "proto",
            "execution_id",
            "status",
            "result",
            "logs",
            "details",
            "timestamp",
            "orchestrator_id",
            "error_type",
            "error_message",
            "file_path",
            "line_number",
            "repair_id",
            "passed",
            "schema_version"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        "[a-z]{1,8}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..8),
    ];
    let value = prop_oneof![
        vec(any::<u8>(), 0..64),
        "[\\[\\]{}\":,a-z0-9 ]{0,64}".prop_map(String::into_bytes),
        proptest::sample::select(vec![
            "{}",
            "[]",
            "null",
            "{\"operation\":\"create\"}",
            "status_update",
            "get_logs",
            "execute_ephemeral_test",
            "{\"execution_id\":1}"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    vec((name, value), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("TEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000)))]

    #[test]
    fn arbitrary_entries_never_panic_and_every_reject_names_its_reason(fields in arbitrary_fields(), role in 0usize..11) {
        let set = streams();
        let (role, _) = set.all()[role];
        if let Err(reject) = decode(role, origin(), &fields, &Limits::default()) {
            prop_assert!(!reject.code.is_empty() && !reject.detail.is_empty());
        }
    }
}
