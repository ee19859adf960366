//! The repair lifecycle over the healing projection: admission, the wait queue, planning,
//! validation outcomes and time-outs, with the statistics they move.
//!
//! `pending -> analyzing -> healing -> validating -> success | failed`, or `skipped`. A repair
//! holds one of its orchestrator's `max_concurrent_repairs` slots only while it waits for an
//! answer some source will give: the text of its file (the engine's source-read fact) and,
//! when a validation stream is configured, its validation outcome. Without one the plan is the
//! final answer. The rest wait in arrival order. Every repair gets one `repair_result` when its
//! plan is decided and, when it waits for validation, one more at its final state.

use super::model::*;
use super::result_json::result_json;
use crate::contract::{Change, Intent, Output, Overlay, StateView};
use maestro_schemas::encode::to_fields;
use maestro_schemas::ids::naive_iso;
use maestro_schemas::proto::healing::{AutomationResult, OrchestratorStatus, RepairResult, automation_result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeMap;

/// One event's work: the state with this event's writes laid over it, and the entries to
/// publish on `automation:results`.
#[derive(Debug)]
pub struct Session<'a> {
    pub tx: Overlay<'a>,
    pub outputs: Vec<Output>,
    pub intents: Vec<Intent>,
    streams: &'a Streams,
    /// Repairs saved by this event, by id, stored at its end ([`Session::into_parts`]).
    repairs: BTreeMap<String, Repair>,
}

/// Where the handler's entries go, and whether a validation stream is configured.
#[derive(Clone, Debug)]
pub struct Streams {
    pub results: String,
    /// Where the source-read facts come back (`automation:healing`).
    pub healing: String,
    /// Whether validation outcomes can arrive: without a validation stream nobody sends one.
    pub validation: bool,
}

impl<'a> Session<'a> {
    pub fn new(state: &'a dyn StateView, streams: &'a Streams) -> Session<'a> {
        Session { tx: Overlay::new(state), outputs: Vec::new(), intents: Vec::new(), streams, repairs: BTreeMap::new() }
    }

    pub fn load<T: DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        serde_json::from_slice(&self.tx.get(key)?).ok()
    }

    pub fn save<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        // Serialising these plain structs cannot fail; an empty value would show up in any hash.
        self.tx.put(key, serde_json::to_vec(value).unwrap_or_default());
    }

    /// A registered orchestrator, or the implicit default one.
    pub fn orchestrator(&self, id: &str) -> Option<Orchestrator> {
        self.load(&orchestrator_key(id)).or_else(|| (id == DEFAULT_ORCHESTRATOR).then(Orchestrator::default_one))
    }

    fn publish(&mut self, result: automation_result::Result) {
        let fields = to_fields(&maestro_schemas::Event::AutomationResult(AutomationResult { result: Some(result) }));
        self.outputs.push(Output::new(self.streams.results.clone(), fields));
    }

    /// `{type: status_update, orchestrator_id, status, timestamp}`.
    pub fn status_update(&mut self, orchestrator_id: &str, status: &str, ms: u64) {
        self.publish(automation_result::Result::StatusUpdate(OrchestratorStatus {
            orchestrator_id: orchestrator_id.to_string(),
            status: status.to_string(),
            timestamp: naive_iso(ms),
        }));
    }

    /// `{type: repair_result, orchestrator_id, result, timestamp}` (the result: [`result_json`]).
    fn repair_result(&mut self, repair: &Repair, ms: u64) {
        self.publish(automation_result::Result::RepairResult(RepairResult {
            orchestrator_id: repair.orchestrator_id.clone(),
            result_json: result_json(repair, ms),
            timestamp: naive_iso(ms),
        }));
    }

    /// A repair, as this event left it so far.
    pub fn load_repair(&self, id: &str) -> Option<Repair> {
        match self.repairs.get(id) {
            Some(repair) => Some(repair.clone()),
            None => self.load(&repair_key(id)),
        }
    }

    /// Keeps a repair until the event's end, when it is stored: a repair is often saved twice
    /// in one event (admitted, then planned at once), and each save escapes its source.
    pub fn save_repair(&mut self, repair: Repair) {
        self.repairs.insert(repair.repair_id.clone(), repair);
    }

    /// The event's outputs, intents and state changes, with the repairs it kept stored.
    pub fn into_parts(mut self) -> (Vec<Output>, Vec<Intent>, Vec<Change>) {
        for (id, repair) in std::mem::take(&mut self.repairs) {
            self.save(repair_key(&id), &repair);
        }
        (self.outputs, self.intents, self.tx.into_changes())
    }

    /// Applies `change` to the orchestrator's statistics and to the overall ones.
    pub fn count(&mut self, orchestrator_id: &str, change: impl Fn(&mut Stats)) {
        for key in [stats_key(orchestrator_id), GLOBAL_STATS_KEY.to_vec()] {
            let mut stats: Stats = self.load(&key).unwrap_or_default();
            change(&mut stats);
            stats.success_rate = if stats.repairs_attempted == 0 {
                0.0
            } else {
                stats.succeeded as f64 / stats.repairs_attempted as f64
            };
            self.save(key, &stats);
        }
    }

    fn count_strategy(&mut self, strategy: &str, change: impl Fn(&mut StrategyStats)) {
        let key = strategy_key(strategy);
        let mut stats: StrategyStats = self.load(&key).unwrap_or_default();
        change(&mut stats);
        stats.mean_confidence = if stats.attempts == 0 { 0.0 } else { stats.confidence_sum / stats.attempts as f64 };
        self.save(key, &stats);
    }

    /// Records a detected error in the tallies and the history.
    pub fn note_error(&mut self, error: &Failure, seen: ErrorSeen, arrival: &str) {
        let key = tally_key(&error.error_type, &error.severity);
        let mut tally: ErrorTally = self.load(&key).unwrap_or_default();
        // Min and max, not first and last seen: entries of two streams may be recorded in
        // either order, and the state must not depend on it.
        tally.first_ms = if tally.count == 0 { seen.time_ms } else { tally.first_ms.min(seen.time_ms) };
        tally.last_ms = tally.last_ms.max(seen.time_ms);
        tally.count += 1;
        self.save(key, &tally);
        self.save(history_key(&error.error_type, &error.severity, arrival), &seen);
        self.count(&seen.orchestrator_id, |s| s.errors_detected += 1);
    }

    /// How many repairs wait in an orchestrator's queue (a counter: the queue is never read
    /// whole on the hot path).
    fn queued(&self, orchestrator_id: &str) -> u64 {
        self.load(&queued_key(orchestrator_id)).unwrap_or(0)
    }

    fn add_queued(&mut self, orchestrator_id: &str, change: i64) {
        let count = self.queued(orchestrator_id).saturating_add_signed(change);
        self.save(queued_key(orchestrator_id), &count);
    }

    /// Admits a new repair, or skips it with the reason. Admitted repairs start at once when
    /// their orchestrator has a free slot and wait in the queue otherwise.
    pub fn admit(&mut self, mut repair: Repair, source: String, arrival: &str, ms: u64) {
        let orchestrator = self.orchestrator(&repair.orchestrator_id);
        let refusal = match &orchestrator {
            None => Some(format!("orchestrator {} is not registered", repair.orchestrator_id)),
            Some(o) if !o.running() => Some(format!("orchestrator {} is stopped", o.orchestrator_id)),
            Some(o) if repair.detection_confidence + 1e-9 < o.settings.confidence_threshold => Some(format!(
                "detection confidence {:.2} of {} is below the orchestrator's threshold {:.2}",
                repair.detection_confidence, repair.error.error_type, o.settings.confidence_threshold
            )),
            Some(o) if self.queued(&o.orchestrator_id) >= u64::from(o.settings.max_queued_repairs) => Some(format!(
                "orchestrator {} has {} repairs waiting already (max_queued_repairs)",
                o.orchestrator_id, o.settings.max_queued_repairs
            )),
            Some(_) => None,
        };
        if let Some(reason) = refusal {
            return self.finish(repair, RepairStatus::Skipped, Some(reason), ms);
        }
        repair.source = Some(Text::new(source)).filter(|s| !s.as_str().is_empty());
        self.save(queue_key(&repair.orchestrator_id, arrival), &repair.repair_id);
        self.add_queued(&repair.orchestrator_id, 1);
        let orchestrator_id = repair.orchestrator_id.clone();
        self.save_repair(repair);
        self.fill_slots(&orchestrator_id, ms);
    }

    /// Starts queued repairs, oldest first, while the orchestrator has free slots.
    pub fn fill_slots(&mut self, orchestrator_id: &str, ms: u64) {
        let Some(orchestrator) = self.orchestrator(orchestrator_id) else { return };
        let cap = orchestrator.settings.max_concurrent_repairs.max(1) as usize;
        while orchestrator.running() && self.tx.scan_limit(&active_prefix(orchestrator_id), cap).len() < cap {
            let Some((queue_key, id)) = self.tx.first(&queue_prefix(orchestrator_id)) else {
                return;
            };
            self.tx.delete(queue_key);
            self.add_queued(orchestrator_id, -1);
            let id: String = serde_json::from_slice(&id).unwrap_or_default();
            if let Some(repair) = self.load_repair(&id) {
                self.start(repair, &orchestrator, ms);
            }
        }
    }

    /// Starts a repair in a free slot: plans it when its source is known, else asks the engine
    /// to read its file under the orchestrator's project and waits, in `analyzing`, for the
    /// fact. A request that names no file, or an orchestrator without a project, fails here.
    fn start(&mut self, mut repair: Repair, orchestrator: &Orchestrator, ms: u64) {
        self.save(active_key(&repair.orchestrator_id, &repair.repair_id), &ms);
        repair.enter(RepairStatus::Analyzing, ms);
        if repair.source.is_some() {
            return self.plan(repair, orchestrator, ms);
        }
        let Some(file) = repair.error.file.clone().filter(|f| !f.is_empty()) else {
            let reason = "the request carries no source and names no file to read it from".to_string();
            return self.finish(repair, RepairStatus::Failed, Some(reason), ms);
        };
        if orchestrator.project_path.is_empty() {
            let reason = format!(
                "the request carries no source and orchestrator {} has no project_path to read {file} under \
                 (send orchestrator_id, or start_monitoring the project that holds the file)",
                orchestrator.orchestrator_id
            );
            return self.finish(repair, RepairStatus::Failed, Some(reason), ms);
        }
        let id = format!("{READ_FILE}/{}", repair.repair_id);
        let payload = json!({
            "root": orchestrator.project_path,
            "path": file,
            "max_bytes": MAX_SOURCE_BYTES,
            "reply_stream": self.streams.healing,
            "reply_fields": [["type", "source_read"], ["repair_id", repair.repair_id], ["file_path", file]],
        });
        self.intents.push(Intent { kind: READ_FILE.into(), id: id.clone(), payload: payload.to_string().into_bytes() });
        repair.reading = Some(id);
        let deadline = ms.saturating_add(READ_TIMEOUT_MS);
        repair.deadline_ms = Some(deadline);
        self.save(deadline_key(deadline, &repair.repair_id), &"");
        self.save_repair(repair);
    }

    /// Continues a repair waiting for its file with the engine's fact: the text, or why the
    /// file was not read. Returns false when the repair waits for no such read (unknown, or a
    /// fact that is not of its own intent), which changes nothing.
    pub fn source_read(&mut self, read: &maestro_schemas::proto::healing::SourceRead, ms: u64) -> bool {
        let Some(mut repair) = self.load_repair(&read.repair_id) else { return false };
        if repair.reading.as_deref() != Some(read.fact_id.as_str()) {
            return false;
        }
        repair.reading = None;
        if let Some(deadline) = repair.deadline_ms.take() {
            self.tx.delete(deadline_key(deadline, &repair.repair_id));
        }
        let orchestrator_id = repair.orchestrator_id.clone();
        match (&read.source, &read.refused) {
            (Some(source), None) => {
                repair.source = Some(Text::new(source.clone()));
                let orchestrator = self.orchestrator(&orchestrator_id).unwrap_or_else(Orchestrator::default_one);
                self.plan(repair, &orchestrator, ms);
            }
            (_, refused) => {
                let file = repair.error.file.clone().unwrap_or_default();
                let why = refused.clone().unwrap_or_else(|| "no text".into());
                let reason = format!("could not read {file}: {why}");
                self.finish(repair, RepairStatus::Failed, Some(reason), ms);
            }
        }
        self.fill_slots(&orchestrator_id, ms);
        true
    }

    /// Plans a repair whose source is known: analyzing (classification), healing (the
    /// strategy's transform), then failed when the fix does not parse or strays too far,
    /// skipped when the strategy found nothing to change, and otherwise validating when a
    /// validation stream is configured, success (the plan is the final answer) when not.
    fn plan(&mut self, mut repair: Repair, orchestrator: &Orchestrator, ms: u64) {
        let plan = super::plan(repair.source.as_ref().map_or("", Text::as_str), &repair.error.message);
        repair.failure_class = Some(plan.class.name().to_string());
        repair.strategy = Some(plan.strategy.name().to_string());
        repair.enter(RepairStatus::Healing, ms);
        let (Some(healed), Some(assessment)) = (plan.healed, plan.assessment) else {
            let reason = format!("strategy {} found nothing to change in the source", plan.strategy.name());
            return self.finish(repair, RepairStatus::Skipped, Some(reason), ms);
        };
        repair.healed_code = Some(Text::new(healed));
        repair.confidence_score = Some(assessment.confidence);
        repair.similarity = Some(assessment.similarity);
        repair.syntax_valid = Some(assessment.parses);
        repair.fix_success = Some(assessment.success);
        repair.decision = Some(assessment.decision.name().to_string());
        let confidence = assessment.confidence;
        self.count(&repair.orchestrator_id, |s| s.repairs_attempted += 1);
        self.count_strategy(plan.strategy.name(), |s| {
            s.attempts += 1;
            s.confidence_sum += confidence;
        });
        if !assessment.success {
            let reason = if assessment.parses {
                format!(
                    "the healed source is too different from the original (similarity {:.2})",
                    assessment.similarity
                )
            } else {
                "the healed source does not parse as Python".to_string()
            };
            return self.finish(repair, RepairStatus::Failed, Some(reason), ms);
        }
        if !self.streams.validation {
            return self.finish(repair, RepairStatus::Success, None, ms);
        }
        let deadline = ms.saturating_add(orchestrator.settings.validation_timeout_ms);
        repair.deadline_ms = Some(deadline);
        repair.enter(RepairStatus::Validating, ms);
        self.save(deadline_key(deadline, &repair.repair_id), &"");
        self.repair_result(&repair, ms);
        self.save_repair(repair);
    }

    /// Moves a repair to a final state: out of the active set and the deadlines, counted, and
    /// announced. The caller refills the orchestrator's slots.
    pub fn finish(&mut self, mut repair: Repair, status: RepairStatus, reason: Option<String>, ms: u64) {
        repair.enter(status, ms);
        repair.reason = reason;
        repair.reading = None;
        self.tx.delete(active_key(&repair.orchestrator_id, &repair.repair_id));
        if let Some(deadline) = repair.deadline_ms {
            self.tx.delete(deadline_key(deadline, &repair.repair_id));
        }
        self.count(&repair.orchestrator_id, |s| match status {
            RepairStatus::Success => s.succeeded += 1,
            RepairStatus::Failed => s.failed += 1,
            _ => s.skipped += 1,
        });
        if let (RepairStatus::Success, Some(strategy)) = (status, repair.strategy.clone()) {
            self.count_strategy(&strategy, |s| s.successes += 1);
        }
        self.repair_result(&repair, ms);
        self.save_repair(repair);
    }

    /// Fails every validating repair whose deadline is at or before `now` (a clock record's
    /// time), oldest deadline first, then refills the slots they held.
    pub fn expire(&mut self, now: u64) {
        let mut touched = Vec::new();
        // Deadlines in key order are in time order: take them from the front while they are due.
        while let Some((key, _)) = self.tx.first(DEADLINE_PREFIX) {
            if deadline_of(&key).is_none_or(|deadline| deadline > now) {
                break;
            }
            self.tx.delete(key.clone());
            let id = String::from_utf8_lossy(key.get(23..).unwrap_or_default()).into_owned();
            let Some(repair) = self.load_repair(&id) else { continue };
            let since = repair.transitions.last().map_or(now, |(_, at)| *at);
            let allowed = repair.deadline_ms.unwrap_or(now).saturating_sub(since);
            let reason = if repair.reading.is_some() {
                format!("timed out: the file was not read within {allowed} ms")
            } else {
                format!("timed out: no validation outcome within {allowed} ms")
            };
            if !touched.contains(&repair.orchestrator_id) {
                touched.push(repair.orchestrator_id.clone());
            }
            self.finish(repair, RepairStatus::Failed, Some(reason), now);
        }
        for orchestrator_id in touched {
            self.fill_slots(&orchestrator_id, now);
        }
    }

    /// Skips every repair still waiting in a stopped orchestrator's queue.
    pub fn drain_queue(&mut self, orchestrator_id: &str, ms: u64) {
        for (key, id) in self.tx.scan(&queue_prefix(orchestrator_id)) {
            self.tx.delete(key);
            self.add_queued(orchestrator_id, -1);
            let id: String = serde_json::from_slice(&id).unwrap_or_default();
            if let Some(repair) = self.load_repair(&id) {
                let reason = format!("orchestrator {orchestrator_id} was stopped before the repair started");
                self.finish(repair, RepairStatus::Skipped, Some(reason), ms);
            }
        }
    }
}
