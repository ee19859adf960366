//! The healing handler: orchestrators, heal requests, error reports, validation outcomes and
//! clock records in; `status_update` and `repair_result` entries on `automation:results` out.
//! All state is the `healing` projection (keys in [`super::model`]).

use super::lifecycle::{Session, Streams};
use super::model::*;
use crate::contract::{Decision, Event, Handler, HandlerError, StateView};
use maestro_schemas::ids::derived_id;
use maestro_schemas::proto::healing::{self as he, automation_job::Job};
use maestro_schemas::{Body, Entry, Event as Typed};
use std::collections::BTreeMap;

/// The projection's name.
pub const NAME: &str = "healing";

/// The handler, with the streams it writes to and whether validation outcomes can arrive (a
/// validation stream is configured: the stream set is configuration recorded in the log, so a
/// replay decides the same).
#[derive(Clone, Debug)]
pub struct Healing {
    pub streams: Streams,
}

impl Healing {
    pub fn new(streams: &maestro_schemas::StreamSet) -> Healing {
        Healing {
            streams: Streams {
                results: streams.automation_results.clone(),
                healing: streams.automation_healing.clone(),
                validation: streams.automation_validation.is_some(),
            },
        }
    }
}

/// The file a request names: its `file_path`, else the file part of its pytest-style `test_id`.
fn file_of(heal: &he::HealRequest) -> Option<String> {
    heal.file_path.clone().filter(|f| !f.is_empty()).or_else(|| {
        let test = heal.test_id.as_deref()?;
        let file = test.split("::").next().unwrap_or(test);
        (!file.is_empty()).then(|| file.to_string())
    })
}

/// The orchestrator of a request or report that names none. An absolute path goes to the
/// running orchestrator whose project holds it (the longest `project_path`); a relative one to
/// the only running orchestrator with a project, when there is exactly one; anything else to
/// the default orchestrator.
fn owner_of(s: &Session<'_>, file: Option<&str>) -> String {
    let running: Vec<Orchestrator> =
        s.tx.scan(b"o/")
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Orchestrator>(&v).ok())
            .filter(|o| o.running() && !o.project_path.is_empty())
            .collect();
    let owner = match file {
        Some(file) if file.starts_with('/') => {
            running.into_iter().filter(|o| o.holds(file)).max_by_key(|o| o.project_path.len())
        }
        Some(_) if running.len() == 1 => running.into_iter().next(),
        _ => None,
    };
    owner.map_or_else(|| DEFAULT_ORCHESTRATOR.to_string(), |o| o.orchestrator_id)
}

/// A kept payload key's JSON value.
fn extra_value(extra: &BTreeMap<String, String>, key: &str) -> Option<serde_json::Value> {
    serde_json::from_str(extra.get(key)?).ok()
}

/// The old `ErrorEvent` (seed contract 3.4) of a request: an `ErrorEvent` sent as a dict
/// answers with its own keys; other shapes get the REST heal's values (severity `medium` when
/// the request gives none the contract knows, `healable` true, the detection confidence, the
/// `error_details` as context).
fn error_event(heal: &he::HealRequest, file: Option<&str>, id: &str, confidence: f64, ms: u64) -> serde_json::Value {
    let text = |key: &str| extra_value(&heal.extra, key).and_then(|v| v.as_str().map(str::to_string));
    let severity = text("severity")
        .filter(|s| maestro_schemas::event::SEVERITIES.contains(&s.as_str()))
        .unwrap_or("medium".into());
    let context = extra_value(&heal.extra, "context")
        .filter(serde_json::Value::is_object)
        .or_else(|| extra_value(&heal.extra, "error_details").filter(serde_json::Value::is_object))
        .unwrap_or_else(|| serde_json::json!({}));
    serde_json::json!({
        "error_id": text("error_id").unwrap_or_else(|| id.to_string()),
        "error_type": heal.error_type,
        "severity": severity,
        "file_path": file.unwrap_or_default(),
        "line_number": heal.line_number,
        "stack_trace": heal.stack_trace,
        "error_message": heal.error_message,
        "context": context,
        "timestamp": text("timestamp").unwrap_or_else(|| maestro_schemas::ids::naive_iso(ms)),
        "healable": extra_value(&heal.extra, "healable").and_then(|v| v.as_bool()).unwrap_or(true),
        "confidence": confidence,
    })
}

/// Whether a failing test runs under a JavaScript runner, judged by its file or test id.
fn is_javascript(path: &str) -> bool {
    let path = path.split("::").next().unwrap_or(path);
    [".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs"].iter().any(|ext| path.ends_with(ext))
}

/// The detection confidence of an error type (domain.md section 3). The spec gives none for
/// `runtime_error`, `import_error` and `dependency_error`; they surface as failing tests, so
/// the engine gives them the test-failure confidence of their runner.
pub fn detection_confidence(error_type: &str, path: &str) -> f64 {
    match error_type {
        "build_error" => 0.70,
        "type_error" => 0.75,
        "lint_error" => 0.90,
        _ if is_javascript(path) => 0.80,
        _ => 0.85,
    }
}

/// A value of the payload keys this version does not model (kept as compact JSON text).
fn extra_text(extra: &BTreeMap<String, String>, key: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(extra.get(key)?).ok()?.as_str().map(str::to_string)
}

fn settings_of(start: &he::StartMonitoring) -> Result<Settings, HandlerError> {
    let config = start.config.unwrap_or_default();
    let defaults = Settings::default();
    let timeout = match start.extra.get("config.validation_timeout_seconds") {
        None => defaults.validation_timeout_ms,
        Some(text) => match text.parse::<f64>() {
            Ok(seconds) if seconds > 0.0 && seconds.is_finite() => (seconds * 1000.0).round() as u64,
            _ => {
                return Err(HandlerError::Invalid(format!(
                    "config.validation_timeout_seconds is {text}, not a positive number of seconds"
                )));
            }
        },
    };
    let settings = Settings {
        auto_fix: config.auto_fix.unwrap_or(defaults.auto_fix),
        require_approval: config.require_approval.unwrap_or(defaults.require_approval),
        confidence_threshold: config.confidence_threshold.unwrap_or(defaults.confidence_threshold),
        auto_commit: config.auto_commit.unwrap_or(defaults.auto_commit),
        create_pr: config.create_pr.unwrap_or(defaults.create_pr),
        max_concurrent_repairs: config.max_concurrent_repairs.unwrap_or(defaults.max_concurrent_repairs),
        validation_timeout_ms: timeout,
        max_queued_repairs: match start.extra.get("config.max_queued_repairs") {
            None => defaults.max_queued_repairs,
            Some(text) => text.parse().map_err(|_| {
                HandlerError::Invalid(format!("config.max_queued_repairs is {text}, not a whole number"))
            })?,
        },
    };
    if settings.max_concurrent_repairs == 0 {
        return Err(HandlerError::Invalid("config.max_concurrent_repairs is 0: no repair could ever start".into()));
    }
    Ok(settings)
}

impl Healing {
    fn start_monitoring(
        &self,
        s: &mut Session<'_>,
        start: &he::StartMonitoring,
        entry: &Entry,
    ) -> Result<(), HandlerError> {
        let orchestrator = Orchestrator {
            orchestrator_id: derived_id("orch", &entry.stream, entry.id),
            project_path: start.project_path.clone(),
            settings: settings_of(start)?,
            status: "started".into(),
            started_ms: entry.id.ms,
            stopped_ms: None,
        };
        s.save(orchestrator_key(&orchestrator.orchestrator_id), &orchestrator);
        s.status_update(&orchestrator.orchestrator_id, "started", entry.id.ms);
        Ok(())
    }

    /// Stops an orchestrator: its queued repairs are skipped; repairs already validating keep
    /// waiting for their outcome or time-out. Stopping a stopped one answers `stopped` again,
    /// and so does stopping an unknown one: whatever the id named is not running, and a
    /// `status_update` is the only answer the old consumers parse (the old service said
    /// nothing at all, which leaves a caller waiting).
    fn stop_monitoring(&self, s: &mut Session<'_>, id: &str, ms: u64) -> Result<(), HandlerError> {
        if id == DEFAULT_ORCHESTRATOR {
            return Err(HandlerError::Invalid("the default orchestrator cannot be stopped".into()));
        }
        let Some(mut orchestrator) = s.load::<Orchestrator>(&orchestrator_key(id)) else {
            s.status_update(id, "stopped", ms);
            return Ok(());
        };
        if orchestrator.running() {
            orchestrator.status = "stopped".into();
            orchestrator.stopped_ms = Some(ms);
            s.save(orchestrator_key(id), &orchestrator);
            s.drain_queue(id, ms);
        }
        s.status_update(id, "stopped", ms);
        Ok(())
    }

    fn heal(&self, s: &mut Session<'_>, heal: &he::HealRequest, entry: &Entry) {
        let file = file_of(heal);
        let path = file.clone().or_else(|| heal.test_id.clone()).unwrap_or_default();
        let repair_id = derived_id("repair", &entry.stream, entry.id);
        // An ErrorEvent brings the detector's confidence and healability, which admission
        // judges as the old orchestrator did; other shapes get the type's confidence.
        let detection = extra_value(&heal.extra, "confidence")
            .and_then(|v| v.as_f64())
            .filter(|c| c.is_finite())
            .unwrap_or_else(|| detection_confidence(&heal.error_type, &path));
        let failure = Failure {
            error_type: heal.error_type.clone(),
            message: heal.error_message.clone(),
            file: file.clone(),
            line: heal.line_number,
            test_id: heal.test_id.clone(),
            severity: extra_text(&heal.extra, "severity").unwrap_or_else(|| "unspecified".into()),
        };
        let orchestrator_id = match heal.orchestrator_id.clone().filter(|o| !o.is_empty()) {
            Some(id) => id,
            None => owner_of(s, file.as_deref()),
        };
        let repair = Repair {
            error_event: error_event(heal, file.as_deref(), &repair_id, detection, entry.id.ms),
            repair_id,
            orchestrator_id,
            detection_confidence: detection,
            error: failure.clone(),
            status: RepairStatus::Pending,
            failure_class: None,
            strategy: None,
            healed_code: None,
            confidence_score: None,
            similarity: None,
            decision: None,
            validation_passed: None,
            reason: None,
            source: None,
            reading: None,
            syntax_valid: None,
            fix_success: None,
            stream: entry.stream.clone(),
            entry_id: entry.id.to_string(),
            requested_ms: entry.id.ms,
            deadline_ms: None,
            transitions: vec![(RepairStatus::Pending, entry.id.ms)],
        };
        let seen = ErrorSeen {
            message: None,
            file: None,
            line: None,
            orchestrator_id: repair.orchestrator_id.clone(),
            repair_id: Some(repair.repair_id.clone()),
            time_ms: entry.id.ms,
        };
        let arrival = arrival(&entry.stream, entry.id);
        s.note_error(&failure, seen, &arrival);
        if extra_value(&heal.extra, "healable").and_then(|v| v.as_bool()) == Some(false) {
            let reason = "the error event says it is not healable".to_string();
            return s.finish(repair, RepairStatus::Skipped, Some(reason), entry.id.ms);
        }
        s.admit(repair, heal.source.clone(), &arrival, entry.id.ms);
    }

    /// An error report carries no test source, so it opens no repair: it is counted as
    /// detected, against the running orchestrator whose project holds the file (the longest
    /// matching `project_path`), else the default one.
    fn error_report(&self, s: &mut Session<'_>, report: &he::ErrorReport, entry: &Entry) {
        let owner = owner_of(s, Some(report.file_path.as_str()));
        let failure = Failure {
            error_type: report.error_type.clone(),
            message: report.error_message.clone(),
            file: Some(report.file_path.clone()),
            line: report.line_number,
            test_id: None,
            severity: report.severity.clone().unwrap_or_else(|| "unspecified".into()),
        };
        let seen = ErrorSeen {
            message: Some(failure.message.chars().take(500).collect()),
            file: failure.file.clone(),
            line: failure.line,
            orchestrator_id: owner,
            repair_id: None,
            time_ms: entry.id.ms,
        };
        s.note_error(&failure, seen, &arrival(&entry.stream, entry.id));
    }

    /// Moves a validating repair to its final state. An outcome for an unknown repair, or for
    /// one that is not validating (a repeat, or one that timed out first), is valid and
    /// changes nothing: the reason is returned.
    fn validation(&self, s: &mut Session<'_>, outcome: &he::ValidationOutcome, ms: u64) -> Option<&'static str> {
        let id = &outcome.repair_id;
        let Some(mut repair) = s.load_repair(id) else { return Some("unknown_repair") };
        if repair.status != RepairStatus::Validating {
            return Some("repair_not_validating");
        }
        repair.validation_passed = Some(outcome.passed);
        let (status, reason) = if outcome.passed {
            (RepairStatus::Success, None)
        } else {
            let said = outcome.message.clone().unwrap_or_else(|| "no message".into());
            (RepairStatus::Failed, Some(format!("validation failed: {said}")))
        };
        let orchestrator_id = repair.orchestrator_id.clone();
        s.finish(repair, status, reason, ms);
        s.fill_slots(&orchestrator_id, ms);
        None
    }
}

impl Handler for Healing {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> Result<Decision, HandlerError> {
        let mut s = Session::new(state, &self.streams);
        let mut ignored = None;
        match (&event.record.body, event.typed.map(|t| &t.event)) {
            (Body::Clock { time_ms }, _) => s.expire(*time_ms),
            (Body::Entry(entry), Some(typed)) => {
                let ms = entry.id.ms;
                match typed {
                    Typed::AutomationJob(job) => match &job.job {
                        Some(Job::StartMonitoring(start)) => self.start_monitoring(&mut s, start, entry)?,
                        Some(Job::StopMonitoring(stop)) => self.stop_monitoring(&mut s, &stop.orchestrator_id, ms)?,
                        Some(Job::HealTestFailure(heal)) => self.heal(&mut s, heal, entry),
                        None => {}
                    },
                    Typed::HealRequest(heal) => self.heal(&mut s, heal, entry),
                    Typed::ErrorReport(report) => self.error_report(&mut s, report, entry),
                    Typed::ValidationOutcome(outcome) => ignored = self.validation(&mut s, outcome, ms),
                    Typed::SourceRead(read) if !s.source_read(read, ms) => {
                        ignored = Some("no_repair_reads_this_file");
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        let (outputs, intents, changes) = s.into_parts();
        Ok(Decision { outputs, intents, changes, ignored: ignored.map(str::to_string) })
    }
}
