//! The Prometheus recorder behind `/metrics`, and the engine's metrics registered at start:
//! a counter or histogram that first appears at the first event hides that event from
//! `increase()`/`rate()` and from an alert that waits for it, so each is exported from the
//! start, at zero, with its help text.

use maestro_engine::config::EngineConfig;
use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// Batch latency buckets, in seconds: from a fast in-memory batch to a slow disk.
const BATCH_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// Installs the global recorder and its upkeep task. Call once, inside a Tokio runtime.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("maestro_batch_seconds".into()), &BATCH_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Counters without labels: (name, help).
const COUNTERS: [(&str, &str); 8] = [
    ("maestro_records_appended_total", "Records appended to the log (entries, clock records)."),
    ("maestro_entries_acked_total", "Entries acknowledged in Redis after their records were durable."),
    (
        "maestro_dead_lettered_total",
        "Entries copied to a dead-letter stream (rejected, quarantined, a handler failed).",
    ),
    ("maestro_clock_records_total", "Clock records appended (Redis TIME, for time-outs)."),
    ("maestro_effects_started_total", "Effect intents whose runner started them."),
    ("maestro_effects_done_total", "Effect intents whose runner reported their last fact."),
    ("maestro_effects_failed_total", "Effect runs that failed."),
    ("maestro_effects_obsoleted_total", "Effect intents dropped because a later one made them pointless."),
];

/// Counters labelled by stream: (name, help).
const STREAM_COUNTERS: [(&str, &str); 4] = [
    ("maestro_entries_read_total", "Entries read from the stream."),
    ("maestro_entries_lost_total", "Entries deleted from the stream while pending: lost before they were recorded."),
    ("maestro_stream_errors_total", "Times an error of the stream's own (wrong type, no permission) stopped it."),
    ("maestro_group_skipped_total", "Entries the consumer group's position would have skipped."),
];

/// Gauges the engine sets as it runs (not registered at zero: a made-up value would be a lie
/// until the first measurement): (name, help).
const GAUGES: [(&str, &str); 16] = [
    ("maestro_up", "1 while the process answers."),
    ("maestro_ready", "1 while Redis is reachable, the log open, storage writable and the engine caught up."),
    ("maestro_redis_up", "1 while Redis answers."),
    ("maestro_storage_ok", "0 after a storage error (disk full, read-only) until the log reopens."),
    ("maestro_log_open", "1 while the log is open and the projections caught up with it."),
    ("maestro_head_seq", "Seq of the last durable record."),
    ("maestro_catch_up_remaining", "Records the projections still have to be dispatched before the engine reads."),
    (
        "maestro_anchor_accepted",
        "1 when the engine runs on a log that disagreed with an anchor, as an operator accepted.",
    ),
    ("maestro_resident_bytes", "Resident set size of the process, in bytes."),
    ("maestro_pending", "Entries delivered to the consumer group and not yet acknowledged, per stream."),
    ("maestro_lag", "Entries in the stream the consumer group has not been delivered yet, per stream."),
    ("maestro_log_bytes", "Size of the log's database on disk, in bytes."),
    ("maestro_stream_up", "1 while the stream is read, 0 while an error of its own stops it."),
    ("maestro_effects_in_flight", "Effect intents whose runner's task is still going."),
    ("maestro_lease_held", "A member's engine: 1 while it holds its lease (and writes), 0 while it waits on it."),
    ("maestro_lease_age_seconds", "A member's engine: seconds since it took its lease, or began waiting on it."),
];

/// Describes every metric and registers the counters and the batch histogram at zero (those
/// with a stream label once per configured stream). Call after [`install`].
pub fn register(config: &EngineConfig) {
    for (name, help) in COUNTERS {
        describe_counter!(name, help);
        metrics::counter!(name).absolute(0);
    }
    let streams: Vec<String> = config.streams.all().into_iter().map(|(_, key)| key.to_string()).collect();
    for (name, help) in STREAM_COUNTERS {
        describe_counter!(name, help);
        for stream in &streams {
            metrics::counter!(name, "stream" => stream.clone()).increment(0);
        }
    }
    describe_counter!(
        "maestro_ignored_total",
        "Valid entries a handler had nothing to do for, per stream and reason (a series appears with its first entry)."
    );
    describe_counter!("maestro_dead_letters_total", "Entries copied to a dead-letter stream, per stream and reason.");
    describe_counter!(
        "maestro_routed_total",
        "A router's entries per source stream, partition and outcome (routed, or already_routed: found in the partition after a crash)."
    );
    for (name, help) in GAUGES {
        describe_gauge!(name, help);
    }
    describe_gauge!("maestro_effects_waiting", "Effect intents waiting for a runner of their kind.");
    metrics::gauge!("maestro_catch_up_remaining").set(0.0);
    metrics::gauge!("maestro_anchor_accepted").set(0.0);
    describe_histogram!(
        "maestro_batch_seconds",
        metrics::Unit::Seconds,
        "Duration of one batch cycle, read to acknowledge."
    );
    let _registered = metrics::histogram!("maestro_batch_seconds");
}
