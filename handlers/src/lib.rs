//! Pure handler functions of the Maestro engine and the contract they share.
//!
//! A handler gets a read-only view of its projection's state and one log record, and returns a
//! [`Decision`]: the state changes, the entries to publish and the effects to run. It never does
//! I/O, reads a clock or draws a random number; time and ids come in with the record.

pub mod contract;
pub mod execution;
#[cfg(test)]
pub(crate) mod fold;
pub mod healing;
pub mod keys;
pub mod partition;
pub mod stream_stats;

pub use contract::{Change, Decision, ELAPSED_MS, Event, Handler, HandlerError, Intent, Output, Overlay, StateView};
pub mod templates;
