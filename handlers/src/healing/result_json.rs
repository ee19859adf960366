//! The `result` JSON of a `repair_result` entry: the engine's keys and the old `RepairResult`'s
//! (seed contract 3.5) with their old types. Where the two share a key (`validation_passed`,
//! `confidence_score`) the old type wins, a bool and a float, and the engine's tri-state
//! outcome is `validation_outcome`.
//!
//! Written straight from the repair, borrowing its fields: the key order is the contract's,
//! and the source and healed texts, which are nearly all of the bytes, are escaped once
//! ([`Text`]) and copied into the places they appear.

use super::model::{Repair, Text};
use maestro_schemas::ids::{derived_uuid, naive_iso};
use serde::Serialize;

#[derive(Serialize)]
struct ResultJson<'a> {
    repair_id: &'a str,
    error: ErrorJson<'a>,
    error_event: &'a serde_json::Value,
    status: &'static str,
    strategy: &'a Option<String>,
    healing_result: Option<HealingResult<'a>>,
    healed_code: &'a Option<Text>,
    confidence_score: f64,
    decision: &'a Option<String>,
    validation_passed: bool,
    validation_outcome: Option<bool>,
    fix_applied: bool,
    execution_time: f64,
    commit_sha: Option<()>,
    pr_url: Option<()>,
    error_message: &'a Option<String>,
    failure_class: &'a Option<String>,
    reason: &'a Option<String>,
    timestamp: String,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "type")]
    error_type: &'a str,
    message: &'a str,
    file: &'a Option<String>,
    line: Option<i64>,
}

/// The old `HealingResult`, present when a strategy produced a healed source.
#[derive(Serialize)]
struct HealingResult<'a> {
    healing_id: String,
    test_id: String,
    strategy_used: &'a str,
    success: bool,
    original_code: &'a Text,
    healed_code: &'a Text,
    confidence_score: f64,
    validation_results: ValidationResults<'a>,
    execution_time: f64,
    created_at: f64,
}

#[derive(Serialize)]
struct ValidationResults<'a> {
    success: bool,
    syntax_valid: bool,
    semantic_score: f64,
    confidence: f64,
    execution_time: f64,
    validation_details: ValidationDetails<'a>,
}

#[derive(Serialize)]
struct ValidationDetails<'a> {
    failure_class: &'a Option<String>,
    decision: &'a Option<String>,
    similarity: Option<f64>,
}

/// The `result` of a repair's `repair_result` at log time `ms`.
pub fn result_json(repair: &Repair, ms: u64) -> String {
    let confidence = repair.confidence_score.unwrap_or(repair.detection_confidence);
    let empty = Text::default();
    let healing_result = match (&repair.strategy, &repair.healed_code) {
        (Some(strategy), Some(healed)) => Some(HealingResult {
            healing_id: derived_uuid("heal", &repair.repair_id),
            test_id: repair.error.test_id.clone().unwrap_or_else(|| derived_uuid("test", &repair.repair_id)),
            strategy_used: strategy,
            success: repair.fix_success.unwrap_or(false),
            original_code: repair.source.as_ref().unwrap_or(&empty),
            healed_code: healed,
            confidence_score: confidence,
            validation_results: ValidationResults {
                success: repair.fix_success.unwrap_or(false),
                syntax_valid: repair.syntax_valid.unwrap_or(false),
                semantic_score: repair.similarity.unwrap_or(0.0),
                confidence,
                execution_time: 0.0,
                validation_details: ValidationDetails {
                    failure_class: &repair.failure_class,
                    decision: &repair.decision,
                    similarity: repair.similarity,
                },
            },
            execution_time: 0.0,
            created_at: repair.requested_ms as f64 / 1000.0,
        }),
        _ => None,
    };
    let result = ResultJson {
        repair_id: &repair.repair_id,
        error: ErrorJson {
            error_type: &repair.error.error_type,
            message: &repair.error.message,
            file: &repair.error.file,
            line: repair.error.line,
        },
        error_event: &repair.error_event,
        status: repair.status.name(),
        strategy: &repair.strategy,
        healing_result,
        healed_code: &repair.healed_code,
        confidence_score: confidence,
        decision: &repair.decision,
        validation_passed: repair.validation_passed == Some(true),
        validation_outcome: repair.validation_passed,
        fix_applied: false,
        execution_time: ms.saturating_sub(repair.requested_ms) as f64 / 1000.0,
        commit_sha: None,
        pr_url: None,
        error_message: &repair.reason,
        failure_class: &repair.failure_class,
        reason: &repair.reason,
        timestamp: naive_iso(ms),
    };
    // Serialising these plain structs into a string cannot fail.
    serde_json::to_string(&result).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healing::model::{Failure, RepairStatus};
    use serde_json::json;

    /// The `result` as the contract first wrote it, through a `serde_json::Value`: the reference
    /// the direct writer must match byte for byte.
    fn through_a_value(repair: &Repair, ms: u64) -> String {
        let confidence = repair.confidence_score.unwrap_or(repair.detection_confidence);
        let healing_result = match (&repair.strategy, &repair.healed_code) {
            (Some(strategy), Some(healed)) => json!({
                "healing_id": derived_uuid("heal", &repair.repair_id),
                "test_id": repair.error.test_id.clone()
                    .unwrap_or_else(|| derived_uuid("test", &repair.repair_id)),
                "strategy_used": strategy,
                "success": repair.fix_success.unwrap_or(false),
                "original_code": repair.source.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default(),
                "healed_code": healed.as_str(),
                "confidence_score": confidence,
                "validation_results": {
                    "success": repair.fix_success.unwrap_or(false),
                    "syntax_valid": repair.syntax_valid.unwrap_or(false),
                    "semantic_score": repair.similarity.unwrap_or(0.0),
                    "confidence": confidence,
                    "execution_time": 0.0,
                    "validation_details": {
                        "failure_class": repair.failure_class,
                        "decision": repair.decision,
                        "similarity": repair.similarity,
                    },
                },
                "execution_time": 0.0,
                "created_at": repair.requested_ms as f64 / 1000.0,
            }),
            _ => serde_json::Value::Null,
        };
        json!({
            "repair_id": repair.repair_id,
            "error": {
                "type": repair.error.error_type,
                "message": repair.error.message,
                "file": repair.error.file,
                "line": repair.error.line,
            },
            "error_event": repair.error_event,
            "status": repair.status.name(),
            "strategy": repair.strategy,
            "healing_result": healing_result,
            "healed_code": repair.healed_code.as_ref().map(Text::as_str),
            "confidence_score": confidence,
            "decision": repair.decision,
            "validation_passed": repair.validation_passed == Some(true),
            "validation_outcome": repair.validation_passed,
            "fix_applied": false,
            "execution_time": ms.saturating_sub(repair.requested_ms) as f64 / 1000.0,
            "commit_sha": null,
            "pr_url": null,
            "error_message": repair.reason,
            "failure_class": repair.failure_class,
            "reason": repair.reason,
            "timestamp": naive_iso(ms),
        })
        .to_string()
    }

    const TEXTS: [&str; 7] = [
        "",
        "import pytest\n\n\ndef test_a():\n    assert f\"{x}\" == '\\n'\n",
        "tab\there \"quoted\" back\\slash \u{1}\u{1f} del\u{7f} \u{2028}\u{2029}",
        "caf\u{e9} \u{1f600} \u{fffd}",
        "\r\n\r\n",
        "</script>",
        "a",
    ];

    fn repair(i: usize) -> Repair {
        let text = |k: usize| TEXTS[(i + k) % TEXTS.len()].to_string();
        let some = |k: usize| (i >> k) & 1 == 1;
        let floats = [0.0, -0.0, 1.0, 0.7 + 0.3 * (2.0 / 3.0), 1e-300, f64::NAN, f64::INFINITY, 0.85];
        Repair {
            repair_id: format!("repair-{i}-{}", text(0)),
            orchestrator_id: "orch-1".into(),
            error: Failure {
                error_type: text(1),
                message: text(2),
                file: some(0).then(|| text(3)),
                line: some(1).then_some(i as i64 - 3),
                test_id: some(2).then(|| text(4)),
                severity: "high".into(),
            },
            status: [RepairStatus::Success, RepairStatus::Failed, RepairStatus::Skipped, RepairStatus::Validating]
                [i % 4],
            detection_confidence: floats[i % floats.len()],
            failure_class: some(3).then(|| "assertion_failure".into()),
            strategy: some(4).then(|| "assertion_update".into()),
            healed_code: some(5).then(|| Text::new(text(5))),
            confidence_score: some(6).then(|| floats[(i / 3) % floats.len()]),
            similarity: some(7).then(|| floats[(i / 5) % floats.len()]),
            decision: some(8).then(|| "apply".into()),
            validation_passed: [None, Some(true), Some(false)][i % 3],
            reason: some(9).then(|| text(6)),
            source: some(10).then(|| Text::new(text(0))),
            reading: None,
            error_event: json!({"error_id": text(1), "context": {"k": [1, 2.5, null, text(2)]}}),
            syntax_valid: [None, Some(true), Some(false)][(i / 2) % 3],
            fix_success: [None, Some(true), Some(false)][(i / 7) % 3],
            stream: "s".into(),
            entry_id: "1-0".into(),
            requested_ms: (i as u64) * 997,
            deadline_ms: None,
            transitions: vec![(RepairStatus::Pending, 1)],
        }
    }

    /// Every combination of present and absent fields, odd floats and texts that need escaping:
    /// the direct writer answers what the `Value` did, byte for byte, and so does a second
    /// serialisation (the texts escaped once, then reused).
    #[test]
    fn the_direct_writer_matches_the_value_it_replaced() {
        for i in 0..1 << 11 {
            let repair = repair(i);
            let ms = 5_000 + i as u64;
            let expected = through_a_value(&repair, ms);
            assert_eq!(result_json(&repair, ms), expected, "repair {i}: {repair:?}");
            assert_eq!(result_json(&repair, ms), expected, "repair {i}, texts escaped already");
        }
    }
}
