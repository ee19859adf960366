//! The templates domain (issue 4). So far: the quality gate on template manifests, roles and
//! tenancy, and search over template metadata, as pure functions.

pub mod access;
pub mod handler;
pub mod manifest;
pub mod search;
