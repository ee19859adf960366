//! The engine's run loop: [`run`] opens the data dir and retries sessions after storage
//! failures; `session` wires one opening of the log (projections, effect runners, the Redis
//! source); `cycle` follows Redis, and `Cycle::run_batch` is the batch cycle in the order the
//! architecture fixes: read, decode, append durably, dispatch, publish, acknowledge.
//!
//! Failures are sorted by where they leave us. A damaged log stops the engine with an error
//! that names the record. A storage error (disk full, read-only) drops the open log and
//! reopens it after a back-off: nothing unrecorded was acknowledged. A Redis error drops the
//! connections and retries with a capped back-off; entries delivered but not acknowledged come
//! back from the pending list, and the dedup index keeps them from being recorded twice.

use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::datadir::{DataDir, fresh_consumer_name};
use crate::error::{EngineError, Result};
use crate::status::Health;
use session::{AddressFile, RunWorld, session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

mod cycle;
mod observer;
mod session;
mod streams;

pub use session::{Domains, HTTP_FILE};

/// Stops the engine when it turns `true` (or when its sender is dropped).
pub type Shutdown = watch::Receiver<bool>;

pub(crate) fn stopping(shutdown: &Shutdown) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

pub(crate) async fn sleep_or_stop(shutdown: &mut Shutdown, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}

/// True for errors that a retry cannot fix: the engine reports them and exits.
fn is_fatal(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::Record(_)
            | EngineError::Damaged(_)
            | EngineError::Locked(_)
            | EngineError::Config(_)
            | EngineError::LeaseLost(_)
    )
}

fn is_storage(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::Storage(_) | EngineError::Sync(_) | EngineError::State(_) | EngineError::DataDir { .. }
    )
}

/// Runs the engine until `shutdown` fires. The caller owns the world: the domains, the status
/// it can watch, and the shutdown signal.
pub async fn run(config: EngineConfig, domains: Domains, status: Arc<Health>, mut shutdown: Shutdown) -> Result<()> {
    config.validate().map_err(EngineError::Config)?;
    let data_dir = DataDir::open(&config.data_dir)?;
    let _address = AddressFile::write(&data_dir, &status)?;
    let consumer = data_dir.consumer_name(fresh_consumer_name)?;
    let client = crate::connect::client(&config)?;
    tracing::info!(consumer, data_dir = %config.data_dir.display(), group = config.group, "engine starting");
    let mut lease = crate::lease::Lease::new(&config, &client, &status)?;
    let mut fence = crate::lease::Fence::default();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let world = RunWorld {
        config: &config,
        data_dir: &data_dir,
        consumer: &consumer,
        client: &client,
        domains: &domains,
        status: &status,
    };
    loop {
        // A member reads and writes nothing until it holds its lease (kept across reopenings
        // of the log after storage errors, taken again after it was lost).
        if let Some(lease) = &mut lease
            && !lease.is_held()
        {
            match lease.acquire(&mut shutdown).await {
                Some(held) => fence = held,
                None => return Ok(()),
            }
        }
        let result = session(world, &fence, &mut shutdown).await;
        Health::set(&status.log_open, false);
        *status.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        match result {
            Err(EngineError::LeaseLost(why)) if !stopping(&shutdown) => {
                Health::set(&status.caught_up, false);
                status.error(format!("member's lease lost: {why}"));
                if let Some(lease) = &mut lease {
                    lease.lost(&why);
                }
            }
            Ok(()) | Err(EngineError::LeaseLost(_)) => {
                release(&mut lease).await;
                tracing::info!("engine stopped");
                return Ok(());
            }
            Err(error) if is_fatal(&error) => {
                release(&mut lease).await;
                return Err(error);
            }
            Err(error) => {
                Health::set(&status.storage_ok, !is_storage(&error));
                status.error(error.to_string());
                tracing::error!(%error, "storage failed; nothing unrecorded was acknowledged; reopening the log");
                sleep_or_stop(&mut shutdown, backoff.next()).await;
                if stopping(&shutdown) {
                    release(&mut lease).await;
                    return Ok(());
                }
            }
        }
    }
}

async fn release(lease: &mut Option<crate::lease::Lease>) {
    if let Some(lease) = lease {
        lease.release().await;
    }
}
