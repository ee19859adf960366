//! Moving an old data dir's projection store out of the log's database, once, at the first
//! writable open of the store.
//!
//! An old data dir keeps the store's trees (the pointer tree and its generations, see
//! `store/generations.rs`) in `db/`. They are copied into a fresh database `store.tmp/`,
//! which is flushed and fsynced, renamed to `store/`, the data dir fsynced; only then do the
//! trees leave `db/`. A crash at any step ends in the same state at the next open: before the
//! rename, `store.tmp/` is a leftover (removed) and the trees are still the store; after it,
//! `store/` is, and trees left in `db/` are dropped.

use super::open_db;
use super::store_db::STORE_DIR;
use crate::error::{EngineError, Result};
use crate::store::Store;
use std::path::Path;

/// The store's database while it is being moved, until its rename to [`STORE_DIR`].
const MOVING_DIR: &str = "store.tmp";

/// Keys copied in one sled batch.
const COPY_BATCH: usize = 10_000;

/// The cache of `store.tmp/` while it is written: every key is written once and never read.
const COPY_CACHE_BYTES: u64 = 16 << 20;

/// Moves the store's trees out of `log_db` (the log's database in data dir `dir`) into
/// `dir/store/`, unless it holds none; drops them when `store/` exists already.
pub(super) fn move_store_out(log_db: &sled::Db, dir: &Path) -> Result<()> {
    let moving = dir.join(MOVING_DIR);
    if moving.exists() {
        tracing::warn!(dir = %moving.display(), "removing a move of the projection store that did not finish");
        std::fs::remove_dir_all(&moving).map_err(io(&moving))?;
    }
    let trees: Vec<sled::IVec> = log_db.tree_names().into_iter().filter(|name| Store::owns_tree(name)).collect();
    if trees.is_empty() {
        return Ok(());
    }
    let target = dir.join(STORE_DIR);
    if target.exists() {
        tracing::warn!("dropping projection-store trees a move left in db/: store/ holds the store");
    } else {
        let started = std::time::Instant::now();
        let (keys, bytes) = copy_trees(log_db, &trees, &moving)?;
        crate::failpoint::crash_point("store-move-copied");
        std::fs::rename(&moving, &target).map_err(io(&target))?;
        sync_dir(dir)?;
        crate::failpoint::crash_point("store-move-renamed");
        tracing::info!(
            trees = trees.len(),
            keys,
            bytes,
            seconds = started.elapsed().as_secs_f64(),
            "moved the projection store out of the log's database (db/) into a database of its own (store/)"
        );
    }
    for name in &trees {
        log_db.drop_tree(name)?;
    }
    log_db.flush()?;
    Ok(())
}

/// Copies `trees` of `from` into a new database at `to`, made durable (flushed, closed, every
/// file and directory fsynced). Returns how many keys and bytes (keys and values) it copied.
fn copy_trees(from: &sled::Db, trees: &[sled::IVec], to: &Path) -> Result<(u64, u64)> {
    let (mut keys, mut bytes) = (0, 0);
    {
        let db = open_db(to, COPY_CACHE_BYTES)?;
        for name in trees {
            let (source, target) = (from.open_tree(name)?, db.open_tree(name)?);
            let mut batch = sled::Batch::default();
            let mut batched = 0;
            for item in source.iter() {
                let (key, value) = item?;
                keys += 1;
                bytes += (key.len() + value.len()) as u64;
                batch.insert(key, value);
                batched += 1;
                if batched == COPY_BATCH {
                    target.apply_batch(std::mem::take(&mut batch))?;
                    batched = 0;
                }
            }
            target.apply_batch(batch)?;
        }
        db.flush()?;
    }
    sync_tree(to)?;
    Ok((keys, bytes))
}

/// fsyncs every file under `dir`, then `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io(&path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::DataDir { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;

    /// Writes `pairs` into the store's first generation and pointer tree of `db`, as an old
    /// data dir holds them.
    fn old_store(db: &sled::Db, pairs: u32) {
        let state = db.open_tree("state").unwrap();
        for i in 0..pairs {
            state.insert(format!("pk\0{i:05}"), format!("v{i}").as_bytes()).unwrap();
        }
        db.open_tree("store").unwrap().insert("live", "state").unwrap();
        db.flush().unwrap();
    }

    fn contents(db: &sled::Db) -> Vec<(sled::IVec, sled::IVec)> {
        db.open_tree("state").unwrap().iter().map(|item| item.unwrap()).collect()
    }

    /// An old data dir's store moves into `store/` whole, once; a second open moves nothing
    /// and finds it there; a leftover `store.tmp/` and trees left in `db/` are cleared.
    #[test]
    fn the_store_moves_out_of_the_log_once_and_leftovers_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let expected = {
            let log = Log::open(tmp.path(), 1 << 20).unwrap();
            old_store(log.db(), 25_001);
            contents(log.db())
        };
        let log = Log::open(tmp.path(), 1 << 20).unwrap();
        let store = log.store().unwrap();
        assert_eq!(store.entries("k").unwrap().len(), 25_001);
        assert!(log.db().tree_names().iter().all(|name| !Store::owns_tree(name)), "the trees left db/");
        assert_eq!(contents(log.store_db().unwrap()), expected);
        drop((store, log));

        // A move cut short before its rename, and trees a move cut short after it left in db/.
        std::fs::create_dir_all(tmp.path().join(MOVING_DIR)).unwrap();
        let log = Log::open(tmp.path(), 1 << 20).unwrap();
        old_store(log.db(), 3);
        drop(log);
        let log = Log::open(tmp.path(), 1 << 20).unwrap();
        assert_eq!(contents(log.store_db().unwrap()), expected, "store/ is the store");
        assert!(!tmp.path().join(MOVING_DIR).exists());
        assert!(log.db().tree_names().iter().all(|name| !Store::owns_tree(name)));
    }
}
