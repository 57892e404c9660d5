//! What a flag's requests did, per state: answers by status class, errors
//! (5xx, the proxy's own included) and time to the response headers. Kept
//! across table swaps; read by the Prometheus exporter, the flags API and
//! the guard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::latency::{clamped, class_index, histogram};

#[derive(Debug)]
pub struct FlagCounts {
    states: Box<[(String, StateCounts)]>,
    /// Times the guard turned the flag off.
    trips: AtomicU64,
}

#[derive(Debug)]
pub struct StateCounts {
    classes: [AtomicU64; 5],
    errors: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    latency_sum_us: AtomicU64,
}

/// A state's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateTotals {
    pub requests: u64,
    pub errors: u64,
}

impl FlagCounts {
    pub(super) fn new(states: &[&str]) -> FlagCounts {
        FlagCounts {
            states: states
                .iter()
                .map(|name| {
                    let counts = StateCounts {
                        classes: Default::default(),
                        errors: AtomicU64::new(0),
                        latency: Mutex::new(histogram()),
                        latency_sum_us: AtomicU64::new(0),
                    };
                    ((*name).to_owned(), counts)
                })
                .collect(),
            trips: AtomicU64::new(0),
        }
    }

    pub(super) fn has_states(&self, states: &[&str]) -> bool {
        self.states.len() == states.len()
            && self.states.iter().zip(states).all(|((a, _), b)| a == b)
    }

    /// Counts one answer of `status` to a unit in `state`, after `latency`.
    pub fn record(&self, state: usize, status: u16, latency: Option<Duration>) {
        let Some((_, counts)) = self.states.get(state) else {
            return;
        };
        counts.classes[class_index(status)].fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = latency {
            let us = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            counts.latency_sum_us.fetch_add(us, Ordering::Relaxed);
            let mut histogram = counts
                .latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Auto-resizing: cannot fail for a value ≥ 1.
            let _ = histogram.record(clamped(us));
        }
    }

    /// Requests and errors of `state` so far.
    pub fn totals(&self, state: usize) -> StateTotals {
        self.states
            .get(state)
            .map(|(_, c)| StateTotals {
                requests: c.classes.iter().map(|n| n.load(Ordering::Relaxed)).sum(),
                errors: c.errors.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    /// Per state: its name, answers by status class, and its latency
    /// histogram with the sum of its values (µs).
    pub fn each(&self, mut read: impl FnMut(&str, [u64; 5], &Histogram<u64>, u64)) {
        for (name, counts) in self.states.iter() {
            let classes = counts.classes.each_ref().map(|n| n.load(Ordering::Relaxed));
            let histogram = counts
                .latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            read(
                name,
                classes,
                &histogram,
                counts.latency_sum_us.load(Ordering::Relaxed),
            );
        }
    }

    /// The guard turned the flag off once more.
    pub fn count_trip(&self) {
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }
}
