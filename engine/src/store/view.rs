//! A handler's read view of its projection: the batch's staged changes first, then the store.

use super::keys::state_key;
use super::{Pending, Store};
use maestro_handlers::StateView;

/// A handler's view of its state: the pending batch first, then the store.
#[derive(Debug)]
pub struct View<'a> {
    pub store: &'a Store,
    pub pending: &'a Pending,
    pub name: &'a str,
    /// A value file that could not be read (see [`View::unreadable`]).
    unreadable: std::cell::RefCell<Option<String>>,
}

impl<'a> View<'a> {
    pub fn new(store: &'a Store, pending: &'a Pending, name: &'a str) -> View<'a> {
        View { store, pending, name, unreadable: std::cell::RefCell::new(None) }
    }

    /// Why a value the handler read could not be read, if one could not. A handler's state
    /// view has no way to fail, so the value read as absent: the caller must throw away what
    /// the handler decided, which may be wrong (a create over a template whose body is
    /// unreadable), and stop the batch.
    pub fn unreadable(&self) -> Option<String> {
        self.unreadable.borrow_mut().take()
    }

    fn resolve(&self, stored: &[u8]) -> Option<Vec<u8>> {
        match self.store.files.load_noted(stored) {
            Ok(value) => Some(value),
            Err(error) => {
                *self.unreadable.borrow_mut() = Some(error.to_string());
                None
            }
        }
    }
}

impl StateView for View<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let full = state_key(self.name, key);
        match self.pending.overlay.get(&full) {
            Some(staged) => staged.value.clone(),
            // A read error here is a storage failure, not a missing key; the commit of the same
            // batch will hit it too and stop the batch before anything is acknowledged.
            None => self.store.stored(&full).ok().flatten().and_then(|stored| self.resolve(&stored)),
        }
    }

    fn scan_limit(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let full = state_key(self.name, prefix);
        let strip = state_key(self.name, b"").len();
        // The batch's own changes win over what the store holds.
        let under = || {
            self.pending
                .overlay
                .range(full.clone()..)
                .take_while(|(k, _)| k.starts_with(&full))
                .map(|(k, s)| (k, &s.value))
        };
        let deletes = under().filter(|(_, v)| v.is_none()).count();
        let stored = self
            .store
            .tree
            .scan_prefix(&full)
            .flatten()
            .take(limit.saturating_add(deletes))
            .filter_map(|(k, v)| Some((k.to_vec(), self.resolve(&v)?)))
            .collect();
        maestro_handlers::contract::merge_scan(stored, under(), limit)
            .into_iter()
            .map(|(k, v)| (k[strip..].to_vec(), v))
            .collect()
    }
}
