//! The templates domain (issue 4). So far: the quality gate on template manifests.

pub mod manifest;
