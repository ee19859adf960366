//! The `maestro` binary's library half: what the binary, the tests and the benches share.

pub mod ask_engine;
pub mod bench;
pub mod bench_catalogue;
pub mod bench_latency;
pub mod bench_memory;
pub mod bench_replay;
pub mod bench_templates;
pub mod demo;
pub mod domains;
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

pub use domains::{domains, handlers};
