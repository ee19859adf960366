//! The healing handler folded over records in memory: admission edges, detection confidence
//! by runner, clock records before and after a deadline, and the state a log gives however it
//! is cut into events.

use super::handler::{Healing, detection_confidence};
use super::model::*;
use super::model::{READ_FILE, READ_TIMEOUT_MS};
use crate::fold::Fold;
use maestro_schemas::{Body, StreamSet};
use serde_json::{Value, json};

const JOBS: &str = "maestro:streams:automation:jobs";
const HEALING: &str = "maestro:streams:automation:healing";

/// The healing handler's own steps over a fold.
trait Steps {
    fn start(&mut self, ms: u64, config: Value) -> String;
    fn heal(&mut self, ms: u64, orchestrator: &str, error_type: &str, file: &str) -> String;
    fn repair(&self, id: &str) -> Repair;
}

/// The default streams: no validation stream, so a plan is a repair's final answer.
fn fold() -> Fold {
    Fold::new(Healing::new(&StreamSet::default()))
}

/// With a validation stream configured: repairs wait in `validating` for their outcome.
fn fold_validating() -> Fold {
    let streams = StreamSet { automation_validation: Some(VALIDATION.into()), ..StreamSet::default() };
    Fold::new(Healing::new(&streams))
}

const VALIDATION: &str = "maestro:streams:automation:validation";
const SOURCE: &str = "import pytest\n\n\ndef test_total():\n    assert compute() == 3\n";

/// The last repair_result's `result`, parsed.
fn last_result(fold: &Fold) -> Value {
    let last = fold.published.iter().rev().find(|p| p["type"] == "repair_result").unwrap();
    serde_json::from_str(&last["result"]).unwrap()
}

fn start_at(fold: &mut Fold, ms: u64, project: &str) -> String {
    let payload = json!({"project_path": project}).to_string();
    let id = fold.entry(JOBS, ms, &[("type", "start_monitoring".into()), ("payload", payload)]).unwrap();
    maestro_schemas::ids::derived_id("orch", JOBS, id)
}

fn heal_payload(fold: &mut Fold, ms: u64, payload: Value) -> String {
    let id = fold.entry(HEALING, ms, &[("payload", payload.to_string())]).unwrap();
    maestro_schemas::ids::derived_id("repair", HEALING, id)
}

/// The engine's fact for the last read intent: the text, or the refusal.
fn answer_read(fold: &mut Fold, ms: u64, text: Result<&str, &str>) {
    let intent = fold.intents.last().unwrap().clone();
    assert_eq!(intent.kind, READ_FILE);
    let ask: Value = serde_json::from_slice(&intent.payload).unwrap();
    let mut fields: Vec<(&str, String)> = ask["reply_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let key: &str = match pair[0].as_str().unwrap() {
                "type" => "type",
                "repair_id" => "repair_id",
                _ => "file_path",
            };
            (key, pair[1].as_str().unwrap().to_string())
        })
        .collect();
    fields.push(("fact_id", intent.id.clone()));
    match text {
        Ok(text) => fields.push(("source", text.into())),
        Err(reason) => fields.push(("refused", reason.into())),
    }
    fold.entry(HEALING, ms, &fields).unwrap();
}

impl Steps for Fold {
    fn start(&mut self, ms: u64, config: Value) -> String {
        let payload = json!({"project_path": "/p", "config": config}).to_string();
        let id = self.entry(JOBS, ms, &[("type", "start_monitoring".into()), ("payload", payload)]).unwrap();
        maestro_schemas::ids::derived_id("orch", JOBS, id)
    }

    fn heal(&mut self, ms: u64, orchestrator: &str, error_type: &str, file: &str) -> String {
        let source = "import pytest\n\n\ndef test_total():\n    assert compute() == 3\n";
        let payload = json!({"orchestrator_id": orchestrator, "file_path": file, "source": source,
            "error_message": "AssertionError: assert 2 == 3", "error_type": error_type});
        let id = self.entry(HEALING, ms, &[("payload", payload.to_string())]).unwrap();
        maestro_schemas::ids::derived_id("repair", HEALING, id)
    }

    fn repair(&self, id: &str) -> Repair {
        serde_json::from_slice(&self.state[&repair_key(id)]).unwrap()
    }
}

#[test]
fn detection_confidence_follows_the_type_and_the_runner() {
    assert_eq!(detection_confidence("test_failure", "tests/test_a.py"), 0.85);
    assert_eq!(detection_confidence("test_failure", "tests/test_a.py::test_x"), 0.85);
    assert_eq!(detection_confidence("test_failure", "web/cart.test.ts"), 0.80);
    assert_eq!(detection_confidence("test_failure", "web/cart.spec.jsx::renders"), 0.80);
    assert_eq!(detection_confidence("build_error", "a.py"), 0.70);
    assert_eq!(detection_confidence("type_error", "a.py"), 0.75);
    assert_eq!(detection_confidence("lint_error", "a.js"), 0.90);
    assert_eq!(detection_confidence("import_error", "a.js"), 0.80);
}

#[test]
fn admission_at_the_threshold_edge() {
    let mut fold = fold_validating();
    let orch = fold.start(1_000, json!({"confidence_threshold": 0.85, "max_concurrent_repairs": 5}));
    let at_edge = fold.heal(2_000, &orch, "test_failure", "tests/test_a.py"); // 0.85 = threshold
    let below = fold.heal(3_000, &orch, "test_failure", "web/a.test.js"); // 0.80 < 0.85
    assert_eq!(fold.repair(&at_edge).status, RepairStatus::Validating);
    let refused = fold.repair(&below);
    assert_eq!(refused.status, RepairStatus::Skipped);
    assert_eq!(
        refused.reason.as_deref(),
        Some("detection confidence 0.80 of test_failure is below the orchestrator's threshold 0.85")
    );
    assert_eq!(refused.strategy, None, "a refused repair is never planned");
}

#[test]
fn a_clock_record_fails_only_what_is_past_its_deadline() {
    let mut fold = fold_validating();
    let orch = fold.start(1_000, json!({"max_concurrent_repairs": 1, "validation_timeout_seconds": 60}));
    let first = fold.heal(10_000, &orch, "test_failure", "t.py");
    let second = fold.heal(20_000, &orch, "test_failure", "t.py");
    assert_eq!(fold.repair(&first).deadline_ms, Some(70_000));
    fold.body(Body::Clock { time_ms: 69_999 }).unwrap();
    assert_eq!(fold.repair(&first).status, RepairStatus::Validating);
    assert_eq!(fold.repair(&second).status, RepairStatus::Pending);
    fold.body(Body::Clock { time_ms: 70_000 }).unwrap();
    assert_eq!(fold.repair(&first).status, RepairStatus::Failed);
    // The freed slot goes to the waiting repair at the clock's time, with a deadline from it.
    let started = fold.repair(&second);
    assert_eq!((started.status, started.deadline_ms), (RepairStatus::Validating, Some(130_000)));
    let last = fold.published.last().unwrap();
    assert!(last["result"].contains(&second) && last["timestamp"] == "1970-01-01T00:01:10.000000", "{last:?}");
    assert!(
        !fold.state.keys().any(|k| k.starts_with(&active_key(&orch, &first))),
        "the failed repair left the active set"
    );
}

#[test]
fn bad_commands_are_refused_with_their_reason_and_change_nothing() {
    let mut fold = fold();
    let zero = json!({"project_path": "/p", "config": {"max_concurrent_repairs": 0}}).to_string();
    let error = fold.entry(JOBS, 1, &[("type", "start_monitoring".into()), ("payload", zero)]).unwrap_err();
    assert!(error.contains("max_concurrent_repairs is 0"), "{error}");
    assert!(fold.state.is_empty() && fold.published.is_empty());
}

#[test]
fn stopping_an_unknown_orchestrator_answers_stopped_and_changes_nothing() {
    let mut fold = fold();
    let stop = json!({"orchestrator_id": "orch-nope"}).to_string();
    fold.entry(JOBS, 2, &[("type", "stop_monitoring".into()), ("payload", stop)]).unwrap();
    assert!(fold.state.is_empty());
    let answer = &fold.published[0];
    assert_eq!((answer["type"].as_str(), answer["status"].as_str()), ("status_update", "stopped"));
    assert_eq!(answer["orchestrator_id"], "orch-nope");
    assert_eq!(answer.len(), 4, "type, orchestrator_id, status, timestamp: {answer:?}");
}

#[test]
fn outcomes_and_facts_for_unknown_repairs_are_ignored_not_refused() {
    let mut fold = fold_validating();
    let fields = [("repair_id", "repair-nope".to_string()), ("passed", "true".into())];
    fold.entry(VALIDATION, 5, &fields).unwrap();
    let fact = [
        ("type", "source_read".to_string()),
        ("repair_id", "repair-nope".into()),
        ("fact_id", "read_file/repair-nope".into()),
        ("source", SOURCE.into()),
    ];
    fold.entry(HEALING, 6, &fact).unwrap();
    assert!(fold.state.is_empty() && fold.published.is_empty());
    let reasons: Vec<&str> = fold.ignored.iter().map(|(_, reason)| reason.as_str()).collect();
    assert_eq!(reasons, ["unknown_repair", "no_repair_reads_this_file"]);
}

#[test]
fn without_a_validation_stream_the_plan_is_final_and_frees_the_slot() {
    let mut fold = fold();
    let orch = fold.start(1_000, json!({"max_concurrent_repairs": 1}));
    let ids: Vec<String> = (0..4).map(|i| fold.heal(2_000 + i, &orch, "test_failure", "tests/test_a.py")).collect();
    for id in &ids {
        let repair = fold.repair(id);
        assert_eq!(repair.status, RepairStatus::Success, "{repair:?}");
        assert_eq!(repair.deadline_ms, None);
    }
    assert!(!fold.state.keys().any(|k| k.starts_with(b"a/") || k.starts_with(b"q/") || k.starts_with(b"d/")));
    let result = last_result(&fold);
    assert_eq!(result["status"], "success");
    assert_eq!(result["validation_passed"], false);
    assert_eq!(result["validation_outcome"], Value::Null);
}

#[test]
fn a_request_without_source_reads_its_file_and_continues_from_the_fact() {
    let mut fold = fold();
    let orch = start_at(&mut fold, 1_000, "/srv/shop/");
    // The REST ManualHealRequest: no orchestrator, no source; the message in error_details.
    let repair = heal_payload(
        &mut fold,
        2_000,
        json!({"error_type": "test_failure", "file_path": "/srv/shop/tests/test_cart.py",
               "error_details": {"error_message": "AssertionError: assert 2 == 3", "line_number": 5}}),
    );
    let waiting = fold.repair(&repair);
    assert_eq!((waiting.orchestrator_id.as_str(), waiting.status), (orch.as_str(), RepairStatus::Analyzing));
    assert_eq!(waiting.error.message, "AssertionError: assert 2 == 3");
    let ask: Value = serde_json::from_slice(&fold.intents[0].payload).unwrap();
    assert_eq!(
        (ask["root"].as_str(), ask["path"].as_str()),
        (Some("/srv/shop/"), Some("/srv/shop/tests/test_cart.py"))
    );
    assert!(fold.published.len() == 1, "no answer before the file is read: {:?}", fold.published);
    // A fact of another intent (a forged fact_id) changes nothing.
    let forged = [
        ("type", "source_read".to_string()),
        ("repair_id", repair.clone()),
        ("fact_id", "read_file/other".into()),
        ("source", "x = 1\n".into()),
    ];
    fold.entry(HEALING, 2_500, &forged).unwrap();
    assert_eq!(fold.repair(&repair).status, RepairStatus::Analyzing);
    answer_read(&mut fold, 3_000, Ok(SOURCE));
    let done = fold.repair(&repair);
    assert_eq!((done.status, done.strategy.as_deref()), (RepairStatus::Success, Some("assertion_update")));
    let result = last_result(&fold);
    assert_eq!(result["healing_result"]["original_code"], SOURCE);
    assert_eq!(result["healing_result"]["strategy_used"], "assertion_update");
    assert_eq!(result["error_event"]["context"]["line_number"], 5);
    assert_eq!(result["error_event"]["file_path"], "/srv/shop/tests/test_cart.py");
    assert_eq!(result["fix_applied"], false);
    // A repeated fact is ignored.
    answer_read(&mut fold, 3_500, Ok("y = 2\n"));
    assert_eq!(fold.repair(&repair).transitions, done.transitions);
}

#[test]
fn a_refused_read_fails_the_repair_with_the_reason_and_frees_the_slot() {
    let mut fold = fold();
    let orch = start_at(&mut fold, 1_000, "/srv/shop");
    let first = heal_payload(
        &mut fold,
        2_000,
        json!({"orchestrator_id": orch, "file_path": "../etc/passwd",
        "error_message": "AssertionError"}),
    );
    answer_read(&mut fold, 2_100, Err("../etc/passwd escapes the project /srv/shop"));
    let failed = fold.repair(&first);
    assert_eq!(failed.status, RepairStatus::Failed);
    assert_eq!(
        failed.reason.as_deref(),
        Some("could not read ../etc/passwd: ../etc/passwd escapes the project /srv/shop")
    );
    assert_eq!(last_result(&fold)["error_message"], failed.reason.unwrap().as_str());
    assert!(!fold.state.keys().any(|k| k.starts_with(b"a/")));
}

#[test]
fn requests_without_an_orchestrator_go_to_the_project_that_holds_the_file() {
    let mut fold = fold();
    let shop = start_at(&mut fold, 1_000, "/srv/shop");
    let shop_api = start_at(&mut fold, 1_001, "/srv/shop/api");
    start_at(&mut fold, 1_002, "/srv/shopfront");
    let owner = |fold: &mut Fold, ms: u64, file: &str| {
        let id = heal_payload(fold, ms, json!({"file_path": file, "error_message": "AssertionError"}));
        fold.repair(&id).orchestrator_id
    };
    assert_eq!(owner(&mut fold, 2_000, "/srv/shop/tests/test_a.py"), shop);
    assert_eq!(owner(&mut fold, 2_001, "/srv/shop/api/tests/test_b.py"), shop_api);
    assert_eq!(owner(&mut fold, 2_002, "/srv/elsewhere/test_c.py"), DEFAULT_ORCHESTRATOR);
    // Whole path components: /srv/shopping is not inside /srv/shop.
    assert_eq!(owner(&mut fold, 2_004, "/srv/shopping/tests/test_e.py"), DEFAULT_ORCHESTRATOR);
    // Relative, with three running projects: the default one, which has no project to read in.
    assert_eq!(owner(&mut fold, 2_003, "tests/test_d.py"), DEFAULT_ORCHESTRATOR);
    assert!(last_result(&fold)["error_message"].as_str().unwrap().contains("has no project_path"));
}

#[test]
fn a_relative_path_goes_to_the_only_running_orchestrator() {
    let mut fold = fold();
    let only = start_at(&mut fold, 1_000, "/srv/shop");
    // The healer README example: test_file, no file_path.
    let id = heal_payload(
        &mut fold,
        2_000,
        json!({"error_type": "test_failure", "error_message": "ImportError: No module named 'requests'",
               "stack_trace": "Traceback...", "test_file": "tests/test_api.py"}),
    );
    let repair = fold.repair(&id);
    assert_eq!((repair.orchestrator_id, repair.error.file.as_deref()), (only, Some("tests/test_api.py")));
}

#[test]
fn an_error_event_dict_is_judged_on_its_own_confidence_and_answered_with_it() {
    let mut fold = fold();
    let orch = start_at(&mut fold, 1_000, "/srv/shop");
    let event = json!({"error_id": "pytest_-12345", "error_type": "test_failure", "severity": "high",
        "file_path": "tests/test_a.py", "line_number": 12, "stack_trace": null,
        "error_message": "Test failed: test_a", "context": {"test_name": "test_a"},
        "timestamp": "2026-12-07T10:00:00.123456", "healable": true, "confidence": 0.85,
        "orchestrator_id": orch});
    let id = heal_payload(&mut fold, 2_000, event.clone());
    answer_read(&mut fold, 2_100, Ok(SOURCE));
    let result = last_result(&fold);
    let mut expected = event;
    expected.as_object_mut().unwrap().remove("orchestrator_id");
    assert_eq!(result["error_event"], expected);
    assert_eq!(result["repair_id"], id.as_str());
    // Below the threshold by its own confidence: skipped, never read.
    let low = heal_payload(
        &mut fold,
        3_000,
        json!({"orchestrator_id": orch, "error_type": "test_failure",
        "file_path": "tests/test_a.py", "error_message": "x", "confidence": 0.5, "healable": true}),
    );
    assert_eq!(fold.repair(&low).status, RepairStatus::Skipped);
    assert_eq!(fold.intents.len(), 1);
}

#[test]
fn a_read_that_never_answers_times_out_and_frees_the_slot() {
    let mut fold = fold();
    let orch = start_at(&mut fold, 1_000, "/srv/shop");
    let lost = heal_payload(
        &mut fold,
        2_000,
        json!({"orchestrator_id": orch, "file_path": "tests/test_a.py",
        "error_message": "AssertionError"}),
    );
    assert_eq!(fold.repair(&lost).deadline_ms, Some(2_000 + READ_TIMEOUT_MS));
    fold.clock(2_000 + READ_TIMEOUT_MS - 1);
    assert_eq!(fold.repair(&lost).status, RepairStatus::Analyzing);
    fold.clock(2_000 + READ_TIMEOUT_MS);
    let failed = fold.repair(&lost);
    assert_eq!(failed.status, RepairStatus::Failed);
    assert_eq!(failed.reason.as_deref(), Some("timed out: the file was not read within 300000 ms"));
    assert!(!fold.state.keys().any(|k| k.starts_with(b"a/") || k.starts_with(b"d/")));
    // A fact that comes after the time-out changes nothing.
    answer_read(&mut fold, 2_000 + READ_TIMEOUT_MS + 1, Ok(SOURCE));
    assert_eq!(fold.repair(&lost).transitions, failed.transitions);
}
