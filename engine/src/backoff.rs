//! Capped exponential back-off for retries.

use std::time::Duration;

/// Capped exponential back-off.
#[derive(Debug)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff { first, cap, current: first }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let now = self.current;
        self.current = (self.current * 2).min(self.cap);
        now
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.first;
    }
}
