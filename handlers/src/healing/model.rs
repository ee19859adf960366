//! What the healing projection stores, and under which keys.
//!
//! Keys: `o/<orchestrator>` orchestrators, `r/<repair>` repairs, `a/<orchestrator>\0<repair>`
//! the active set, `q/<orchestrator>\0<arrival>` the wait queue in arrival order,
//! `d/<deadline ms>\0<repair>` validation deadlines, `s/<orchestrator>` and `g` statistics,
//! `k/<strategy>` strategy effectiveness, `t/<type>\0<severity>` error tallies and
//! `e/<type>\0<severity>\0<arrival>` the error history, `n/<orchestrator>` queue lengths. Numbers in keys are zero-padded to 20
//! digits so that key order is numeric order. An arrival is the request's entry id and stream,
//! never its log seq: the state does not depend on how reads were cut into batches.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::sync::OnceLock;

/// The orchestrator heal requests without an `orchestrator_id` belong to: always running, with
/// the old service's default settings.
pub const DEFAULT_ORCHESTRATOR: &str = "default";

/// How many repairs may wait for a slot per orchestrator; more are skipped (engine rule: an
/// orchestrator whose fixes are never validated must not grow without bound).
pub const DEFAULT_MAX_QUEUED: u32 = 1_000;

/// How long a repair may wait in `validating` for its outcome (domain.md: 30 minutes).
pub const DEFAULT_VALIDATION_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// An orchestrator's settings: the old defaults, plus the validation time-out, which producers
/// may set as `config.validation_timeout_seconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub auto_fix: bool,
    pub require_approval: bool,
    pub confidence_threshold: f64,
    pub auto_commit: bool,
    pub create_pr: bool,
    pub max_concurrent_repairs: u32,
    pub validation_timeout_ms: u64,
    pub max_queued_repairs: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            auto_fix: true,
            require_approval: false,
            confidence_threshold: 0.75,
            auto_commit: false,
            create_pr: false,
            max_concurrent_repairs: 3,
            validation_timeout_ms: DEFAULT_VALIDATION_TIMEOUT_MS,
            max_queued_repairs: DEFAULT_MAX_QUEUED,
        }
    }
}

/// A registered orchestrator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Orchestrator {
    pub orchestrator_id: String,
    pub project_path: String,
    pub settings: Settings,
    /// `started` or `stopped`.
    pub status: String,
    pub started_ms: u64,
    pub stopped_ms: Option<u64>,
}

impl Orchestrator {
    /// The implicit orchestrator of heal requests that name none.
    pub fn default_one() -> Orchestrator {
        Orchestrator {
            orchestrator_id: DEFAULT_ORCHESTRATOR.into(),
            project_path: String::new(),
            settings: Settings::default(),
            status: "started".into(),
            started_ms: 0,
            stopped_ms: None,
        }
    }

    pub fn running(&self) -> bool {
        self.status == "started"
    }

    /// Whether `file` (an absolute path) lies in this orchestrator's project: the project path
    /// itself or below it, compared by whole path components.
    pub fn holds(&self, file: &str) -> bool {
        let root = self.project_path.trim_end_matches('/');
        !root.is_empty() && (file == root || file.strip_prefix(root).is_some_and(|rest| rest.starts_with('/')))
    }
}

/// The failure a repair is about, as the request described it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub test_id: Option<String>,
    pub severity: String,
}

/// The largest test file the engine reads for a repair: the fact that carries its text must
/// fit in one entry (1 MiB by default) with room for its other fields.
pub const MAX_SOURCE_BYTES: u64 = 512 * 1024;

/// How long a repair waits for its file's text. The engine's runner answers at once; a read
/// lost to a crash between the effect and the publication of its fact must not hold a slot
/// for ever, so a clock record past this fails the repair.
pub const READ_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// The intent kind of a file read: generic, the engine knows nothing of repairs.
pub const READ_FILE: &str = "read_file";

/// Where a repair is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairStatus {
    Pending,
    Analyzing,
    Healing,
    Validating,
    Success,
    Failed,
    Skipped,
}

impl RepairStatus {
    pub fn name(self) -> &'static str {
        match self {
            RepairStatus::Pending => "pending",
            RepairStatus::Analyzing => "analyzing",
            RepairStatus::Healing => "healing",
            RepairStatus::Validating => "validating",
            RepairStatus::Success => "success",
            RepairStatus::Failed => "failed",
            RepairStatus::Skipped => "skipped",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, RepairStatus::Success | RepairStatus::Failed | RepairStatus::Skipped)
    }
}

/// One repair: a heal request from arrival to its final state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    pub repair_id: String,
    pub orchestrator_id: String,
    pub error: Failure,
    pub status: RepairStatus,
    /// The detection confidence of the error type, compared with the orchestrator's threshold.
    pub detection_confidence: f64,
    pub failure_class: Option<String>,
    pub strategy: Option<String>,
    pub healed_code: Option<Text>,
    pub confidence_score: Option<f64>,
    pub similarity: Option<f64>,
    pub decision: Option<String>,
    pub validation_passed: Option<bool>,
    /// Why a repair was skipped or failed, in words.
    pub reason: Option<String>,
    /// The test source: the request's, or the text a source-read fact brought.
    pub source: Option<Text>,
    /// The id of the file read this repair waits for (its `fact_id`), while it waits.
    #[serde(default)]
    pub reading: Option<String>,
    /// The old service's `ErrorEvent` of the request (seed contract 3.4), as answered.
    #[serde(default)]
    pub error_event: serde_json::Value,
    /// Whether the healed source parses, and whether the fix succeeded (parses and stays similar).
    #[serde(default)]
    pub syntax_valid: Option<bool>,
    #[serde(default)]
    pub fix_success: Option<bool>,
    /// The stream entry that asked for the repair.
    pub stream: String,
    pub entry_id: String,
    pub requested_ms: u64,
    pub deadline_ms: Option<u64>,
    /// Every state the repair passed through, with the log time it entered it.
    pub transitions: Vec<(RepairStatus, u64)>,
}

impl Repair {
    /// Moves the repair to `status` at `ms`.
    pub fn enter(&mut self, status: RepairStatus, ms: u64) {
        self.status = status;
        self.transitions.push((status, ms));
    }
}

/// A long text of a repair (a test file's source, its healed form), escaped as a JSON string
/// once however many documents carry it: the repair's stored record and its `repair_result`
/// (twice for the healed text) do, and escaping 10 KB is a large part of a heal's work. It
/// serialises exactly as a `String` does.
#[derive(Clone, Default)]
pub struct Text {
    text: String,
    json: OnceLock<Box<RawValue>>,
}

impl Text {
    pub fn new(text: String) -> Text {
        Text { text, json: OnceLock::new() }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text as a JSON string literal, escaped on first use.
    fn json(&self) -> Option<&RawValue> {
        if let Some(json) = self.json.get() {
            return Some(json);
        }
        // Escaping a string cannot fail; were it to, the text is serialised the plain way.
        let json = serde_json::value::to_raw_value(&self.text).ok()?;
        Some(self.json.get_or_init(|| json))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::new(text)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.json() {
            Some(json) => json.serialize(serializer),
            None => self.text.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        String::deserialize(deserializer).map(Text::new)
    }
}

/// Counters kept per orchestrator and overall.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub errors_detected: u64,
    pub repairs_attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Succeeded over attempted, 0 before the first attempt.
    pub success_rate: f64,
}

/// How well one strategy works.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StrategyStats {
    pub attempts: u64,
    pub successes: u64,
    pub confidence_sum: f64,
    pub mean_confidence: f64,
}

/// Errors seen of one type and severity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorTally {
    pub count: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// One entry of the error history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorSeen {
    /// The error's message, file and line: kept here for error reports only; a heal request's
    /// are in its repair (`repair_id`), and are not stored twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    pub orchestrator_id: String,
    /// The repair it opened; `None` for an error report, which carries no source to heal.
    pub repair_id: Option<String>,
    pub time_ms: u64,
}

use crate::keys::join;

fn padded(n: u64) -> String {
    format!("{n:020}")
}

pub fn orchestrator_key(id: &str) -> Vec<u8> {
    join("o/", &[id])
}

pub fn repair_key(id: &str) -> Vec<u8> {
    join("r/", &[id])
}

pub fn active_prefix(orchestrator: &str) -> Vec<u8> {
    join("a/", &[orchestrator, ""])
}

pub fn active_key(orchestrator: &str, repair: &str) -> Vec<u8> {
    join("a/", &[orchestrator, repair])
}

pub fn queue_prefix(orchestrator: &str) -> Vec<u8> {
    join("q/", &[orchestrator, ""])
}

pub use maestro_schemas::ids::arrival;

/// The length of an orchestrator's queue.
pub fn queued_key(orchestrator: &str) -> Vec<u8> {
    join("n/", &[orchestrator])
}

pub fn queue_key(orchestrator: &str, arrival: &str) -> Vec<u8> {
    join("q/", &[orchestrator, arrival])
}

pub const DEADLINE_PREFIX: &[u8] = b"d/";

pub fn deadline_key(ms: u64, repair: &str) -> Vec<u8> {
    join("d/", &[&padded(ms), repair])
}

/// The deadline in a deadline key.
pub fn deadline_of(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.get(2..22)?).ok()?.parse().ok()
}

pub fn stats_key(orchestrator: &str) -> Vec<u8> {
    join("s/", &[orchestrator])
}

pub const GLOBAL_STATS_KEY: &[u8] = b"g";

pub fn strategy_key(strategy: &str) -> Vec<u8> {
    join("k/", &[strategy])
}

pub fn tally_key(error_type: &str, severity: &str) -> Vec<u8> {
    join("t/", &[error_type, severity])
}

pub fn history_key(error_type: &str, severity: &str, arrival: &str) -> Vec<u8> {
    join("e/", &[error_type, severity, arrival])
}
