//! The template registry through a real redis-server and the engine binary: every request gets
//! one result and one usage event in the old shapes; the quality gate, roles and tenant
//! isolation hold; the catalogue is a projection of the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const REQUESTS: &str = "maestro:streams:templates:requests";
const RESULTS: &str = "maestro:streams:templates:results";
const USAGE: &str = "maestro:streams:templates:usage";

fn request(
    conn: &mut redis::Connection,
    id: &str,
    op: &str,
    tenant: &str,
    user: &str,
    template: Option<&str>,
    parameters: Value,
) {
    let mut data =
        json!({"request_id": id, "operation": op, "tenant_id": tenant, "user_id": user, "parameters": parameters});
    if let Some(template) = template {
        data["template_id"] = json!(template);
    }
    redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data.to_string()).query::<String>(conn).unwrap();
}

fn results(conn: &mut redis::Connection) -> std::collections::BTreeMap<String, Value> {
    read_stream(conn, RESULTS)
        .into_iter()
        .map(|(_, f)| serde_json::from_str::<Value>(&f["data"]).unwrap())
        .map(|v| (v["request_id"].as_str().unwrap().to_string(), v))
        .collect()
}

#[test]
fn a_registry_session_with_roles_tenants_and_the_quality_gate() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let body = maestro::traffic::template_body(&mut maestro::traffic::Rng::new(3), 12_000);
    let mut engine = EngineProc::start(&server.url(), &dir, &[("MAESTRO_ADMINS", "acme:alice,globex:gina")]);
    let create = |name: &str| json!({"name": name, "content": body, "manifest": manifest(name)});
    request(&mut conn, "r1", "create", "acme", "alice", Some("tpl-api"), create("fastapi-service"));
    request(&mut conn, "r2", "create", "acme", "bob", Some("tpl-bob"), create("bob-service"));
    request(&mut conn, "r3", "grant", "acme", "alice", None, json!({"user": "bob", "role": "developer"}));
    request(&mut conn, "r4", "create", "acme", "bob", Some("tpl-bob"), create("bob-service"));
    let mut bad = manifest("bad name");
    bad["metadata"]["tags"] = json!(["rest api"]);
    request(
        &mut conn,
        "r5",
        "create",
        "acme",
        "bob",
        Some("tpl-bad"),
        json!({"name": "bad", "content": body, "manifest": bad}),
    );
    request(&mut conn, "r6", "retrieve", "acme", "bob", Some("tpl-api"), json!({}));
    request(&mut conn, "r6b", "retrieve", "acme", "alice", Some("tpl-api"), json!({}));
    request(&mut conn, "r7", "search", "acme", "bob", None, json!({"query": "service", "language": "py"}));
    request(&mut conn, "r8", "retrieve", "acme", "gina", Some("tpl-api"), json!({}));
    request(&mut conn, "r9", "search", "globex", "gina", None, json!({"query": "service"}));
    request(&mut conn, "r10", "delete", "acme", "bob", Some("tpl-api"), json!({}));
    request(&mut conn, "r11", "pin", "acme", "alice", Some("tpl-api"), json!({"tier": "gold", "reason": "blessed"}));
    request(&mut conn, "r12", "validate", "acme", "bob", None, json!({"manifest": manifest("ok-name")}));
    request(&mut conn, "r13", "versions", "acme", "bob", Some("tpl-bob"), json!({}));
    request(&mut conn, "r14", "delete", "acme", "alice", Some("tpl-bob"), json!({}));
    request(&mut conn, "r15", "retrieve", "acme", "alice", Some("tpl-bob"), json!({}));
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success(), "{}", engine.stderr());

    let results = results(&mut conn);
    assert_eq!(results.len(), 16, "exactly one result per request");
    let ok = |id: &str| results[id]["status"] == "success";
    let error = |id: &str| results[id]["error"].as_str().unwrap_or_default().to_string();
    assert!(ok("r1"), "{}", results["r1"]);
    assert_eq!(results["r1"]["result"]["quality_score"], 100);
    // The old create answer's keys first, the record beside them.
    assert_eq!(results["r1"]["result"]["template_id"], "tpl-api");
    assert_eq!(results["r1"]["result"]["status"], "created");
    assert_eq!(results["r1"]["result"]["message"], "Template created successfully");
    assert_eq!(results["r1"]["result"]["template_status"], "draft");
    assert!(error("r2").contains("holds no role in tenant \"acme\""), "{}", error("r2"));
    assert!(ok("r3") && ok("r4"));
    let gate = error("r5");
    assert!(
        gate.contains("quality gate") && gate.contains("name \"bad name\"") && gate.contains("tag \"rest api\""),
        "{gate}"
    );
    assert!(ok("r6"));
    assert_eq!(results["r6"]["result"]["content"].as_str().unwrap().len(), 12_000, "retrieve returns the body");
    // Every retrieve counts a use, and search sees the count.
    assert_eq!(
        (&results["r6"]["result"]["usage_count"], &results["r6b"]["result"]["usage_count"]),
        (&json!(1), &json!(2))
    );
    let keys: Vec<&String> = results["r6"]["result"].as_object().unwrap().keys().collect();
    let fields = "template_id id name description category language framework tags quality_score is_pinned \
                  quality_tier usage_count created_at updated_at version created_by status tenant_id \
                  templating_engine content manifest pin_reason";
    assert_eq!(keys, fields.split_whitespace().collect::<Vec<_>>(), "a retrieve answers the whole record");
    assert!(ok("r7"));
    assert_eq!(results["r7"]["result"]["total"], 2);
    let brief = results["r7"]["result"]["results"].as_array().unwrap();
    assert_eq!(brief.len(), 2, "the old answer's hits");
    assert!(brief.iter().all(|hit| hit.as_object().unwrap().keys().eq(["template_id", "name", "category"].iter())));
    let found = results["r7"]["result"]["templates"].as_array().unwrap();
    let api = found.iter().find(|t| t["id"] == "tpl-api").unwrap();
    assert_eq!(api["usage_count"], 2, "{api}");
    assert!(results["r7"]["result"]["templates"][0].get("content").is_none(), "search results carry no bodies");
    assert!(error("r8").starts_with("denied:"), "another tenant's admin cannot read acme");
    assert_eq!(results["r9"]["result"]["total"], 0, "globex sees none of acme's templates");
    assert!(error("r10").contains("delete needs admin"));
    assert!(ok("r11"));
    assert_eq!(results["r11"]["result"]["is_pinned"], true);
    assert_eq!(results["r12"]["result"]["passes"], true);
    assert_eq!(results["r13"]["result"]["versions"].as_array().unwrap().len(), 1);
    assert!(ok("r14"));
    assert_eq!(
        (&results["r14"]["result"]["status"], &results["r14"]["result"]["message"]),
        (&json!("deleted"), &json!("Template deleted successfully"))
    );
    assert!(error("r15").contains("does not exist"));
    // Old result shape: exactly these keys, in this order.
    let keys: Vec<&String> = results["r1"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["request_id", "template_id", "status", "result", "error", "duration_ms", "timestamp"]);
    let usage = read_stream(&mut conn, USAGE);
    assert_eq!(usage.len(), 16, "one usage event per parsed request");
    let first: Value = serde_json::from_str(&usage[0].1["data"]).unwrap();
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["event_id", "template_id", "tenant_id", "user_id", "operation", "success", "duration_ms", "timestamp"]
    );
    // Real durations: from each request's entry to its answer's publication.
    let durations: Vec<u64> = usage
        .iter()
        .map(|(_, fields)| serde_json::from_str::<Value>(&fields["data"]).unwrap()["duration_ms"].as_u64().unwrap())
        .collect();
    assert!(durations.iter().sum::<u64>() > 0, "{durations:?}");
    let published: Vec<u64> = usage.iter().map(|(id, _)| id.split('-').next().unwrap().parse().unwrap()).collect();
    let requested: Vec<u64> =
        read_stream(&mut conn, REQUESTS).iter().map(|(id, _)| id.split('-').next().unwrap().parse().unwrap()).collect();
    for ((duration, published), requested) in durations.iter().zip(&published).zip(&requested) {
        assert!(*duration <= published - requested + 1, "{duration} ms between {requested} and {published}");
    }
}

#[test]
fn a_rejected_request_still_gets_its_one_error_result() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let mut engine = EngineProc::start(&server.url(), &data.path().join("engine"), &[]);
    let unknown = r#"{"request_id":"r-bad","operation":"explode","tenant_id":"t","user_id":"u"}"#;
    let unparsed = r#"{"request_id":"r-unparsed","operation":"retrieve","tenant_id":7}"#;
    for data in [unknown, unparsed] {
        redis::cmd("XADD").arg(REQUESTS).arg("*").arg("data").arg(data).query::<String>(&mut conn).unwrap();
    }
    wait_drained(&mut conn, Duration::from_secs(30));
    assert!(engine.terminate().success());
    let results = results(&mut conn);
    assert_eq!(results.len(), 2);
    // An operation the old service did not know is answered as it answered it.
    assert_eq!(results["r-bad"]["error"], "Unknown operation: explode", "{}", results["r-bad"]);
    assert!(results["r-unparsed"]["error"].as_str().unwrap().starts_with("bad_field"), "{}", results["r-unparsed"]);
    let usage = read_stream(&mut conn, USAGE);
    assert_eq!(usage.len(), 1, "a usage event for the parsed request only");
    let event: Value = serde_json::from_str(&usage[0].1["data"]).unwrap();
    assert_eq!((&event["operation"], &event["success"]), (&json!("explode"), &json!(false)));
    let dead = read_stream(&mut conn, &format!("{REQUESTS}:dead"));
    let reasons: Vec<&str> = dead.iter().map(|(_, f)| f["dead_reason"].as_str()).collect();
    assert_eq!(reasons, ["unknown_operation", "bad_field"], "both are still dead letters");
}
