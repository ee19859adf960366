//! The Maestro domains the engine runs: their handlers, their effect runners and the settings
//! their handlers decide with. The engine itself knows none of them (`maestro_engine::runtime`
//! takes a [`Domains`]); this is where the binary names them.

use maestro_engine::config::EngineConfig;
use maestro_engine::runtime::Domains;
use maestro_handlers::Handler;
use maestro_handlers::execution::{DEFAULT_MAX_ACTIVE, MAX_ACTIVE_SETTING, RUNNERS_SETTING, default_runners};
use std::sync::Arc;

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
pub fn domains_with(config: &EngineConfig, handlers: Vec<Arc<dyn Handler>>) -> Domains {
    let runners = crate::runners(&config.streams, runner_identity(config));
    // The usage analytics read the engine's own usage events back.
    let own_in_full = vec![config.streams.templates_usage.clone()];
    Domains { handlers, runners, settings: settings(config), own_in_full }
}

/// Every domain the engine runs.
pub fn domains(config: &EngineConfig) -> Domains {
    domains_with(config, handlers(config))
}

/// The handler settings recorded in the log: (name, value, default value).
pub fn settings(config: &EngineConfig) -> Vec<(String, String, String)> {
    let json = |list: Vec<String>| serde_json::to_string(&list).unwrap_or_default();
    vec![
        (MAX_ACTIVE_SETTING.into(), config.max_active_environments.to_string(), DEFAULT_MAX_ACTIVE.to_string()),
        (RUNNERS_SETTING.into(), json(trusted_runners(config)), json(default_runners())),
    ]
}

/// The engine's own Kubernetes runner's identity: the `runner` field of its facts.
pub fn runner_identity(config: &EngineConfig) -> String {
    maestro_handlers::execution::engine_runner(&config.group)
}

/// Every runner identity whose facts move test environments: the engine's own first.
pub fn trusted_runners(config: &EngineConfig) -> Vec<String> {
    let own = runner_identity(config);
    let others = config.execution_runners.iter().filter(|r| **r != own).cloned();
    std::iter::once(own.clone()).chain(others).collect()
}
