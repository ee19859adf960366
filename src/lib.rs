//! The `maestro` binary's library half: what the binary, the tests and the benches share.

pub mod ask_engine;
pub mod deploy_cli;
pub mod manifests_cli;
pub mod metrics;
pub mod replay_cli;
pub mod settings;
pub mod verify_outputs;

pub use maestro_devtools::{
    bench, bench_catalogue, bench_latency, bench_memory, bench_replay, bench_templates, demo, exec_demo, flood, groups,
    heal_demo, plot, redis_cluster, redis_server, report, traffic,
};
pub use maestro_effects::domains::{self, domains, handlers};
