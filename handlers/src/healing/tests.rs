//! The healing handler folded over records in memory: admission edges, detection confidence
//! by runner, clock records before and after a deadline, and the state a log gives however it
//! is cut into events.

use super::handler::{Healing, detection_confidence};
use super::model::*;
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

fn fold() -> Fold {
    Fold::new(Healing::new(&StreamSet::default()))
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
    let mut fold = fold();
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
    let mut fold = fold();
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
    let stop = json!({"orchestrator_id": "orch-nope"}).to_string();
    let error = fold.entry(JOBS, 2, &[("type", "stop_monitoring".into()), ("payload", stop)]).unwrap_err();
    assert!(error.contains("no orchestrator orch-nope is registered"), "{error}");
    assert!(fold.state.is_empty() && fold.published.is_empty());
}
