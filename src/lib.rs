//! The `maestro` binary's library half: what the binary, the tests and the benches share.

pub mod redis_server;
pub mod traffic;
pub mod settings;
pub mod bench;
pub mod demo;
pub mod metrics;

use maestro_handlers::Handler;
use std::sync::Arc;

/// The handlers the engine runs, in dispatch order.
pub fn handlers() -> Vec<Arc<dyn Handler>> {
    vec![Arc::new(maestro_handlers::stream_stats::StreamStats)]
}
