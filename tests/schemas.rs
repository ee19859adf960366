//! The typed schemas on realistic traffic and on golden fixtures: every message shape of the
//! old producers decodes, outputs re-encode byte for byte, protobuf bodies decode to the same
//! events, and hostile nesting is rejected without a stack overflow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use maestro::traffic::Traffic;
use maestro_schemas::encode::{to_fields, to_proto_fields};
use maestro_schemas::envelope::Limits;
use maestro_schemas::{EntryId, Event, Origin, Role, StreamSet, decode};
use std::collections::BTreeMap;

fn raw(fields: &[(String, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

fn origin(stream: &str) -> Origin<'_> {
    Origin { stream, entry: EntryId { ms: 1_795_851_623_000, seq: 0 } }
}

#[test]
fn every_shape_of_the_realistic_mix_decodes_and_outputs_re_encode_byte_for_byte() {
    let streams = StreamSet::default();
    let mut traffic = Traffic::new(99, streams.clone());
    let mut shapes: BTreeMap<String, usize> = BTreeMap::new();
    let mut body_bytes = 0usize;
    for i in 0..6_000 {
        let (stream, fields) = if i % 2 == 0 { traffic.control_message(i) } else { traffic.next_message() };
        let role = streams.role_of(&stream).unwrap();
        let decoded = decode(role, origin(&stream), &raw(&fields), &Limits::default())
            .unwrap_or_else(|r| panic!("{stream}: {r}"));
        let event = decoded.event.event;
        *shapes.entry(format!("{role:?}/{}", event.type_name().unwrap())).or_default() += 1;
        if let Event::TemplateRequest(r) = &event
            && r.parameters_json.contains("\"content\"")
        {
            body_bytes = body_bytes.max(r.parameters_json.len());
        }
        // The engine's outputs must reach old consumers exactly as the old services wrote them.
        if matches!(
            role,
            Role::TemplatesResults
                | Role::TemplatesUsage
                | Role::AutomationResults
                | Role::K8sResults
                | Role::K8sStatus
        ) {
            assert_eq!(to_fields(&event), fields, "{stream} re-encodes to the old bytes");
        }
        // Both forms decode to the same event.
        let again = decode(role, origin(&stream), &raw(&to_fields(&event)), &Limits::default()).unwrap();
        assert_eq!(again.event.event, event);
        let proto = decode(role, origin(&stream), &to_proto_fields(&event), &Limits::default()).unwrap();
        assert_eq!(proto.event.event, event);
    }
    let expected = [
        "TemplatesRequests/template_request",
        "TemplatesResults/template_result",
        "TemplatesUsage/template_usage",
        "AutomationJobs/start_monitoring",
        "AutomationJobs/stop_monitoring",
        "AutomationJobs/heal_test_failure",
        "AutomationHealing/heal_request",
        "AutomationResults/status_update",
        "AutomationResults/repair_result",
        "K8sJobs/execute_ephemeral_test",
        "K8sJobs/get_logs",
        "K8sResults/execution_result",
        "K8sStatus/status_update",
    ];
    for shape in expected {
        assert!(shapes.contains_key(shape), "no {shape} in {shapes:?}");
    }
    assert!(body_bytes > 26_000, "template bodies of realistic size went through (largest {body_bytes} B)");
}

#[test]
fn hostile_nesting_is_rejected_without_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let fields = raw(&[("data".into(), format!("{{\"request_id\":\"r\",\"parameters\":{deep}}}"))]);
    let reject = decode(Role::TemplatesRequests, origin("s"), &fields, &Limits::default()).unwrap_err();
    assert_eq!(reject.code, "too_deep");
    // 101 nested groups inside an unknown field of a protobuf body: prost stops at 100.
    let mut nested = Vec::new();
    for _ in 0..101 {
        nested.extend_from_slice(&[0x9b, 0x06]); // field 99, wire type 3 (start group)
    }
    for _ in 0..101 {
        nested.extend_from_slice(&[0x9c, 0x06]); // field 99, wire type 4 (end group)
    }
    let fields = vec![(b"type".to_vec(), b"template_request".to_vec()), (b"proto".to_vec(), nested)];
    let reject = decode(Role::TemplatesRequests, origin("s"), &fields, &Limits::default()).unwrap_err();
    assert_eq!(reject.code, "bad_protobuf", "{reject}");
    assert!(reject.detail.contains("recursion"), "{reject}");
}

#[test]
fn rejects_name_their_reason() {
    let limits = Limits::default();
    let data = |json: &str| raw(&[("data".into(), json.into())]);
    type Case = (Role, Vec<(Vec<u8>, Vec<u8>)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            Role::TemplatesRequests,
            data(r#"{"operation":"explode","tenant_id":"t","user_id":"u"}"#),
            "unknown_operation",
        ),
        (Role::TemplatesRequests, data(r#"{"operation":"create","user_id":"u"}"#), "missing_field"),
        (Role::TemplatesRequests, data(r#"{"operation":"create","tenant_id":7,"user_id":"u"}"#), "bad_field"),
        (Role::TemplatesRequests, data(r#"{"operation":"create""#), "bad_json"),
        (
            Role::TemplatesResults,
            data(r#"{"request_id":"r","status":"maybe","duration_ms":1,"timestamp":"t"}"#),
            "bad_field",
        ),
        (
            Role::K8sJobs,
            raw(&[("type".into(), "reboot_cluster".into()), ("payload".into(), "{}".into())]),
            "unknown_type",
        ),
        (
            Role::K8sJobs,
            raw(&[
                ("type".into(), "execute_ephemeral_test".into()),
                ("payload".into(), r#"{"environment_spec":"postgresql"}"#.into()),
            ]),
            "bad_field",
        ),
        (
            Role::AutomationHealing,
            // A heal request without a file is answered by the handler; a source-read fact
            // without the id of the intent it answers is not a fact.
            raw(&[("type".into(), "source_read".into()), ("repair_id".into(), "repair-1".into())]),
            "missing_field",
        ),
        (
            Role::AutomationHealing,
            raw(&[
                ("type".into(), "source_read".into()),
                ("repair_id".into(), "repair-1".into()),
                ("fact_id".into(), "read_file/repair-1".into()),
            ]),
            "bad_field",
        ),
        (
            Role::TemplatesRequests,
            raw(&[("type".into(), "template_request".into()), ("proto".into(), "\u{7f}garbage".into())]),
            "bad_protobuf",
        ),
        (
            Role::TemplatesRequests,
            raw(&[("type".into(), "template_result".into()), ("proto".into(), String::new())]),
            "unknown_type",
        ),
        (
            Role::TemplatesRequests,
            raw(&[("data".into(), "{}".into()), ("schema_version".into(), "2".into())]),
            "unsupported_version",
        ),
        (
            Role::TemplatesRequests,
            data(&format!(r#"{{"operation":"create","tenant_id":"{}","user_id":"u"}}"#, "t".repeat(300))),
            "too_long",
        ),
        (
            Role::K8sJobs,
            // A name that is not text cannot be the `type` the decoder looks for: not a missing
            // field, text that is not UTF-8.
            vec![(b"\xff\xfetype".to_vec(), b"get_logs".to_vec()), (b"payload".to_vec(), b"{}".to_vec())],
            "not_utf8",
        ),
        (
            Role::TemplatesRequests,
            vec![
                (b"data".to_vec(), br#"{"operation":"search","tenant_id":"t","user_id":"u"}"#.to_vec()),
                (b"n\xc3".to_vec(), vec![]),
            ],
            "not_utf8",
        ),
    ];
    for (role, fields, code) in cases {
        let reject = decode(role, origin("s"), &fields, &limits).expect_err(code);
        assert_eq!(reject.code, code, "{reject}");
        assert!(!reject.detail.is_empty());
    }
}

#[test]
fn a_missing_request_id_is_derived_from_the_entry_never_invented() {
    let fields = raw(&[("data".into(), r#"{"operation":"search","tenant_id":"t","user_id":"u"}"#.into())]);
    let one = decode(Role::TemplatesRequests, origin("s"), &fields, &Limits::default()).unwrap();
    let two = decode(Role::TemplatesRequests, origin("s"), &fields, &Limits::default()).unwrap();
    assert_eq!(one, two);
    assert_eq!(one.producer_request_id, None, "a derived id is not a re-send key");
    let Event::TemplateRequest(request) = one.event.event else { panic!() };
    assert!(request.request_id.starts_with("req-"));
    assert_eq!(request.parameters_json, "{}");
}

/// Golden fixtures: one entry per message shape, in the old format, with the protobuf bytes of
/// the event it decodes to. They are decoded on every run, forever: a change that reads an old
/// entry differently fails here. `UPDATE_FIXTURES=1` writes the bytes of new fixtures.
#[test]
fn golden_fixtures_of_schema_version_1_decode_forever() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/messages.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut fixtures: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let streams = StreamSet {
        automation_errors: Some("maestro:streams:automation:errors".into()),
        automation_validation: Some("maestro:streams:automation:validation".into()),
        ..StreamSet::default()
    };
    let update = std::env::var("UPDATE_FIXTURES").is_ok();
    assert!(fixtures.len() >= 17);
    for fixture in &mut fixtures {
        let stream = fixture["stream"].as_str().unwrap().to_string();
        let entry = EntryId::parse(fixture["id"].as_str().unwrap()).unwrap();
        let fields: Vec<(Vec<u8>, Vec<u8>)> = fixture["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect();
        let role = streams.role_of(&stream).unwrap();
        let origin = Origin { stream: &stream, entry };
        let decoded =
            decode(role, origin, &fields, &Limits::default()).unwrap_or_else(|r| panic!("{}: {r}", fixture["name"]));
        assert_eq!(decoded.event.schema_version, 1);
        let proto = to_proto_fields(&decoded.event.event);
        let hex = hex::encode(&proto[1].1);
        if update && fixture["proto_hex"].is_null() {
            fixture["proto_hex"] = serde_json::Value::String(hex.clone());
        }
        assert_eq!(fixture["proto_hex"].as_str(), Some(hex.as_str()), "{}: the event changed", fixture["name"]);
        let again = decode(role, origin, &proto, &Limits::default()).unwrap();
        assert_eq!(again.event, decoded.event, "{}: the protobuf form decodes to the same event", fixture["name"]);
    }
    if update {
        std::fs::write(&path, serde_json::to_string_pretty(&fixtures).unwrap() + "\n").unwrap();
    }
}

/// A stored log record of format 1, as bytes: it must decode, with its checksum, forever.
#[test]
fn a_golden_record_of_format_1_decodes_forever() {
    use maestro_schemas::record::{GENESIS_HASH, RECORD_FORMAT};
    use maestro_schemas::{Body, Entry, Record, Reject, Status};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/record.hex");
    let expected = Record {
        format: 1,
        seq: 42,
        prev_hash: GENESIS_HASH,
        body: Body::Entry(Entry {
            stream: "maestro:streams:k8s:jobs".into(),
            id: EntryId { ms: 1_795_851_623_000, seq: 7 },
            fields: vec![("type".into(), b"get_logs".to_vec())],
            status: Status::Rejected {
                reason: Reject::new("missing_field", "field `payload` is required"),
                deliveries: 1,
            },
        }),
    };
    if std::env::var("UPDATE_FIXTURES").is_ok() && !path.exists() {
        let hex = hex::encode(expected.encode().unwrap());
        std::fs::write(&path, hex + "\n").unwrap();
    }
    let hex = std::fs::read_to_string(&path).unwrap();
    let bytes = hex::decode(hex.trim()).unwrap();
    assert_eq!(Record::decode(42, &bytes).unwrap(), expected);
    // Both ways: this build writes the very bytes format 1 was written with (field names were
    // `String`s then, bytes now; bincode stores both as a length and the bytes).
    assert_eq!(expected.encode().unwrap(), bytes, "record format 1 is written as it always was");
    assert_eq!(maestro_schemas::record::format_for(&expected.body), 1, "a record format 1 holds is written as 1");
    assert_eq!(RECORD_FORMAT, 2, "a new record format needs its own fixture beside this one");
}

/// A stored record of format 2 (an own output by reference), as bytes: it must decode forever,
/// and this build writes it with the same bytes.
#[test]
fn a_golden_record_of_format_2_decodes_forever() {
    use maestro_schemas::record::GENESIS_HASH;
    use maestro_schemas::{Body, Entry, OwnRef, Record, Status};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2/record.hex");
    let fields =
        vec![(b"origin".to_vec(), b"maestro-engine/c1".to_vec()), (b"output_id".to_vec(), b"41-0.ab".to_vec())];
    let stream = "maestro:streams:templates:results";
    let expected = Record {
        format: 2,
        seq: 43,
        prev_hash: GENESIS_HASH,
        body: Body::Entry(Entry {
            stream: stream.into(),
            id: EntryId { ms: 1_795_851_623_001, seq: 0 },
            fields: Vec::new(),
            status: Status::OwnRef(OwnRef {
                output_id: b"41-0.ab".to_vec(),
                fields_hash: maestro_schemas::own::fields_hash(stream, &fields),
                bytes: 39,
            }),
        }),
    };
    assert_eq!(
        maestro_schemas::own::reference(stream, &fields),
        match &expected.body {
            Body::Entry(Entry { status: Status::OwnRef(r), .. }) => r.clone(),
            _ => unreachable!(),
        }
    );
    if std::env::var("UPDATE_FIXTURES").is_ok() && !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, hex::encode(expected.encode().unwrap()) + "\n").unwrap();
    }
    let hex = std::fs::read_to_string(&path).unwrap();
    let bytes = hex::decode(hex.trim()).unwrap();
    assert_eq!(Record::decode(43, &bytes).unwrap(), expected);
    assert_eq!(expected.encode().unwrap(), bytes, "record format 2 is written as it always was");
    assert_eq!(maestro_schemas::record::format_for(&expected.body), 2);
}
