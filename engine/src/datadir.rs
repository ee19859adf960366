//! The data directory: an exclusive lock, the stable consumer name, and the sled database.
//!
//! Layout: `LOCK` (held while open), `consumer` (the Redis consumer name, written on first
//! start), `HEAD` (the log's head anchor), `db/` (sled: the log), `store/` (sled: the
//! projection store, see [`store_db`]), `values/` (large state values), `segments/` (sealed
//! log).
//!
//! Each sled database is opened once per data dir, here ([`open_db`]): the log's by the log,
//! the store's on first use by [`Log::store`], which hands out the store: the log and the
//! store never name each other.

mod migrate;
mod store_db;
pub use store_db::{DEFAULT_STORE_CACHE_BYTES, STORE_DIR};

use crate::error::{EngineError, Result};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: Option<File>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::DataDir { path: path.to_path_buf(), source }
}

impl DataDir {
    /// Creates the directory if needed and takes its lock; fails at once when another process
    /// holds it.
    pub fn open(path: &Path) -> Result<DataDir> {
        fs::create_dir_all(path).map_err(io(path))?;
        let lock_path = path.join("LOCK");
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => Ok(DataDir { path: path.to_path_buf(), _lock: Some(lock) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::Locked(path.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&lock_path)(e)),
        }
    }

    /// Takes the lock of an existing data dir without writing to it: `LOCK` is opened for
    /// reading, and a data dir without one (no engine ever ran on it, or a copy) is not locked.
    pub fn open_existing(path: &Path) -> Result<DataDir> {
        let lock_path = path.join("LOCK");
        let lock = match File::open(&lock_path) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DataDir { path: path.to_path_buf(), _lock: None });
            }
            Err(e) => return Err(io(&lock_path)(e)),
        };
        match lock.try_lock_shared() {
            Ok(()) => Ok(DataDir { path: path.to_path_buf(), _lock: Some(lock) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::Locked(path.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&lock_path)(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The consumer name stored on first start. `fresh` makes one when there is none yet; it
    /// need not be deterministic (only the log's contents must be), only stable across restarts.
    pub fn consumer_name(&self, fresh: impl FnOnce() -> String) -> Result<String> {
        let file = self.path.join("consumer");
        match fs::read_to_string(&file) {
            Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&file)(e)),
        }
        let name = fresh();
        let tmp = self.path.join("consumer.tmp");
        fs::write(&tmp, &name).map_err(io(&tmp))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        fs::rename(&tmp, &file).map_err(io(&file))?;
        Ok(name)
    }
}

/// Opens sled. Two of its habits are handled here. It panics on some damaged files instead of
/// returning an error: the panic is caught and named. And a handle dropped a moment ago keeps
/// the files locked until its flusher thread ends (up to one flush interval): since the data
/// dir's own lock already keeps other engines out, a lock conflict here is that handle, and is
/// waited out for up to 2 s.
pub(crate) fn open_db(db_path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let mut attempts = 0;
    loop {
        let config = sled::Config::new().path(db_path).cache_capacity(cache_bytes).flush_every_ms(Some(500));
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open())).map_err(|panic| {
                let text = crate::error::panic_text(panic.as_ref());
                EngineError::Damaged(format!("sled cannot open {}: its files are damaged ({text})", db_path.display()))
            })?;
        match opened {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// A consumer name unique enough for one group: host name, process id and start time.
pub fn fresh_consumer_name() -> String {
    let host = fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "host".to_string() } else { host };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("maestro-{host}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_consumer_name_is_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        assert!(matches!(DataDir::open(tmp.path()), Err(EngineError::Locked(_))));
        let first = dir.consumer_name(|| "c-1".into()).unwrap();
        let second = dir.consumer_name(|| "c-2".into()).unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("c-1", "c-1"));
        drop(dir);
        assert!(DataDir::open(tmp.path()).is_ok());
    }
}
