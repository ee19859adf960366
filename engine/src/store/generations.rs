//! Store generations: the live state tree is `state` at first, then `state.1`, `state.2`, ...
//! as rebuilds replace it whole; tree `store` names the live one. A rebuild fills the next
//! generation while the live one is untouched, then one flushed write makes it live.

use super::Store;
use super::chunked::copy_except;
use super::keys::{checkpoint_prefix, digest_key, position_key, state_key};
use crate::error::Result;
use crate::value_files::ValueFiles;

/// The tree that names the live state tree (under [`LIVE_KEY`]); until a rebuild replaces the
/// live store, it is [`FIRST_GENERATION`].
const POINTER_TREE: &str = "store";
const LIVE_KEY: &[u8] = b"live";
const FIRST_GENERATION: &str = "state";
/// Later generations are `state.1`, `state.2`, ...
const GENERATION_PREFIX: &str = "state.";

fn live_tree_name(db: &sled::Db) -> Result<String> {
    Ok(match db.open_tree(POINTER_TREE)?.get(LIVE_KEY)? {
        Some(name) => String::from_utf8_lossy(&name).into_owned(),
        None => FIRST_GENERATION.to_string(),
    })
}

impl Store {
    /// Whether sled tree `name` is one of the store's: the pointer tree or a generation. An old
    /// data dir has them in the log's database (see `datadir::migrate`).
    pub fn owns_tree(name: &[u8]) -> bool {
        name == POINTER_TREE.as_bytes()
            || name == FIRST_GENERATION.as_bytes()
            || name.starts_with(GENERATION_PREFIX.as_bytes())
    }

    /// The live store, after dropping any other generation a rebuild left behind.
    pub fn open(db: &sled::Db, files: ValueFiles) -> Result<Store> {
        let live = live_tree_name(db)?;
        for name in db.tree_names() {
            if name.starts_with(GENERATION_PREFIX.as_bytes()) && name != live.as_bytes() {
                tracing::warn!(tree = %String::from_utf8_lossy(&name), "dropping a state tree a rebuild left behind");
                db.drop_tree(name)?;
            }
        }
        Store::open_tree(db, &live, files)
    }

    /// A fresh, empty store in the next generation's tree, to be filled (by a rebuild) and
    /// then made live with [`Store::replace_live`]; until then the live store is untouched.
    pub fn next_generation(db: &sled::Db, files: ValueFiles) -> Result<Store> {
        let live = live_tree_name(db)?;
        let generation = live.strip_prefix(GENERATION_PREFIX).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        let name = format!("{GENERATION_PREFIX}{}", generation + 1);
        db.drop_tree(name.as_bytes())?;
        Ok(Store::open_tree(db, &name, files)?.knowing_its_keys())
    }

    /// Makes this store, made by [`Store::next_generation`] and filled with `rebuilt`'s
    /// projections, the live one: every key of `live` that is not of those projections (the
    /// other projections, the outbox, intents, the guard) is copied over, then one flushed write
    /// names this tree live, and the old tree is dropped. A crash before that write leaves the
    /// old store live; after it, the new one. Either way [`Store::open`] drops the other tree.
    /// Returns how many keys were copied.
    pub fn replace_live(&self, db: &sled::Db, live: &Store, rebuilt: &[&str]) -> Result<u64> {
        let mut skip_prefixes: Vec<Vec<u8>> = Vec::new();
        let mut skip_keys: Vec<Vec<u8>> = Vec::new();
        for name in rebuilt {
            skip_prefixes.push(state_key(name, b""));
            skip_prefixes.push(checkpoint_prefix(name));
            skip_keys.push(position_key(name));
            skip_keys.push(digest_key(name));
        }
        // The copied keys are not among those this store wrote: it no longer knows its keys.
        if let Ok(mut written) = self.written.write() {
            *written = None;
        }
        let copied = copy_except(&live.tree, &self.tree, &skip_prefixes, &skip_keys)?;
        let name = String::from_utf8_lossy(&self.tree.name()).into_owned();
        db.open_tree(POINTER_TREE)?.insert(LIVE_KEY, name.as_bytes())?;
        db.flush()?;
        db.drop_tree(live.tree.name())?;
        Ok(copied)
    }
}
