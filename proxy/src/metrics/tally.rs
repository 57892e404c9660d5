//! A tally of finished requests (latency histograms and counters) and the
//! figures read from one: what a shard records into, what windows and totals
//! add up, and what the stats API and health decisions read.

use std::sync::Arc;
use std::time::Duration;

use quanta::Instant;

use hdrhistogram::Histogram;

use crate::error::UpstreamErrorKind;

pub use crate::latency::CODE_CLASSES;
pub(crate) use crate::latency::{
    clamped, class_index, histogram, HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS,
};

#[inline]
pub(crate) fn kind_index(kind: UpstreamErrorKind) -> usize {
    match kind {
        UpstreamErrorKind::Connect => 0,
        UpstreamErrorKind::Timeout => 1,
        UpstreamErrorKind::Reset => 2,
        UpstreamErrorKind::Protocol => 3,
    }
}

/// How one request ended, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The status the client was sent (502/504 for upstream failures).
    pub status: u16,
    /// Set when the upstream failed, before or after the response headers.
    pub upstream_error: Option<UpstreamErrorKind>,
    /// Start of the request to its response headers.
    pub headers: Duration,
    /// Start of the request to the last body byte (or to the abort).
    pub last_byte: Duration,
    /// The client went away before the body's end.
    pub aborted: bool,
    /// When the request ended: decides its window slice.
    pub finished: Instant,
}

#[inline]
pub(crate) fn micros(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(duration.subsec_micros()))
}

/// Requests summed: latency histograms in µs plus counters.
#[derive(Clone)]
pub struct Tally {
    /// Window slice the data belongs to (shards and ring slots only)…
    pub(crate) epoch: u64,
    /// … and its bounds in µs since the core's origin, so the request path
    /// compares instead of dividing. Empty until [`Tally::set_epoch`].
    pub(crate) from_us: u64,
    pub(crate) until_us: u64,
    pub(crate) headers: Histogram<u64>,
    pub(crate) last_byte: Histogram<u64>,
    /// Exact sums (µs) for Prometheus `_sum`; the histograms round.
    pub(crate) headers_sum_us: u64,
    pub(crate) last_byte_sum_us: u64,
    pub(crate) classes: [u64; 5],
    pub(crate) upstream: [u64; 4],
    pub(crate) aborted: u64,
    /// Requests that count against a version: 5xx or an upstream failure.
    pub(crate) errors: u64,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("epoch", &self.epoch)
            .field("requests", &self.requests())
            .field("classes", &self.classes)
            .field("upstream", &self.upstream)
            .field("aborted", &self.aborted)
            .finish_non_exhaustive()
    }
}

impl Tally {
    pub(crate) fn new(epoch: u64) -> Tally {
        Tally {
            epoch,
            from_us: 0,
            until_us: 0,
            headers: histogram(),
            last_byte: histogram(),
            headers_sum_us: 0,
            last_byte_sum_us: 0,
            classes: [0; 5],
            upstream: [0; 4],
            aborted: 0,
            errors: 0,
        }
    }

    pub(crate) fn set_epoch(&mut self, epoch: u64, slice_us: u64) {
        self.epoch = epoch;
        self.from_us = epoch.saturating_mul(slice_us);
        self.until_us = self.from_us.saturating_add(slice_us);
    }

    #[inline]
    pub fn record(&mut self, outcome: &Outcome) {
        let headers = micros(outcome.headers);
        let last_byte = micros(outcome.last_byte);
        // Within 1 µs – 60 s a record only fails if the counts cannot grow
        // (the allocation failed, which aborts anyway).
        let _ = self.headers.record(clamped(headers));
        let _ = self.last_byte.record(clamped(last_byte));
        self.headers_sum_us = self.headers_sum_us.saturating_add(headers);
        self.last_byte_sum_us = self.last_byte_sum_us.saturating_add(last_byte);
        self.classes[class_index(outcome.status)] += 1;
        if let Some(kind) = outcome.upstream_error {
            self.upstream[kind_index(kind)] += 1;
        }
        self.errors += u64::from(outcome.status >= 500 || outcome.upstream_error.is_some());
        self.aborted += u64::from(outcome.aborted);
    }

    /// Latencies to the response headers (µs): what decisions compare.
    pub fn latency(&self) -> &Histogram<u64> {
        &self.headers
    }

    /// Requests that count against the version (5xx or upstream failure).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// No requests yet: what a sum starts from.
    pub fn empty() -> Tally {
        Tally::new(0)
    }

    pub fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requests() == 0
    }

    /// Adds `other`'s requests (its epoch is not copied).
    pub fn add(&mut self, other: &Tally) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.headers.add(&other.headers);
        let _ = self.last_byte.add(&other.last_byte);
        self.headers_sum_us = self.headers_sum_us.saturating_add(other.headers_sum_us);
        self.last_byte_sum_us = self.last_byte_sum_us.saturating_add(other.last_byte_sum_us);
        for (mine, theirs) in self.classes.iter_mut().zip(other.classes) {
            *mine += theirs;
        }
        for (mine, theirs) in self.upstream.iter_mut().zip(other.upstream) {
            *mine += theirs;
        }
        self.aborted += other.aborted;
        self.errors += other.errors;
    }

    /// `self - earlier`, when `earlier` is an earlier state of the same
    /// series; `None` when it is not (a count went down).
    pub fn minus(&self, earlier: &Tally) -> Option<Tally> {
        let mut delta = self.clone();
        let counters_ok = self
            .classes
            .iter()
            .zip(earlier.classes)
            .chain(self.upstream.iter().zip(earlier.upstream))
            .all(|(now, then)| *now >= then)
            && self.aborted >= earlier.aborted
            && self.errors >= earlier.errors
            && self.headers.len() >= earlier.headers.len()
            && self.last_byte.len() >= earlier.last_byte.len();
        if !counters_ok {
            return None;
        }
        delta.headers.subtract(&earlier.headers).ok()?;
        delta.last_byte.subtract(&earlier.last_byte).ok()?;
        delta.headers_sum_us -= earlier.headers_sum_us.min(delta.headers_sum_us);
        delta.last_byte_sum_us -= earlier.last_byte_sum_us.min(delta.last_byte_sum_us);
        for (now, then) in delta.classes.iter_mut().zip(earlier.classes) {
            *now -= then;
        }
        for (now, then) in delta.upstream.iter_mut().zip(earlier.upstream) {
            *now -= then;
        }
        delta.aborted -= earlier.aborted;
        delta.errors -= earlier.errors;
        Some(delta)
    }

    /// The figures of this tally over `covered` time.
    pub fn stats(&self, covered: Duration) -> VersionStats {
        VersionStats {
            covered,
            requests: self.requests(),
            status: self.classes,
            upstream_errors: self.upstream,
            aborted: self.aborted,
            errors: self.errors,
            latency: Latency::of(&self.headers),
            last_byte: Latency::of(&self.last_byte),
        }
    }
}

/// Percentiles of one latency histogram (HDR: within 0.1 %).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let at = |q: f64| Duration::from_micros(histogram.value_at_quantile(q));
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(histogram.max()),
            mean: Duration::from_secs_f64(histogram.mean() / 1e6),
        }
    }
}

/// What one version did over a span of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionStats {
    /// The span the figures cover (a window can be shorter than asked when
    /// the series is younger, and is rounded to whole slices).
    pub covered: Duration,
    pub requests: u64,
    /// Requests by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]` (see
    /// [`CODE_CLASSES`]).
    pub status: [u64; 5],
    /// Upstream failures by kind, in [`UpstreamErrorKind::ALL`] order.
    pub upstream_errors: [u64; 4],
    /// Responses whose client went away before the last byte.
    pub aborted: u64,
    /// Requests that count against the version: a 5xx status or an upstream
    /// failure (counted once even when both).
    pub errors: u64,
    /// Latency to the response headers: what decisions compare.
    pub latency: Latency,
    /// Latency to the last body byte.
    pub last_byte: Latency,
}

impl VersionStats {
    /// Requests per second over [`VersionStats::covered`].
    pub fn rps(&self) -> f64 {
        let secs = self.covered.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// `errors / requests`, 0 when there were no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// One live series with its figures.
#[derive(Debug, Clone)]
pub struct SeriesStats {
    pub route: Arc<str>,
    pub version: Arc<str>,
    /// Weight in the current table; `None` while a removed version's last
    /// requests finish.
    pub weight: Option<u32>,
    pub stats: VersionStats,
}

/// The since-start totals of one series at one moment: two snapshots give
/// exact figures for the time between them ([`Snapshot::since`]).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// A std instant (not the request clock): callers compare it with their
    /// own.
    pub(crate) at: std::time::Instant,
    pub(crate) tally: Tally,
}

impl Snapshot {
    /// Figures for the requests that finished between `earlier` and `self`;
    /// `None` if `earlier` is not an earlier snapshot of the same series.
    pub fn since(&self, earlier: &Snapshot) -> Option<VersionStats> {
        let covered = self.at.checked_duration_since(earlier.at)?;
        Some(self.tally.minus(&earlier.tally)?.stats(covered))
    }

    /// Figures of every request so far, as if they covered the time since
    /// `started`.
    pub fn totals(&self, started: std::time::Instant) -> VersionStats {
        self.tally.stats(self.at.saturating_duration_since(started))
    }

    pub fn taken_at(&self) -> std::time::Instant {
        self.at
    }

    /// The since-start totals themselves (what a fleet publishes).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, ms: u64) -> Outcome {
        Outcome {
            status,
            upstream_error: None,
            headers: Duration::from_millis(ms),
            last_byte: Duration::from_millis(ms + 1),
            aborted: false,
            finished: Instant::now(),
        }
    }

    #[test]
    fn counts_classes_errors_and_latency() {
        let mut tally = Tally::new(0);
        for ms in 1..=100 {
            tally.record(&outcome(200, ms));
        }
        tally.record(&outcome(503, 5));
        tally.record(&Outcome {
            upstream_error: Some(UpstreamErrorKind::Reset),
            ..outcome(200, 5)
        });
        let stats = tally.stats(Duration::from_secs(2));
        assert_eq!(stats.requests, 102);
        assert_eq!(stats.status, [0, 101, 0, 0, 1]);
        assert_eq!(stats.upstream_errors, [0, 0, 1, 0]);
        assert_eq!(stats.errors, 2);
        assert!((stats.rps() - 51.0).abs() < 1e-9);
        let p50 = stats.latency.p50.as_secs_f64() * 1e3;
        // 1..=100 ms plus two at 5 ms: the 51st value is 49 ms.
        assert!((p50 - 49.0).abs() < 0.1, "{p50}");
        let max = stats.latency.max.as_secs_f64() * 1e3;
        assert!((100.0..100.1).contains(&max), "{max}");
        assert!(stats.last_byte.p50 > stats.latency.p50);
    }

    #[test]
    fn out_of_range_latency_saturates() {
        let mut tally = Tally::new(0);
        tally.record(&outcome(200, 120_000));
        let max = tally.stats(Duration::from_secs(1)).latency.max;
        assert!(max >= Duration::from_secs(59) && max <= Duration::from_secs(61));
    }

    #[test]
    fn histograms_take_the_room_of_what_they_hold() {
        let mut tally = Tally::new(0);
        for ms in 1..=10 {
            tally.record(&outcome(200, ms));
        }
        let full_range = Histogram::<u64>::new_with_bounds(LOWEST_US, HIGHEST_US, 3)
            .expect("bounds")
            .distinct_values();
        let held = tally.headers.distinct_values();
        assert!(held * 3 < full_range, "{held} counts vs {full_range}");
        // Precision is kept: 3 significant digits.
        let p50 = tally.stats(Duration::from_secs(1)).latency.p50;
        assert!((p50.as_secs_f64() * 1e3 - 5.0).abs() < 0.01, "{p50:?}");
        // A later, longer latency grows it; adding a larger histogram grows
        // the sum.
        let mut sum = Tally::new(0);
        sum.add(&tally);
        let mut slow = Tally::new(0);
        slow.record(&outcome(200, 30_000));
        sum.add(&slow);
        assert_eq!(sum.requests(), 11);
        let max = sum.stats(Duration::from_secs(1)).latency.max;
        assert!((max.as_secs_f64() - 30.0).abs() < 0.05, "{max:?}");
    }

    #[test]
    fn snapshots_subtract() {
        let start = std::time::Instant::now();
        let mut tally = Tally::new(0);
        tally.record(&outcome(200, 1));
        let earlier = Snapshot {
            at: start,
            tally: tally.clone(),
        };
        tally.record(&outcome(500, 9));
        tally.record(&outcome(500, 9));
        let later = Snapshot {
            at: start + Duration::from_secs(1),
            tally,
        };
        let delta = later.since(&earlier).expect("later");
        assert_eq!(delta.requests, 2);
        assert_eq!(delta.errors, 2);
        assert!(delta.latency.p50 >= Duration::from_millis(9));
        assert!(earlier.since(&later).is_none());
    }

    #[test]
    fn classes_clamp() {
        assert_eq!(class_index(100), 0);
        assert_eq!(class_index(204), 1);
        assert_eq!(class_index(599), 4);
        assert_eq!(class_index(999), 4);
        assert_eq!(class_index(0), 0);
    }
}
