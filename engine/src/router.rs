//! The router: moves entries from the unpartitioned stream keys that producers write into
//! their partitions (`maestro_schemas::partition`), each exactly once.
//!
//! One router at a time holds the router's lease (`lease.rs`, [`crate::lease::router_key`]);
//! another waits on it and says so. The holder reads the routed streams through a consumer
//! group of its own (`<group>-router`), first claiming every entry a dead holder left pending
//! (`XAUTOCLAIM` from the start, in id order), then new ones. For each entry, in id order per
//! stream, the domains name a partition ([`Routing::partition_of`]) and the router copies the
//! entry's fields byte for byte into the partition's key **under the entry's own id**
//! (`XADD <partition key> <id> ...`); then it acknowledges the entry.
//!
//! Why that is exactly once: each partition key receives the entries of one source stream
//! only, in increasing id order, so Redis refuses a copy whose id is not above the key's last
//! id ("equal or smaller than the target stream top item") only when that entry, or one after
//! it, is already there, and a later one is only ever copied after this one. A crash between
//! the copy and the acknowledgement leaves the entry pending; the next holder copies it again,
//! Redis refuses, and the router counts it as already routed and acknowledges it. Any other
//! refusal is an error: the batch stops there, unacknowledged, and is retried.
//!
//! The record of each routing decision is the partition key itself: the copy keeps the
//! original id, so `XRANGE <partition key> <id> <id>` answers where an entry went, for as long
//! as the partitions keep their entries; the router logs its counts per stream and partition
//! (`/status`, `/metrics`), and each decision at debug level.

use crate::backoff::Backoff;
use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::lease::{Fence, Lease};
use crate::runtime::{Shutdown, sleep_or_stop, stopping};
use crate::status::Health;
use maestro_schemas::EntryId;
use std::sync::Arc;
use std::time::Duration;

mod copy;

/// The partition (`0..partitions`) of an entry, given its stream, id and fields as Redis held
/// them; the domains decide it. An entry they cannot read goes to partition 0, whose engine
/// dead-letters it.
pub type PartitionOf = Arc<dyn Fn(&str, EntryId, &[(Vec<u8>, Vec<u8>)], u32) -> u32 + Send + Sync>;

/// What the router is handed: which streams producers write (the others carry answers and
/// stay where they are) and how an entry's partition is decided.
#[derive(Clone)]
pub struct Routing {
    pub streams: Vec<String>,
    pub partition_of: PartitionOf,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing").field("streams", &self.streams).finish_non_exhaustive()
    }
}

/// The router's consumer group on the unpartitioned keys: apart from the engines' own group,
/// which old engines may still read the same keys with.
pub fn router_group(group: &str) -> String {
    format!("{group}-router")
}

/// Checks what makes routing pointless or impossible.
fn check(config: &EngineConfig, routing: &Routing) -> Result<()> {
    config.validate().map_err(EngineError::Config)?;
    if config.partitions < 2 {
        return Err(EngineError::Config(
            "route: partitions must be at least 2 (one partition is today's keys: nothing to move)".into(),
        ));
    }
    if routing.streams.is_empty() {
        return Err(EngineError::Config("route: no stream to route".into()));
    }
    Ok(())
}

/// Routes until `shutdown` fires: waits on the router's lease, then follows the streams;
/// after a Redis error it reconnects with a capped back-off (the entries in hand stay pending
/// and are claimed again), after a lost lease it waits on the lease again.
pub async fn route(config: EngineConfig, routing: Routing, status: Arc<Health>, mut shutdown: Shutdown) -> Result<()> {
    check(&config, &routing)?;
    let client = crate::connect::client(&config)?;
    let consumer = crate::datadir::fresh_consumer_name();
    // No log: readiness is Redis answering and the streams caught up.
    Health::set(&status.log_open, true);
    Health::set(&status.storage_ok, true);
    tracing::info!(consumer, partitions = config.partitions, streams = ?routing.streams, "router starting");
    let mut lease = Lease::router(&config, &client, &status);
    let mut fence = Fence::default();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if !lease.is_held() {
            match lease.acquire(&mut shutdown).await {
                Some(held) => fence = held,
                None => return Ok(()),
            }
        }
        let result = copy::Copier::connect(&config, &routing, &status, &fence, &consumer, &client).await;
        let result = match result {
            Ok(mut copier) => copier.follow(&mut shutdown, &mut backoff).await,
            Err(error) => Err(error),
        };
        Health::set(&status.redis_up, false);
        match result {
            Ok(()) => break,
            Err(EngineError::LeaseLost(why)) if !stopping(&shutdown) => {
                status.error(format!("router's lease lost: {why}"));
                lease.lost(&why);
            }
            Err(EngineError::LeaseLost(_)) => break,
            Err(error @ EngineError::Config(_)) => {
                lease.release().await;
                return Err(error);
            }
            Err(error) => {
                status.error(error.to_string());
                tracing::error!(%error, "router: redis failed; entries in hand stay pending and are routed again");
                sleep_or_stop(&mut shutdown, backoff.next()).await;
                if stopping(&shutdown) {
                    break;
                }
            }
        }
    }
    lease.release().await;
    tracing::info!("router stopped");
    Ok(())
}
