//! The state hash of a projection: an order-free digest of its (key, value) pairs, so that the
//! store keeps it current one change at a time instead of rereading the whole state at every
//! checkpoint. It is the wrapping sum, as four little-endian 64-bit words, of
//! `blake3(len(key) | key | len(value) | value)` over the entries (lengths as u64 LE). The same
//! state always has the same digest, however it was built.

/// A running digest of a key/value state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateDigest([u64; 4]);

fn entry_words(key: &[u8], value: &[u8]) -> [u64; 4] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(&(value.len() as u64).to_le_bytes());
    hasher.update(value);
    let bytes = hasher.finalize();
    let mut words = [0u64; 4];
    for (word, chunk) in words.iter_mut().zip(bytes.as_bytes().chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        *word = u64::from_le_bytes(eight);
    }
    words
}

impl StateDigest {
    /// The digest of a whole state.
    pub fn of<'a>(entries: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> StateDigest {
        let mut digest = StateDigest::default();
        for (key, value) in entries {
            digest.add(key, value);
        }
        digest
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        for (word, e) in self.0.iter_mut().zip(entry_words(key, value)) {
            *word = word.wrapping_add(e);
        }
    }

    /// What key `key` with `value` counts in its state's digest: nothing when it is absent.
    pub fn of_entry(key: &[u8], value: Option<&[u8]>) -> StateDigest {
        value.map_or_else(StateDigest::default, |value| StateDigest(entry_words(key, value)))
    }

    /// Takes another digest's entries out again (the inverse of [`StateDigest::merge`]).
    pub fn unmerge(&mut self, other: &StateDigest) {
        for (word, e) in self.0.iter_mut().zip(other.0) {
            *word = word.wrapping_sub(e);
        }
    }

    /// Adds another digest's entries (a digest of changes kept apart, say).
    pub fn merge(&mut self, other: &StateDigest) {
        for (word, e) in self.0.iter_mut().zip(other.0) {
            *word = word.wrapping_add(e);
        }
    }

    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<StateDigest> {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(bytes.get(..32)?.chunks_exact(8)) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(chunk);
            *word = u64::from_le_bytes(eight);
        }
        Some(StateDigest(words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_free_and_exact_under_changes() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..50u8).map(|i| (vec![i, 1], vec![i; i as usize])).collect();
        let forward = StateDigest::of(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let backward = StateDigest::of(entries.iter().rev().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(forward, backward);
        // Entry 7 replaced, then put back: the running digest equals the replaced state's.
        let old = StateDigest::of_entry(&entries[7].0, Some(&entries[7].1));
        let mut changed = forward;
        changed.unmerge(&old);
        changed.merge(&StateDigest::of_entry(&entries[7].0, Some(b"new")));
        let replaced = entries.iter().map(|(k, v)| (k.as_slice(), if k == &entries[7].0 { &b"new"[..] } else { v }));
        assert_eq!(changed, StateDigest::of(replaced));
        changed.unmerge(&StateDigest::of_entry(&entries[7].0, Some(b"new")));
        changed.merge(&old);
        assert_eq!(changed, forward);
        assert_eq!(StateDigest::of_entry(b"absent", None), StateDigest::default(), "an absent key counts nothing");
        // Moving bytes between key and value changes the digest (lengths are hashed).
        assert_ne!(
            StateDigest::of([(&b"ab"[..], &b"c"[..])].into_iter()),
            StateDigest::of([(&b"a"[..], &b"bc"[..])].into_iter())
        );
        assert_eq!(StateDigest::from_bytes(&forward.to_bytes()), Some(forward));
    }
}
