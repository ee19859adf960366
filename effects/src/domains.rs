//! The Maestro domains the engine runs: their handlers, their effect runners and the settings
//! their handlers decide with. The engine itself knows none of them (`maestro_engine::runtime`
//! takes a [`Domains`]); this is where the binary names them.

use maestro_engine::config::EngineConfig;
use maestro_engine::router::Routing;
use maestro_engine::runtime::Domains;
use maestro_handlers::Handler;
use maestro_handlers::execution::{DEFAULT_MAX_ACTIVE, MAX_ACTIVE_SETTING, RUNNERS_SETTING, default_runners};
use maestro_handlers::partition::partition;
use maestro_schemas::EntryId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The domains' own settings, read by the binary from the same places as the engine's (file,
/// `MAESTRO_*` variables, flags) and recorded in the log, so that a replay decides as the live
/// run did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainSettings {
    /// Bootstrap admins of the template registry, as `tenant:user`; later grants are events.
    pub admins: Vec<String>,
    /// Ephemeral test environments active at once; more wait in order.
    pub max_active_environments: u32,
    /// Runner identities, besides the engine's own Kubernetes runner, whose `k8s:status` and
    /// `k8s:results` facts (field `runner`) move test environments; facts from any other
    /// producer are recorded and counted, never acted on.
    pub execution_runners: Vec<String>,
}

impl Default for DomainSettings {
    fn default() -> Self {
        DomainSettings {
            admins: Vec::new(),
            max_active_environments: DEFAULT_MAX_ACTIVE,
            execution_runners: Vec::new(),
        }
    }
}

impl DomainSettings {
    /// The bootstrap admins as (tenant, user), sorted, each once.
    pub fn admin_pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> =
            self.admins.iter().filter_map(|a| a.split_once(':')).map(|(t, u)| (t.to_string(), u.to_string())).collect();
        pairs.sort();
        pairs.dedup();
        pairs
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_active_environments == 0 {
            return Err("max_active_environments: must be at least 1".into());
        }
        if self.execution_runners.iter().any(|r| r.trim().is_empty()) {
            return Err("execution_runners: an identity must not be empty".into());
        }
        if let Some(bad) =
            self.admins.iter().find(|a| a.split_once(':').is_none_or(|(t, u)| t.is_empty() || u.is_empty()))
        {
            return Err(format!("admins: {bad:?} is not tenant:user"));
        }
        Ok(())
    }
}

/// The handlers the engine runs, in dispatch order.
pub fn handlers(config: &EngineConfig) -> Vec<Arc<dyn Handler>> {
    use maestro_handlers::templates::{handler::Templates, usage::TemplateUsage};
    let templates = Templates::new(&config.streams);
    let usage = TemplateUsage { usage: config.streams.templates_usage.clone(), limits: config.limits };
    let healing = maestro_handlers::healing::handler::Healing::new(&config.streams);
    let execution = maestro_handlers::execution::handler::Execution::new(&config.streams);
    vec![
        Arc::new(maestro_handlers::stream_stats::StreamStats),
        Arc::new(templates),
        Arc::new(usage),
        Arc::new(healing),
        Arc::new(execution),
    ]
}

/// Every domain, with `handlers` (all of [`handlers`], or fewer for a benchmark).
pub fn domains_with(config: &EngineConfig, domain: &DomainSettings, handlers: Vec<Arc<dyn Handler>>) -> Domains {
    let runners = crate::runners(&config.streams, runner_identity(config));
    // The usage analytics read the engine's own usage events back.
    let own_in_full = vec![config.streams.templates_usage.clone()];
    Domains { handlers, runners, settings: settings(config, domain), admins: domain.admin_pairs(), own_in_full }
}

/// Every domain the engine runs.
pub fn domains(config: &EngineConfig, domain: &DomainSettings) -> Domains {
    domains_with(config, domain, handlers(config))
}

/// What the router moves into partitions: the streams producers write, each entry to the
/// partition of the key that keeps its projection whole (`maestro_handlers::partition`).
pub fn routing(config: &EngineConfig) -> Routing {
    let streams = config.streams.clone();
    let limits = config.limits;
    let routed = streams.routed().into_iter().map(|(_, key)| key.to_string()).collect();
    let partition_of = move |stream: &str, id: EntryId, fields: &[(Vec<u8>, Vec<u8>)], partitions: u32| {
        streams.role_of(stream).map_or(0, |role| partition(role, stream, id, fields, &limits, partitions))
    };
    Routing { streams: routed, partition_of: Arc::new(partition_of) }
}

/// The handler settings recorded in the log: (name, value, default value).
pub fn settings(config: &EngineConfig, domain: &DomainSettings) -> Vec<(String, String, String)> {
    let json = |list: Vec<String>| serde_json::to_string(&list).unwrap_or_default();
    vec![
        (MAX_ACTIVE_SETTING.into(), domain.max_active_environments.to_string(), DEFAULT_MAX_ACTIVE.to_string()),
        (RUNNERS_SETTING.into(), json(trusted_runners(config, domain)), json(default_runners())),
    ]
}

/// The engine's own Kubernetes runner's identity: the `runner` field of its facts.
pub fn runner_identity(config: &EngineConfig) -> String {
    maestro_handlers::execution::engine_runner(&config.group)
}

/// Every runner identity whose facts move test environments: the engine's own first.
pub fn trusted_runners(config: &EngineConfig, domain: &DomainSettings) -> Vec<String> {
    let own = runner_identity(config);
    let others = domain.execution_runners.iter().filter(|r| **r != own).cloned();
    std::iter::once(own.clone()).chain(others).collect()
}
