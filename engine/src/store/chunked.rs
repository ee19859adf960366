//! Writing many keys into a sled tree in chunks: sled handles one batch of many thousand keys
//! badly, so loads and generation copies go in batches that are not atomic together.

use crate::error::Result;

/// Writes changes into a tree in batches of at most `chunk` keys. sled handles a batch of many
/// thousand keys badly (measured: 250,000 keys of 400 B in one batch took 6 s and 2-3 GB, in
/// batches of 1,000 about 1 s and 110 MB), but batches are not atomic together.
pub(super) struct Chunked<'a> {
    tree: &'a sled::Tree,
    chunk: usize,
    batch: sled::Batch,
    keys: usize,
}

impl<'a> Chunked<'a> {
    pub(super) fn new(tree: &'a sled::Tree, chunk: usize) -> Chunked<'a> {
        Chunked { tree, chunk, batch: sled::Batch::default(), keys: 0 }
    }

    pub(super) fn write(&mut self, key: impl Into<sled::IVec>, value: Option<impl Into<sled::IVec>>) -> Result<()> {
        match value {
            Some(value) => self.batch.insert(key, value),
            None => self.batch.remove(key),
        }
        self.keys += 1;
        if self.keys == self.chunk {
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.keys = 0;
        }
        Ok(())
    }

    /// What is left to apply: the caller may add to it before applying it.
    pub(super) fn rest(self) -> sled::Batch {
        self.batch
    }
}

/// Copies every key of `from` into `to` except those under `skip_prefixes` (jumped over, not
/// read) and `skip_keys`, in chunks. Returns how many were copied.
pub(super) fn copy_except(
    from: &sled::Tree,
    to: &sled::Tree,
    skip_prefixes: &[Vec<u8>],
    skip_keys: &[Vec<u8>],
) -> Result<u64> {
    let mut copied = 0;
    let mut writer = Chunked::new(to, LOAD_CHUNK);
    let mut start = Vec::new();
    'scan: loop {
        for item in from.range(start.clone()..) {
            let (key, value) = item?;
            if let Some(prefix) = skip_prefixes.iter().find(|p| key.starts_with(p)) {
                match successor(prefix) {
                    Some(next) => start = next,
                    None => break 'scan,
                }
                continue 'scan;
            }
            if !skip_keys.iter().any(|k| k.as_slice() == key.as_ref()) {
                writer.write(key, Some(value))?;
                copied += 1;
            }
        }
        break;
    }
    to.apply_batch(writer.rest())?;
    Ok(copied)
}

/// The first key after every key that starts with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Keys per batch of [`Store::load`].
pub(super) const LOAD_CHUNK: usize = 1_000;
