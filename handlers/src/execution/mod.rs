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

#[cfg(test)]
mod tests;
