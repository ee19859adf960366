//! What shows and measures the engine, apart from the engine and its CLI: the demo and its
//! scenarios, the benchmarks, traffic in the old services' formats, a private `redis-server`
//! launcher and a private Redis Cluster, consumer-group progress as Redis reports it, and SVG plots.

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
pub mod plot;
pub mod redis_cluster;
pub mod redis_server;
pub mod report;
pub mod traffic;
