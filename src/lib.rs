//! The `maestro` binary's library half: what the binary, the tests and the benches share.

pub mod ask_engine;
pub mod bench;
pub mod bench_catalogue;
pub mod bench_latency;
pub mod bench_memory;
pub mod bench_replay;
pub mod bench_templates;
pub mod demo;
pub mod exec_demo;
pub mod flood;
pub mod groups;
pub mod heal_demo;
pub mod manifests_cli;
pub mod metrics;
pub mod plot;
pub mod redis_server;
pub mod replay_cli;
pub mod report;
pub mod settings;
pub mod traffic;
pub mod verify_outputs;

use maestro_handlers::Handler;
use std::sync::Arc;

/// The handlers the engine runs, in dispatch order.
pub fn handlers(config: &maestro_engine::config::EngineConfig) -> Vec<Arc<dyn Handler>> {
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
