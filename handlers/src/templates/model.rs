//! The templates projection's state: its keys and the records it keeps.
//!
//! State keys (all tenant-scoped, so no request can reach another tenant's templates):
//! `m/<tenant>\0<id>` a template's metadata (what search reads, and the usage count),
//! `t/<tenant>\0<id>` the rest of it (body, manifest, status), `g/<tenant>\0<user>` granted
//! roles, `a/<tenant>\0<user>` bootstrap admins, `v/<tenant>\0<id>\0<entry>` the version history
//! (see [`super::versions`]).

use super::search::TemplateMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A template: its search metadata (`m/`) and the rest (`t/`). They are stored apart so that a
/// retrieve, which counts a use, rewrites only the small metadata and answers with the stored
/// body's bytes as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TemplateRecord {
    #[serde(flatten)]
    pub meta: TemplateMeta,
    #[serde(flatten)]
    pub body: TemplateBody,
}

/// What `t/` holds: everything of a template but its metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateBody {
    pub tenant_id: String,
    pub templating_engine: String,
    pub content: String,
    pub manifest: Value,
    pub pin_reason: Option<String>,
}

/// A tenant-scoped state key: `<kind>/<tenant>` then each part after a 0 byte.
pub(crate) fn key(kind: &str, tenant: &str, rest: &[&str]) -> Vec<u8> {
    let parts: Vec<&str> = std::iter::once(tenant).chain(rest.iter().copied()).collect();
    crate::keys::join(&format!("{kind}/"), &parts)
}

/// The tenant a state key of this projection belongs to (`<kind>/<tenant>` then an optional
/// 0 byte and more), for per-tenant hashes and exports.
pub fn tenant_of(key: &[u8]) -> Option<&[u8]> {
    let start = key.iter().position(|b| *b == b'/')? + 1;
    let rest = &key[start..];
    Some(&rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_tenant_and_parts_after_zero_bytes() {
        assert_eq!(key("t", "acme", &["tpl-1"]), b"t/acme\0tpl-1".to_vec());
        assert_eq!(key("g", "acme", &[]), b"g/acme".to_vec());
        assert_eq!(tenant_of(b"v/acme\0tpl\0e1"), Some(&b"acme"[..]));
        assert_eq!(tenant_of(b"m/acme"), Some(&b"acme"[..]));
    }
}
