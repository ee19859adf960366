//! The usage analytics projection: built from the entries of `templates:usage` in the log (the
//! engine's own answers read back, and any other producer's), it counts requests, successes
//! and handling-time percentiles per template, tenant, operation and day.
//!
//! State keys: `p/<tenant>\0<template>`, `n/<tenant>`, `o/<operation>`, `d/<day>` and the
//! finest grain `x/<day>\0<tenant>\0<template>\0<operation>`, each a JSON [`Stats`].

use super::model::key;
use crate::contract::{Change, Decision, Event, Handler, HandlerError, StateView};
use maestro_schemas::envelope::Limits;
use maestro_schemas::ids::format_utc_ms;
use maestro_schemas::proto::templates::TemplateUsageEvent;
use maestro_schemas::{Body, Event as Typed, Origin, Role, Status, decode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The projection's name.
pub const NAME: &str = "template_usage";

/// Durations below this many milliseconds get a bucket each; above, four buckets per doubling,
/// so a percentile is off by at most a quarter of its value.
const EXACT_BELOW: u64 = 16;

/// Counts and a duration histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub successes: u64,
    /// Histogram bucket -> count (see [`bucket`]).
    pub durations: BTreeMap<u32, u64>,
}

/// The histogram bucket of a duration in milliseconds.
pub fn bucket(ms: u64) -> u32 {
    if ms < EXACT_BELOW {
        return ms as u32;
    }
    let octave = 63 - ms.leading_zeros(); // at least 4
    let quarter = (ms >> (octave - 2)) & 3;
    EXACT_BELOW as u32 + (octave - 4) * 4 + quarter as u32
}

/// The largest duration that falls into `bucket`.
pub fn bucket_top(bucket: u32) -> u64 {
    if u64::from(bucket) < EXACT_BELOW {
        return u64::from(bucket);
    }
    let index = bucket - EXACT_BELOW as u32;
    let (octave, quarter) = (index / 4 + 4, u64::from(index % 4));
    let low = (4 + quarter) << (octave - 2);
    low + (1u64 << (octave - 2)) - 1
}

impl Stats {
    fn add(&mut self, success: bool, duration_ms: u64) {
        self.count += 1;
        self.successes += u64::from(success);
        *self.durations.entry(bucket(duration_ms)).or_default() += 1;
    }

    /// Share of successful requests, 0.0-1.0.
    pub fn success_rate(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.successes as f64 / self.count as f64 }
    }

    /// The `p`-th percentile (0-100) of the durations, as its bucket's upper bound.
    pub fn percentile(&self, p: f64) -> u64 {
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, n) in &self.durations {
            seen += n;
            if seen >= rank {
                return bucket_top(*bucket);
            }
        }
        0
    }
}

/// The handler.
#[derive(Clone, Debug)]
pub struct TemplateUsage {
    pub usage: String,
    pub limits: Limits,
}

impl TemplateUsage {
    fn event(&self, event: Event<'_>) -> Option<TemplateUsageEvent> {
        let Body::Entry(entry) = &event.record.body else { return None };
        if entry.stream != self.usage {
            return None;
        }
        let decoded;
        let typed = match (&entry.status, event.typed) {
            (Status::Accepted, Some(typed)) => &typed.event,
            // The engine's own usage entries are not handed over decoded: decode them here.
            (Status::Own, _) => {
                let origin = Origin { stream: &entry.stream, entry: entry.id };
                decoded = decode(Role::TemplatesUsage, origin, &entry.fields, &self.limits).ok()?;
                &decoded.event.event
            }
            _ => return None,
        };
        match typed {
            Typed::TemplateUsage(usage) => Some(usage.clone()),
            _ => None,
        }
    }
}

/// The day of a usage event: its own timestamp's date when it has one, else the entry's.
fn day(usage: &TemplateUsageEvent, entry_ms: u64) -> String {
    let stamp = usage.timestamp.get(..10).unwrap_or("");
    let is_date = stamp.len() == 10
        && stamp.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if is_date { stamp.to_string() } else { format_utc_ms(entry_ms)[..10].to_string() }
}

impl Handler for TemplateUsage {
    fn name(&self) -> &'static str {
        NAME
    }

    fn sees_own_outputs(&self) -> bool {
        true
    }

    fn handle(&self, state: &dyn StateView, event: Event<'_>) -> Result<Decision, HandlerError> {
        let Some(usage) = self.event(event) else { return Ok(Decision::default()) };
        let entry_ms = event.record.entry().map_or(0, |e| e.id.ms);
        let day = day(&usage, entry_ms);
        let (tenant, template, operation) = (&usage.tenant_id, &usage.template_id, &usage.operation);
        let keys = [
            key("p", tenant, &[template]),
            key("n", tenant, &[]),
            [b"o/", operation.as_bytes()].concat(),
            [b"d/", day.as_bytes()].concat(),
            key("x", &day, &[tenant, template, operation]),
        ];
        let duration = u64::try_from(usage.duration_ms).unwrap_or(0);
        let changes = keys
            .into_iter()
            .map(|key| {
                let mut stats: Stats =
                    state.get(&key).and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_default();
                stats.add(usage.success, duration);
                Change::Put { key, value: serde_json::to_vec(&stats).unwrap_or_default() }
            })
            .collect();
        Ok(Decision { changes, ..Decision::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_duration_in_order() {
        let mut last = 0;
        for ms in [0u64, 1, 15, 16, 19, 20, 31, 32, 100, 1_000, 65_535, 1 << 40] {
            let b = bucket(ms);
            assert!(b >= last, "{ms}");
            assert!(bucket_top(b) >= ms, "{ms} above its bucket's top {}", bucket_top(b));
            assert!(bucket_top(b) <= ms + ms / 4, "{ms}: bucket too coarse");
            last = b;
        }
    }

    #[test]
    fn percentiles_and_success_rate() {
        let mut stats = Stats::default();
        for ms in 1..=100 {
            stats.add(ms % 10 != 0, ms);
        }
        assert_eq!(stats.count, 100);
        assert!((stats.success_rate() - 0.9).abs() < 1e-9);
        assert_eq!(stats.percentile(10.0), 10);
        let p50 = stats.percentile(50.0);
        assert!((50..=59).contains(&p50), "{p50}");
        let p99 = stats.percentile(99.0);
        assert!((99..=111).contains(&p99), "{p99}");
    }
}
