//! Membership (`member = "I/N"`): an engine started as member I writes only while it holds that
//! member's lease, a Redis key taken with `SET key token NX PX ttl`, renewed by a script that
//! extends it only for the holder's token, and deleted the same way at a clean stop.
//!
//! The lease fences the writers of one member's data: a second engine started as the same
//! member (a duplicated pod, a replacement started before the old one is known dead) waits
//! until the key expires. Possession is judged locally against a deadline, `ttl` minus a
//! safety margin after the last successful renewal was *sent*: Redis counts the ttl from when
//! it ran the command, later than that, so the holder's deadline always passes before the key
//! can expire and another engine take it. The batch cycle checks the deadline ([`Fence::check`])
//! before it appends, publishes, acknowledges or writes anything else to Redis; a paused or cut
//! off holder finds it passed and stops before any such write. What this cannot fence is a
//! pause that falls between a check and the write it guards (a few instructions): closing that
//! needs the lease token checked inside the writing scripts, which the key's hash tag allows.

use crate::config::EngineConfig;
use crate::connect::RedisClient;
use crate::error::{EngineError, Result};
use crate::source::Conn;
use crate::status::{Health, LeaseState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Extends the key's expiry when it still holds our token. KEYS[1] lease; ARGV token, ttl ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the key when it still holds our token. KEYS[1] lease; ARGV[1] token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0";

/// Engine `index` of `count`, parsed from `I/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub index: u32,
    pub count: u32,
}

impl Member {
    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(text: &str) -> Result<Member, String> {
        let bad = || format!("member: {text:?} is not I/N with 0 <= I < N (e.g. 0/3)");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = index.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Member { index, count })
    }
}

/// The lease key of member `index` in `group`, with a hash tag `{<group>:<index>}` of its own.
/// Partitions carry another tag (`maestro_schemas::partition`): a lease per partition, which
/// a script writing the partition could check in the same call, is not built yet.
pub fn lease_key(group: &str, index: u32) -> String {
    format!("maestro:engine:{group}:lease:{{{group}:{index}}}")
}

/// The router's lease key. A key of its own slot: what it fences (the router's reads, its
/// copies into every partition, its acknowledgements) spans slots, so no script checks it
/// in-slot; the router checks its [`Fence`] before each of them.
pub fn router_key(group: &str) -> String {
    format!("maestro:engine:{group}:router")
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the cycle consults before every write: always passes without membership.
#[derive(Clone, Debug, Default)]
pub struct Fence(Option<Arc<Held>>);

#[derive(Debug)]
struct Held {
    /// Writes stop when this passes; pulled to now when the key is found taken.
    deadline: Mutex<Instant>,
    why_lost: Mutex<String>,
}

impl Fence {
    /// Passes while the lease is held (or when there is no membership).
    pub fn check(&self) -> Result<()> {
        let Some(held) = &self.0 else { return Ok(()) };
        if Instant::now() < *held.deadline.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(());
        }
        Err(held.lost())
    }
}

impl Held {
    fn lost(&self) -> EngineError {
        let why = self.why_lost.lock().unwrap_or_else(PoisonError::into_inner).clone();
        EngineError::LeaseLost(if why.is_empty() { "not renewed before its deadline".into() } else { why })
    }
}

impl Fence {
    /// Returns the loss once the deadline has passed (never without membership): a cycle
    /// waiting on Redis (a read, or a write stuck in a partition) is stopped then, not when
    /// Redis answers. A passed deadline never moves again.
    pub async fn lapsed(&self) -> EngineError {
        let Some(held) = &self.0 else { return std::future::pending().await };
        loop {
            let deadline = *held.deadline.lock().unwrap_or_else(PoisonError::into_inner);
            if Instant::now() >= deadline {
                return held.lost();
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// One lease (a member's or the router's): the key, this process's identity, and the connection it is kept with.
#[derive(Debug)]
pub struct Lease {
    /// What holds it, for `/status`: `I/N`, or `router`.
    label: String,
    /// Whose lease the log lines name: "member's" or "router's".
    whose: &'static str,
    key: String,
    /// Host, pid and start time: names this process to whoever waits on it.
    identity: String,
    ttl: Duration,
    client: RedisClient,
    status: Arc<Health>,
    /// The token of the current holding and its renewal task, while held.
    holding: Option<(String, tokio::task::JoinHandle<()>)>,
    acquisitions: u64,
}

impl Lease {
    /// The lease of `config.member`, if any.
    pub fn new(config: &EngineConfig, client: &RedisClient, status: &Arc<Health>) -> Result<Option<Lease>> {
        let Some(member) = &config.member else { return Ok(None) };
        let member = Member::parse(member).map_err(EngineError::Config)?;
        let label = format!("{}/{}", member.index, member.count);
        let key = lease_key(&config.group, member.index);
        Ok(Some(Lease::with_key(label, "member's", key, config, client, status)))
    }

    /// The router's lease ([`router_key`]): one router at a time moves entries into partitions.
    pub fn router(config: &EngineConfig, client: &RedisClient, status: &Arc<Health>) -> Lease {
        Lease::with_key("router".into(), "router's", router_key(&config.group), config, client, status)
    }

    fn with_key(
        label: String,
        whose: &'static str,
        key: String,
        config: &EngineConfig,
        client: &RedisClient,
        status: &Arc<Health>,
    ) -> Lease {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let identity = format!("host={host} pid={} started_ms={}", std::process::id(), unix_ms());
        Lease {
            label,
            whose,
            key,
            identity,
            ttl: Duration::from_millis(config.lease_ttl_ms.max(100)),
            client: client.clone(),
            status: status.clone(),
            holding: None,
            acquisitions: 0,
        }
    }

    /// Writes stop this long before the ttl runs out: room for the renewal's round trip and
    /// for the two clocks (ours, Redis's) running at slightly different rates.
    fn margin(&self) -> Duration {
        self.ttl / 4
    }

    fn publish(&self, held: bool, holder: &str, since_ms: u64) {
        let state = LeaseState {
            member: self.label.clone(),
            key: self.key.clone(),
            held,
            holder: holder.to_string(),
            since_ms,
        };
        *self.status.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }

    /// Waits until this engine holds the lease, or until `stop` says to stop (then `None`).
    /// Logs once per holder that it waits and on whom.
    pub async fn acquire(&mut self, stop: &mut crate::runtime::Shutdown) -> Option<Fence> {
        let mut waiting_on: Option<String> = None;
        let mut conn: Option<Conn> = None;
        let pause = (self.ttl / 5).min(Duration::from_millis(500));
        loop {
            if crate::runtime::stopping(stop) {
                return None;
            }
            match self.try_take(&mut conn).await {
                Ok(Ok(fence)) => return Some(fence),
                Ok(Err(holder)) => {
                    if waiting_on.as_deref() != Some(holder.as_str()) {
                        tracing::warn!(
                            key = self.key,
                            holder,
                            "waiting on the {} lease: another engine holds it",
                            self.whose
                        );
                        self.publish(false, &holder, unix_ms());
                        waiting_on = Some(holder);
                    }
                }
                Err(error) => {
                    conn = None;
                    if waiting_on.as_deref() != Some("") {
                        tracing::warn!(key = self.key, %error, "waiting on the {} lease: redis unavailable", self.whose);
                        self.publish(false, "", unix_ms());
                        waiting_on = Some(String::new());
                    }
                }
            }
            crate::runtime::sleep_or_stop(stop, pause).await;
        }
    }

    /// One attempt: the fence if we took the key, else who holds it.
    async fn try_take(&mut self, conn: &mut Option<Conn>) -> Result<Result<Fence, String>> {
        let conn = match conn {
            Some(conn) => conn,
            None => conn.insert(self.client.connect(self.ttl / 4).await?),
        };
        self.acquisitions += 1;
        let token = format!("{} n={}", self.identity, self.acquisitions);
        let sent = Instant::now();
        let ttl_ms = self.ttl.as_millis() as u64;
        let taken: Option<String> =
            redis::cmd("SET").arg(&self.key).arg(&token).arg("NX").arg("PX").arg(ttl_ms).query_async(conn).await?;
        if taken.is_none() {
            let holder: Option<String> = redis::cmd("GET").arg(&self.key).query_async(conn).await?;
            return Ok(Err(holder.unwrap_or_default()));
        }
        let held = Arc::new(Held {
            deadline: Mutex::new(sent + self.ttl - self.margin()),
            why_lost: Mutex::new(String::new()),
        });
        tracing::info!(key = self.key, token, "holding the {} lease", self.whose);
        self.publish(true, &token, unix_ms());
        let renewer = Renewer {
            client: self.client.clone(),
            conn: conn.clone(),
            key: self.key.clone(),
            token: token.clone(),
            ttl: self.ttl,
            margin: self.margin(),
            held: held.clone(),
        };
        self.holding = Some((token, tokio::spawn(renewer.run())));
        Ok(Ok(Fence(Some(held))))
    }

    /// Whether this engine took the lease and has not lost or released it since (its fence
    /// may still fail first: the session then reports the loss).
    pub fn is_held(&self) -> bool {
        self.holding.is_some()
    }

    /// Stops renewing and deletes the key if it still holds our token, so that a waiting
    /// engine takes over at once rather than after the ttl. Best effort: an unreachable Redis
    /// lets the key expire.
    pub async fn release(&mut self) {
        let Some((token, renewer)) = self.holding.take() else { return };
        renewer.abort();
        let released = async {
            let mut conn = self.client.connect(self.ttl / 4).await?;
            let deleted: i64 = redis::Script::new(RELEASE).key(&self.key).arg(&token).invoke_async(&mut conn).await?;
            Ok::<_, EngineError>(deleted)
        };
        match released.await {
            Ok(1) => tracing::info!(key = self.key, "{} lease released", self.whose),
            Ok(_) => tracing::info!(key = self.key, "{} lease was no longer ours", self.whose),
            Err(error) => tracing::warn!(key = self.key, %error, "{} lease not released; it expires", self.whose),
        }
        self.publish(false, "", unix_ms());
    }

    /// After the fence failed: stop renewing (the key is not ours, or may not be) and say so.
    pub fn lost(&mut self, why: &str) {
        if let Some((_, renewer)) = self.holding.take() {
            renewer.abort();
        }
        tracing::error!(key = self.key, why, "{} lease lost: stopped writing; waiting on the lease", self.whose);
        self.publish(false, "", unix_ms());
    }
}

/// Renews the key every quarter ttl while the fence stands.
struct Renewer {
    client: RedisClient,
    conn: Conn,
    key: String,
    token: String,
    ttl: Duration,
    margin: Duration,
    held: Arc<Held>,
}

impl Renewer {
    async fn run(mut self) {
        let script = redis::Script::new(RENEW);
        let ttl_ms = self.ttl.as_millis() as u64;
        loop {
            tokio::time::sleep(self.ttl / 4).await;
            let sent = Instant::now();
            let renewed: redis::RedisResult<i64> =
                script.key(&self.key).arg(&self.token).arg(ttl_ms).invoke_async(&mut self.conn).await;
            match renewed {
                Ok(1) => {
                    let mut deadline = self.held.deadline.lock().unwrap_or_else(PoisonError::into_inner);
                    // A deadline already passed stays passed: the cycle may have stopped on it.
                    if Instant::now() < *deadline {
                        *deadline = sent + self.ttl - self.margin;
                    }
                }
                Ok(_) => {
                    *self.held.why_lost.lock().unwrap_or_else(PoisonError::into_inner) =
                        "the key expired or another engine holds it".into();
                    *self.held.deadline.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                    return;
                }
                Err(error) => {
                    // Retried until the deadline; the fence fails on its own when it passes.
                    tracing::warn!(key = self.key, %error, "lease not renewed; retrying");
                    *self.held.why_lost.lock().unwrap_or_else(PoisonError::into_inner) =
                        format!("not renewed before its deadline (redis: {error})");
                    // A connection that failed once may stay broken: the next try gets a new one.
                    if let Ok(conn) = self.client.connect(self.ttl / 4).await {
                        self.conn = conn;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_refuse() {
        assert_eq!(Member::parse("2/3"), Ok(Member { index: 2, count: 3 }));
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(Member::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn lease_key_has_a_hash_tag_per_member() {
        assert_eq!(lease_key("g", 1), "maestro:engine:g:lease:{g:1}");
        assert_eq!(router_key("g"), "maestro:engine:g:router");
    }

    #[test]
    fn a_passed_deadline_fails_the_fence() {
        assert!(Fence::default().check().is_ok());
        let held = Held { deadline: Mutex::new(Instant::now()), why_lost: Mutex::new(String::new()) };
        assert!(matches!(Fence(Some(Arc::new(held))).check(), Err(EngineError::LeaseLost(_))));
    }
}
