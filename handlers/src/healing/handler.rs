//! The healing handler: orchestrators, heal requests, error reports, validation outcomes and
//! clock records in; `status_update` and `repair_result` entries on `automation:results` out.
//! All state is the `healing` projection (keys in [`super::model`]).

use super::lifecycle::Session;
use super::model::*;
use crate::contract::{Decision, Event, Handler, HandlerError, StateView};
use maestro_schemas::ids::derived_id;
use maestro_schemas::proto::healing::{self as he, automation_job::Job};
use maestro_schemas::{Body, Entry, Event as Typed};
use std::collections::BTreeMap;

/// The projection's name.
pub const NAME: &str = "healing";

/// The handler, with the stream its outcomes go to.
#[derive(Clone, Debug)]
pub struct Healing {
    pub results: String,
}

impl Healing {
    pub fn new(streams: &maestro_schemas::StreamSet) -> Healing {
        Healing { results: streams.automation_results.clone() }
    }
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
    /// waiting for their outcome or time-out. Stopping a stopped one answers `stopped` again.
    fn stop_monitoring(&self, s: &mut Session<'_>, id: &str, ms: u64) -> Result<(), HandlerError> {
        if id == DEFAULT_ORCHESTRATOR {
            return Err(HandlerError::Invalid("the default orchestrator cannot be stopped".into()));
        }
        let mut orchestrator: Orchestrator = s
            .load(&orchestrator_key(id))
            .ok_or_else(|| HandlerError::Invalid(format!("stop_monitoring: no orchestrator {id} is registered")))?;
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
        let path = heal.file_path.clone().or_else(|| heal.test_id.clone()).unwrap_or_default();
        let failure = Failure {
            error_type: heal.error_type.clone(),
            message: heal.error_message.clone(),
            file: heal.file_path.clone(),
            line: heal.line_number,
            test_id: heal.test_id.clone(),
            severity: extra_text(&heal.extra, "severity").unwrap_or_else(|| "unspecified".into()),
        };
        let repair = Repair {
            repair_id: derived_id("repair", &entry.stream, entry.id),
            orchestrator_id: heal.orchestrator_id.clone().unwrap_or_else(|| DEFAULT_ORCHESTRATOR.into()),
            detection_confidence: detection_confidence(&heal.error_type, &path),
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
        s.admit(repair, heal.source.clone(), &arrival, entry.id.ms);
    }

    /// An error report carries no test source, so it opens no repair: it is counted as
    /// detected, against the running orchestrator whose project holds the file (the longest
    /// matching `project_path`), else the default one.
    fn error_report(&self, s: &mut Session<'_>, report: &he::ErrorReport, entry: &Entry) {
        let owner =
            s.tx.scan(b"o/")
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice::<Orchestrator>(&v).ok())
                .filter(|o| o.running() && !o.project_path.is_empty() && report.file_path.starts_with(&o.project_path))
                .max_by_key(|o| o.project_path.len())
                .map_or_else(|| DEFAULT_ORCHESTRATOR.to_string(), |o| o.orchestrator_id);
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

    fn validation(&self, s: &mut Session<'_>, outcome: &he::ValidationOutcome, ms: u64) -> Result<(), HandlerError> {
        let id = &outcome.repair_id;
        let mut repair: Repair = s
            .load(&repair_key(id))
            .ok_or_else(|| HandlerError::Invalid(format!("validation outcome: no repair {id}")))?;
        if repair.status != RepairStatus::Validating {
            return Err(HandlerError::Invalid(format!(
                "validation outcome for repair {id}, which is {} and not validating; ignored",
                repair.status.name()
            )));
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
        Ok(())
    }
}

impl Handler for Healing {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> Result<Decision, HandlerError> {
        let mut s = Session::new(state, &self.results);
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
                    Typed::ValidationOutcome(outcome) => self.validation(&mut s, outcome, ms)?,
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(Decision { outputs: s.outputs, changes: s.tx.into_changes(), ..Decision::default() })
    }
}
