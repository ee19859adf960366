//! Types generated from `proto/` (see the files there for every message and field).

#![allow(missing_docs, clippy::doc_lazy_continuation, clippy::derive_partial_eq_without_eq)]

pub mod templates {
    include!(concat!(env!("OUT_DIR"), "/maestro.templates.v1.rs"));
}

pub mod healing {
    include!(concat!(env!("OUT_DIR"), "/maestro.healing.v1.rs"));
}

pub mod execution {
    include!(concat!(env!("OUT_DIR"), "/maestro.execution.v1.rs"));
}

pub mod log {
    include!(concat!(env!("OUT_DIR"), "/maestro.log.v1.rs"));
}
