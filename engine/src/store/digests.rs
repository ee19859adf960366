//! Each projection's state digest (see `maestro_schemas::digest`): kept under `d` + name and
//! brought up to date by every commit, so a checkpoint costs one read, not a scan.

use super::keys::{digest_key, state_key};
use super::{Entries, Store};
use crate::error::{EngineError, Result};
use maestro_schemas::digest::StateDigest;

impl Store {
    /// The state hash of projection `name` (see `maestro_schemas::digest`): the same state
    /// always hashes the same, however it was built. Kept current by every commit, so a
    /// checkpoint costs one read, not a scan of the state.
    pub fn state_hash(&self, name: &str) -> Result<[u8; 32]> {
        Ok(self.digest(name)?.to_bytes())
    }

    /// The kept digest, or, for a store written before digests were kept, one computed from
    /// the state (and kept from then on).
    pub(super) fn digest(&self, name: &str) -> Result<StateDigest> {
        if let Some(bytes) = self.tree.get(digest_key(name))? {
            return StateDigest::from_bytes(&bytes)
                .ok_or_else(|| EngineError::State(format!("state digest of {name} is damaged")));
        }
        let digest = self.scan_digest(name)?;
        if digest != StateDigest::default() {
            self.tree.insert(digest_key(name), &digest.to_bytes())?;
        }
        Ok(digest)
    }

    /// The digest of projection `name` computed from every key, ignoring the kept one.
    pub fn scan_digest(&self, name: &str) -> Result<StateDigest> {
        let prefix = state_key(name, b"");
        let mut digest = StateDigest::default();
        for item in self.tree.scan_prefix(&prefix) {
            let (key, value) = item?;
            digest.add(&key[prefix.len()..], &self.files.load(&value)?);
        }
        Ok(digest)
    }

    /// Every (key, value) of projection `name` if they hash to its kept digest; `None` when
    /// they do not (the state was changed behind the engine's back, or, read beside a running
    /// engine, a commit landed during the scan).
    pub fn entries_if_kept(&self, name: &str) -> Result<Option<Entries>> {
        let kept = self.digest(name)?;
        let entries = self.entries(name)?;
        let scanned = StateDigest::of(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        Ok((scanned == kept).then_some(entries))
    }
}
