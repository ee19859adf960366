//! The search index: each tenant's template metadata, parsed and lowercased once, rebuilt from
//! the catalogue projection whenever it does not match it.
//!
//! The index is a memo of the projection, not state of its own: every change to a tenant's
//! metadata (`m/` keys) also moves the tenant's metadata version `mv/<tenant>`, a hash chain over
//! the changes. The index remembers the version it was built for; a search whose state has
//! another version (a different store, a batch that was not committed, a restart) rebuilds the
//! tenant's index from the state. So a search's answer depends only on the state, as a pure
//! handler's must, while a search over 10,000 templates reads no sled key but the version.

use super::handler::key;
use super::search::{Indexed, TemplateMeta};
use crate::contract::{Change, StateView};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// The version of one tenant's metadata.
pub type Version = [u8; 32];

/// One tenant's templates by id, at a version.
#[derive(Clone, Debug, Default)]
pub struct TenantIndex {
    pub version: Version,
    pub templates: BTreeMap<String, Indexed>,
}

/// The index of every tenant searched so far.
#[derive(Debug, Default)]
pub struct SearchIndex {
    tenants: Mutex<HashMap<String, Arc<TenantIndex>>>,
}

fn version_of(state: &dyn StateView, tenant: &str) -> Version {
    state.get(&key("mv", tenant, &[])).and_then(|v| v.as_slice().try_into().ok()).unwrap_or([0; 32])
}

impl SearchIndex {
    /// The tenant's index as of `state`, rebuilt from the state when the remembered one is of
    /// another version.
    pub fn tenant(&self, state: &dyn StateView, tenant: &str) -> Arc<TenantIndex> {
        let version = version_of(state, tenant);
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = tenants.get(tenant).filter(|i| i.version == version) {
            return Arc::clone(index);
        }
        let templates = state
            .scan(&key("m", tenant, &[""]))
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<TemplateMeta>(&v).ok())
            .map(|meta| (meta.id.clone(), Indexed::new(meta)))
            .collect();
        let index = Arc::new(TenantIndex { version, templates });
        tenants.insert(tenant.to_string(), Arc::clone(&index));
        index
    }

    /// The changes that store (`Some`) or remove (`None`) one template's metadata and move the
    /// tenant's version; the remembered index follows when it was current.
    pub fn change(&self, state: &dyn StateView, tenant: &str, id: &str, meta: Option<&TemplateMeta>) -> Vec<Change> {
        let before = version_of(state, tenant);
        let bytes = meta.map(|m| serde_json::to_vec(m).unwrap_or_default());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&before);
        hasher.update(&(id.len() as u64).to_le_bytes());
        hasher.update(id.as_bytes());
        hasher.update(bytes.as_deref().unwrap_or(b"\xffdeleted"));
        let after = *hasher.finalize().as_bytes();
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = tenants.get_mut(tenant).filter(|i| i.version == before) {
            let index = Arc::make_mut(index);
            index.version = after;
            match meta {
                Some(meta) => index.templates.insert(id.to_string(), Indexed::new(meta.clone())),
                None => index.templates.remove(id),
            };
        }
        let meta_key = key("m", tenant, &[id]);
        vec![
            match bytes {
                Some(value) => Change::Put { key: meta_key, value },
                None => Change::Delete { key: meta_key },
            },
            Change::Put { key: key("mv", tenant, &[]), value: after.to_vec() },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::apply_changes;

    fn meta(id: &str, name: &str) -> TemplateMeta {
        TemplateMeta { id: id.into(), name: name.into(), ..TemplateMeta::default() }
    }

    #[test]
    fn the_index_follows_its_state_and_rebuilds_for_another() {
        let index = SearchIndex::default();
        let mut state = BTreeMap::new();
        let changes = index.change(&state, "acme", "a", Some(&meta("a", "alpha")));
        apply_changes(&mut state, &changes);
        assert_eq!(index.tenant(&state, "acme").templates.len(), 1);
        // Changes made while the index is current update it in place.
        let changes = index.change(&state, "acme", "b", Some(&meta("b", "beta")));
        apply_changes(&mut state, &changes);
        let current = index.tenant(&state, "acme");
        assert_eq!(current.templates.keys().collect::<Vec<_>>(), ["a", "b"]);
        // A change decided but never committed leaves the index ahead of the state: rebuilt.
        index.change(&state, "acme", "a", None);
        assert_eq!(index.tenant(&state, "acme").templates.len(), 2);
        // Another state (another store) with other content is never answered from this one.
        let mut other = BTreeMap::new();
        let changes = index.change(&other, "acme", "z", Some(&meta("z", "zeta")));
        apply_changes(&mut other, &changes);
        assert_eq!(index.tenant(&other, "acme").templates.keys().collect::<Vec<_>>(), ["z"]);
        assert_eq!(index.tenant(&state, "acme").templates.keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}
