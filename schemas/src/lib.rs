//! Pure types of the Maestro engine: stream entry ids, the log record envelope and its codec,
//! the stream roles of the three domains, and the limits every entry is checked against.
//!
//! Nothing here does I/O, reads a clock or draws a random number: a tidy test keeps it so.

pub mod codec;
pub mod digest;
pub mod encode;
pub mod entry_id;
pub mod envelope;
pub mod ids;
pub mod own;
pub mod partition;
pub mod proto;
pub mod record;
pub mod streams;

pub use entry_id::EntryId;
pub use envelope::{Limits, Reject};
pub use record::{Body, Entry, Fields, OwnRef, Record, RecordError, Status};
pub use streams::{Role, StreamSet};
pub mod decode;
pub mod event;
pub mod json;

pub use decode::{Decoded, Origin, decode};
pub use event::{Event, TypedEvent};
