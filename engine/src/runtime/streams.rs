//! Streams that fail alone, and consumer groups that stand past the log.
//!
//! An error of one key's own (a wrong type, an ACL that refuses the key, a group that cannot be
//! created on it) stops that stream only: it is logged with the key and the error, shown in
//! `/status` and `/metrics` (`maestro_stream_up`, `maestro_stream_errors_total`), and retried
//! with a back-off while the other streams are read. Errors of the connection or the server
//! stop every stream, as a Redis outage.
//!
//! A group "ahead of the log" on a stream: its `last-delivered-id` is past the log's cursor
//! for that stream, and entries between the two are neither in the log (they are above its
//! cursor) nor pending in the group. They were never delivered to this engine, and `>` reads
//! would never deliver them. Several engines may share one group, and then another engine's
//! acknowledged entries look exactly like that, with nothing in Redis to tell them apart; so
//! the check counts a skip only when no consumer but this engine's own is in the group on that
//! stream (someone who created the group at `$` or moved it with `XGROUP SETID` added no
//! consumer). A shared group is left as it is.

use super::cycle::Cycle;
use super::{Backoff, Shutdown, stopping};
use crate::error::{EngineError, Result};
use crate::source::ReadAhead;
use crate::status::Health;
use maestro_schemas::EntryId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which streams are refused, and since when they are retried.
#[derive(Debug, Default)]
pub(super) struct StreamHealth {
    /// Refused streams: the error, and when to try again.
    down: BTreeMap<String, (String, Instant)>,
    /// Kept across recoveries, so a stream that keeps failing is retried less and less often.
    backoffs: BTreeMap<String, Backoff>,
    /// Per stream, the group position whose skip was accepted (`accept_group_skip`): the skip
    /// is not counted twice.
    accepted: BTreeMap<String, EntryId>,
}

impl StreamHealth {
    /// Every stream starts up, in `/status` and `/metrics`.
    pub(super) fn new(streams: &[String], status: &Health) -> StreamHealth {
        for stream in streams {
            status.stream(stream, |s| s.up = true);
            metrics::gauge!("maestro_stream_up", "stream" => stream.clone()).set(1.0);
        }
        StreamHealth::default()
    }

    pub(super) fn is_down(&self, stream: &str) -> bool {
        self.down.contains_key(stream)
    }

    pub(super) fn any_due(&self) -> bool {
        self.down.values().any(|(_, at)| Instant::now() >= *at)
    }
}

impl Cycle {
    pub(super) async fn drain_pending(&mut self, shutdown: &Shutdown) -> Result<()> {
        for stream in self.up_streams() {
            self.drain_stream(&stream, shutdown).await?;
        }
        Ok(())
    }

    /// Makes sure the group exists on every stream; a stream refused for a reason of its own
    /// stops alone.
    pub(super) async fn ensure_groups(&mut self) -> Result<()> {
        let log = &self.log;
        for (stream, error) in self.source.ensure_groups(|stream| log.cursor(stream)).await? {
            self.stream_failed(&stream, &error);
        }
        Ok(())
    }

    pub(super) async fn claim_idle(&mut self) -> Result<()> {
        let min_idle = Duration::from_millis(self.config.claim_min_idle_ms);
        for stream in self.up_streams() {
            let mut start = "0-0".to_string();
            // Bounded: a janitor pass must not starve new reads.
            for _ in 0..10 {
                let (claimed, next, deleted) = match self.source.claim(&stream, min_idle, &start).await {
                    Err(e) if e.belongs_to_stream() => {
                        self.stream_failed(&stream, &e);
                        break;
                    }
                    other => other?,
                };
                for id in &deleted {
                    tracing::warn!(stream, id = %id, "entry deleted while pending in another consumer: lost");
                }
                self.observer.lost(&stream, deleted.len() as u64);
                if !claimed.is_empty() {
                    tracing::info!(stream, count = claimed.len(), "claimed idle entries of another consumer");
                    self.run_batch(claimed).await?;
                }
                if next == "0-0" {
                    break;
                }
                start = next;
            }
        }
        Ok(())
    }

    /// The configured streams that are not refused.
    pub(super) fn up_streams(&self) -> Vec<String> {
        self.source.config().streams.iter().filter(|s| !self.health.is_down(s)).cloned().collect()
    }

    /// Starts reading ahead the streams that are not refused.
    pub(super) async fn reader(&mut self) -> Result<ReadAhead> {
        self.source.read_ahead(self.up_streams()).await
    }

    /// Stops one stream after an error of its own; it is tried again after a back-off.
    pub(super) fn stream_failed(&mut self, stream: &str, error: &EngineError) {
        let mut text = error.to_string();
        // redis-rs names some codes in its own words ("NoPerm"): keep Redis's, which operators
        // search for.
        if let EngineError::Redis(e) = error
            && let Some(code) = e.code()
            && !text.contains(code)
        {
            text = format!("{code}: {text}");
        }
        let wait = self
            .health
            .backoffs
            .entry(stream.to_string())
            .or_insert_with(|| Backoff::new(Duration::from_millis(200), Duration::from_secs(5)))
            .next();
        let was_up = !self.health.is_down(stream);
        let changed = self.health.down.get(stream).is_none_or(|(last, _)| *last != text);
        if changed {
            tracing::error!(stream, error = %text, "stream refused by redis; the other streams go on; retrying it");
        }
        if was_up {
            metrics::counter!("maestro_stream_errors_total", "stream" => stream.to_string()).increment(1);
            metrics::gauge!("maestro_stream_up", "stream" => stream.to_string()).set(0.0);
        }
        self.status.stream(stream, |s| {
            s.up = false;
            s.error.clone_from(&text);
            s.errors += u64::from(was_up);
        });
        self.health.down.insert(stream.to_string(), (text, Instant::now() + wait));
    }

    fn stream_recovered(&mut self, stream: &str) {
        self.health.down.remove(stream);
        tracing::info!(stream, "stream readable again");
        metrics::gauge!("maestro_stream_up", "stream" => stream.to_string()).set(1.0);
        self.status.stream(stream, |s| {
            s.up = true;
            s.error.clear();
        });
    }

    /// Tries the refused streams whose back-off ran out: makes sure the group exists, then
    /// reads what this consumer still has pending there. True when one came back (the reader
    /// must be started again to include it).
    pub(super) async fn retry_streams(&mut self, shutdown: &Shutdown) -> Result<bool> {
        let due: Vec<String> =
            self.health.down.iter().filter(|(_, (_, at))| Instant::now() >= *at).map(|(s, _)| s.clone()).collect();
        let mut recovered = false;
        for stream in due {
            let cursor = self.log.cursor(&stream)?;
            match self.source.ensure_group(&stream, cursor).await {
                Ok(()) => {
                    self.stream_recovered(&stream);
                    self.check_group(&stream).await?;
                    self.drain_stream(&stream, shutdown).await?;
                    recovered = true;
                }
                Err(e) if e.belongs_to_stream() => self.stream_failed(&stream, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(recovered)
    }

    /// Reads this consumer's own pending entries of one stream and runs them as batches.
    pub(super) async fn drain_stream(&mut self, stream: &str, shutdown: &Shutdown) -> Result<()> {
        let mut after = EntryId::ZERO;
        while !stopping(shutdown) {
            let entries = match self.source.read_pending(stream, after).await {
                Ok(entries) => entries,
                Err(e) if e.belongs_to_stream() => {
                    self.stream_failed(stream, &e);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let Some(last) = entries.last() else { break };
            after = last.id;
            self.run_batch(entries).await?;
        }
        Ok(())
    }

    /// Checks every stream that is read for a group position past entries the log never
    /// recorded (see the module's comment).
    pub(super) async fn check_groups(&mut self) -> Result<()> {
        for stream in self.up_streams() {
            self.check_group(&stream).await?;
        }
        Ok(())
    }

    async fn check_group(&mut self, stream: &str) -> Result<()> {
        let cursor = self.log.cursor(stream)?;
        let position = match self.source.group_position(stream).await {
            Ok(Some(position)) => position,
            Ok(None) => return Ok(()),
            Err(e) if e.belongs_to_stream() => {
                self.stream_failed(stream, &e);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let from = cursor.max(self.health.accepted.get(stream).copied());
        let own = &self.source.config().consumer;
        if position.last_delivered <= from.unwrap_or(EntryId::ZERO) || position.consumers.iter().any(|c| c != own) {
            return Ok(());
        }
        let skipped = self.source.skipped(stream, from, position.last_delivered).await?;
        let (Some(first), Some(last)) = (skipped.first, skipped.last) else { return Ok(()) };
        let group_at = position.last_delivered;
        let log_at = from.map_or_else(|| "none".to_string(), |id| id.to_string());
        tracing::warn!(
            stream, count = skipped.count, first = %first, last = %last, group_at = %group_at, log_at,
            "consumer group stands past entries the log never recorded"
        );
        metrics::counter!("maestro_group_skipped_total", "stream" => stream.to_string()).increment(skipped.count);
        self.status.stream(stream, |s| s.group_skipped += skipped.count);
        if self.config.accept_group_skip {
            tracing::warn!(
                stream,
                count = skipped.count,
                "skip accepted (accept_group_skip): those entries are not read"
            );
            self.health.accepted.insert(stream.to_string(), group_at);
        } else {
            self.source.set_group_id(stream, from).await?;
            tracing::info!(
                stream,
                to = log_at,
                "consumer group moved back to the log's cursor: the skipped entries are read"
            );
        }
        Ok(())
    }
}
