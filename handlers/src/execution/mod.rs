//! The execution domain (domain.md section 4): ephemeral test environments as a projection of
//! the log, their Kubernetes manifests rendered by a pure function, TTL expiry on logged time,
//! and intents for the Kubernetes effect runner.

pub mod handler;
pub mod manifests;
pub mod model;

/// Environments active at once unless configured otherwise.
pub const DEFAULT_MAX_ACTIVE: u32 = 10;

/// The name of the setting record that carries the cap.
pub const MAX_ACTIVE_SETTING: &str = "execution.max_active_environments";

/// The name of the setting record that lists the runner identities whose facts move an
/// environment: the engine's own runner first, then the `execution_runners` setting's (a JSON
/// array of strings).
pub const RUNNERS_SETTING: &str = "execution.runners";

/// The entry field in which a runner names itself on its `k8s:status` and `k8s:results` facts.
pub const RUNNER_FIELD: &str = "runner";

/// The engine's own runner identity for consumer group `group`.
pub fn engine_runner(group: &str) -> String {
    format!("maestro-engine/{group}")
}

/// The runner identities trusted when no setting was recorded: the engine's own runner under
/// the default consumer group.
pub fn default_runners() -> Vec<String> {
    vec![engine_runner("maestro-engine")]
}

#[cfg(test)]
mod tests;
