//! The templates domain: the registry handler, the quality gate on manifests, roles
//! and tenancy, search and its index, versions and their git history, all pure.

pub mod access;
pub mod handler;
pub mod history;
pub mod index;
pub mod manifest;
pub mod model;
pub mod search;
pub mod usage;
pub mod versions;
