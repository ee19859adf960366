//! The `maestro` binary's library half: what the binary, the tests and the benches share.

pub mod bench;
pub mod demo;
pub mod metrics;
pub mod redis_server;
pub mod settings;
pub mod traffic;

use maestro_handlers::Handler;
use std::sync::Arc;

/// The handlers the engine runs, in dispatch order.
pub fn handlers() -> Vec<Arc<dyn Handler>> {
    vec![Arc::new(maestro_handlers::stream_stats::StreamStats)]
}
