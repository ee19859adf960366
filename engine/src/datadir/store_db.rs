//! The projection store's sled database: `store/` beside the log's `db/`, so that the tools
//! that read only the log copy and open only the log, and the store's cache is sized on its
//! own (`store_cache_bytes`).
//!
//! It is opened on first use, once per open log ([`Log::store`]): in place for a writer, which
//! first moves an old data dir's store out of `db/` ([`super::migrate`]); for a read-only log,
//! from a copy of `store/` beside the tool's copy of `db/`, or, in an old data dir, from the
//! store's trees in that copy of `db/` (nothing of the data dir moves for a tool).

use super::open_db;
use crate::error::{EngineError, Result};
use crate::log::Log;
use crate::store::Store;
use std::fs::File;
use std::path::Path;

/// The store's sled directory in the data dir.
pub const STORE_DIR: &str = "store";

/// The store's sled cache unless the caller sizes it (`store_cache_bytes`).
pub const DEFAULT_STORE_CACHE_BYTES: u64 = 32 << 20;

impl Log {
    /// The live projection store of this data dir; its database, unless open already, is
    /// opened with the default cache.
    pub fn store(&self) -> Result<Store> {
        self.store_with_cache(DEFAULT_STORE_CACHE_BYTES)
    }

    /// The live projection store; its database, unless open already, is opened with a cache of
    /// `cache_bytes`.
    pub fn store_with_cache(&self, cache_bytes: u64) -> Result<Store> {
        let db = self.store_db_with_cache(cache_bytes)?;
        let store = Store::open(db, self.value_files())?;
        match self.copy_path() {
            Some(_) => Ok(store),
            None => Ok(store.syncing(data_file(&self.data_dir().join(STORE_DIR))?)),
        }
    }

    /// The store's sled database (opened with the default cache unless open already): what
    /// store generations are made in (`replay rebuild`).
    pub fn store_db(&self) -> Result<&sled::Db> {
        self.store_db_with_cache(DEFAULT_STORE_CACHE_BYTES)
    }

    fn store_db_with_cache(&self, cache_bytes: u64) -> Result<&sled::Db> {
        if let Some(db) = self.store_cell().get() {
            return Ok(db);
        }
        let db = match self.copy_path() {
            Some(copy) => open_copy(self, copy, cache_bytes)?,
            None => {
                super::migrate::move_store_out(self.db(), self.data_dir())?;
                open_db(&self.data_dir().join(STORE_DIR), cache_bytes)?
            }
        };
        Ok(self.store_cell().get_or_init(|| db))
    }
}

/// The store's database for a read-only log whose sled files are copied under `copy`: a copy of
/// `store/` there, or, in an old data dir (no `store/` yet), the log's own copy, which holds the
/// store's trees.
fn open_copy(log: &Log, copy: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let source = log.data_dir().join(STORE_DIR);
    if !source.is_dir() {
        return Ok(log.db().clone());
    }
    let target = copy.join(STORE_DIR);
    crate::read_only::copy_tree(&source, &target)?;
    open_db(&target, cache_bytes)
}

/// sled's data file in database directory `dir`, opened to be fsynced.
fn data_file(dir: &Path) -> Result<File> {
    let path = dir.join("db");
    File::open(&path).map_err(|source| EngineError::DataDir { path, source })
}
