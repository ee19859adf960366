//! Opening a data dir for a tool that must not change a byte of it.
//!
//! sled 0.34 has no read-only mode: opening a database writes its config and snapshot, and
//! recovery after damage rewrites the data file (a failed open could truncate `db/db` so that
//! the next open passed). The tools therefore open a copy of `db/` in a temporary directory
//! (`TMPDIR`), and the projection store's `store/` beside it only when they read projections;
//! `std::fs::copy` uses `copy_file_range`, which shares the blocks instead of
//! copying them on a file system with reflinks (btrfs, XFS) when `TMPDIR` is on the same one.
//! Everything else of the data dir (`HEAD`, `values/`, `history.git`) is only read in place.

use crate::error::{EngineError, Result};
use std::path::Path;

/// Copies the sled directory `db` (files and sub-directories) into a new temporary directory,
/// as `<temp>/db`.
pub fn copy_db(db: &Path) -> Result<tempfile::TempDir> {
    let scratch = tempfile::Builder::new()
        .prefix("maestro-read-only-")
        .tempdir()
        .map_err(|source| EngineError::DataDir { path: std::env::temp_dir(), source })?;
    copy_tree(db, &scratch.path().join("db"))?;
    Ok(scratch)
}

/// Copies directory `from` (files and sub-directories) to `to`.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::DataDir { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(io(&source))?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(io(&source))?;
        }
    }
    Ok(())
}
