//! What the batch cycle tells the world: `/status` counters ([`Health`]) and Prometheus
//! metrics, one method per step or outcome, so the cycle's code reads as its steps.

use crate::dispatch::DispatchReport;
use crate::source::RawEntry;
use crate::status::Health;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Counts each step of a batch in `/status` and `/metrics`.
#[derive(Debug)]
pub(super) struct BatchObserver {
    status: Arc<Health>,
}

impl BatchObserver {
    pub(super) fn new(status: Arc<Health>) -> BatchObserver {
        BatchObserver { status }
    }

    /// Step 1: entries Redis delivered, per stream.
    pub(super) fn read(&self, entries: &[RawEntry]) {
        Health::add(&self.status.entries_read, entries.len() as u64);
        let mut per_stream: BTreeMap<&str, u64> = BTreeMap::new();
        for entry in entries {
            *per_stream.entry(&entry.stream).or_default() += 1;
        }
        for (stream, n) in per_stream {
            metrics::counter!("maestro_entries_read_total", "stream" => stream.to_string()).increment(n);
        }
    }

    /// Entries Redis delivered as deleted (trimmed while pending): their content is gone.
    pub(super) fn lost(&self, stream: &str, n: u64) {
        if n > 0 {
            Health::add(&self.status.lost, n);
            metrics::counter!("maestro_entries_lost_total", "stream" => stream.to_string()).increment(n);
        }
    }

    /// Step 3: `n` records appended durably; the log's head is now `head_seq`.
    pub(super) fn appended(&self, n: usize, head_seq: u64) {
        Health::add(&self.status.records_appended, n as u64);
        self.status.head_seq.store(head_seq, Ordering::Relaxed);
        metrics::counter!("maestro_records_appended_total").increment(n as u64);
    }

    /// A clock record appended (and counted by [`BatchObserver::appended`]).
    pub(super) fn clocked(&self) {
        metrics::counter!("maestro_clock_records_total").increment(1);
    }

    /// Step 4: what the handlers did with the records.
    pub(super) fn dispatched(&self, report: DispatchReport) {
        if report.dead_lettered > 0 {
            Health::add(&self.status.dead_lettered, report.dead_lettered);
            metrics::counter!("maestro_dead_lettered_total").increment(report.dead_lettered);
        }
        for ((stream, reason), n) in report.ignored {
            Health::add(&self.status.ignored, n);
            metrics::counter!("maestro_ignored_total", "stream" => stream, "reason" => reason).increment(n);
        }
    }

    /// Step 6: `n` entries acknowledged, ending a batch that began at `started`.
    pub(super) fn acked(&self, n: usize, started: Instant) {
        Health::add(&self.status.entries_acked, n as u64);
        Health::add(&self.status.batches, 1);
        metrics::counter!("maestro_entries_acked_total").increment(n as u64);
        metrics::histogram!("maestro_batch_seconds").record(started.elapsed().as_secs_f64());
        self.status.batch_took(started.elapsed().as_micros() as u64);
    }
}
