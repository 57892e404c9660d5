//! What `switchyard load` records: per target and per version (the
//! `x-switchyard-version` of each response), an HDR histogram of latencies
//! (1 µs – 60 s, 3 significant digits), status classes, failures without a
//! response, and a per-second timeline. Each worker records into its own
//! [`Recorder`]; the progress line and the report add them up.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const DIGITS: u8 = 3;

/// Responses without the version header fall in this series.
pub const UNVERSIONED: &str = "unversioned";
/// Requests that got no response (connect, timeout, reset).
pub const NO_RESPONSE: &str = "no response";

pub fn histogram() -> Histogram<u64> {
    // Sized for the whole range up front (about 140 KiB): recording never
    // reallocates on the request path. Constant valid bounds: cannot fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, DIGITS)
        .expect("constant HDR bounds are valid")
}

/// A second of the timeline: 2 significant digits (1 %, plenty for a chart
/// point) and auto-resize, so a long run's seconds stay small.
pub fn second_histogram() -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(LOWEST_US, 2 * LOWEST_US, 2)
        .expect("constant HDR bounds are valid");
    histogram.auto(true);
    histogram
}

/// Which target (0: the URL; 1: `--compare`) and version a request is of.
pub type Key = (usize, String);

/// One series' figures.
#[derive(Debug, Clone)]
pub struct Series {
    pub latency: Histogram<u64>,
    /// `1xx` … `5xx`.
    pub classes: [u64; 5],
    /// Requests without a response, by kind.
    pub failures: BTreeMap<String, u64>,
    /// Second of the run → latencies finished in it.
    pub timeline: BTreeMap<u64, Histogram<u64>>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            latency: histogram(),
            classes: [0; 5],
            failures: BTreeMap::new(),
            timeline: BTreeMap::new(),
        }
    }
}

impl Series {
    pub fn requests(&self) -> u64 {
        self.classes.iter().sum::<u64>() + self.failures.values().sum::<u64>()
    }

    /// 5xx plus requests without a response.
    pub fn errors(&self) -> u64 {
        self.classes[4] + self.failures.values().sum::<u64>()
    }

    /// Adds `other`'s totals (not its timeline: the progress line needs
    /// only these, once a second).
    fn add_totals(&mut self, other: &Series) {
        // Same bounds: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (mine, theirs) in self.classes.iter_mut().zip(other.classes) {
            *mine += theirs;
        }
        for (kind, count) in &other.failures {
            *self.failures.entry(kind.clone()).or_default() += count;
        }
    }

    fn add(&mut self, other: &Series) {
        self.add_totals(other);
        for (second, theirs) in &other.timeline {
            // Auto-resize: adding cannot fail.
            let _ = self
                .timeline
                .entry(*second)
                .or_insert_with(second_histogram)
                .add(theirs);
        }
    }
}

/// One worker's series (few: a list, found by reference without
/// allocating, in key order).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    pub series: Vec<(Key, Series)>,
    /// Open loop: how long after its intended time each recorded request
    /// left (µs; the generator's own lateness, inside every latency).
    pub send_lag: Option<Histogram<u64>>,
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(LOWEST_US, HIGHEST_US)
}

impl Recorder {
    /// A response of `version` (`None`: no header) after `latency`,
    /// finished `at` into the run.
    pub fn response(
        &mut self,
        target: usize,
        version: Option<&str>,
        status: u16,
        latency: Duration,
        at: Duration,
    ) {
        let series = self.series_of(target, version.unwrap_or(UNVERSIONED));
        let us = micros(latency);
        let _ = series.latency.record(us);
        let second = at.as_secs();
        // Nearly every response falls in the latest second: no tree walk.
        let histogram = match series.timeline.last_entry() {
            Some(last) if *last.key() == second => last.into_mut(),
            _ => series
                .timeline
                .entry(second)
                .or_insert_with(second_histogram),
        };
        let _ = histogram.record(us);
        series.classes[usize::from((status / 100).clamp(1, 5) - 1)] += 1;
    }

    /// An open-loop request left `lag` after its intended time.
    pub fn send_lag(&mut self, lag: Duration) {
        let histogram = self.send_lag.get_or_insert_with(second_histogram);
        let _ = histogram.record(micros(lag));
    }

    /// A request that got no response.
    pub fn failure(&mut self, target: usize, kind: &str) {
        *self
            .series_of(target, NO_RESPONSE)
            .failures
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    fn series_of(&mut self, target: usize, version: &str) -> &mut Series {
        let at = match self
            .series
            .binary_search_by(|((t, v), _)| (*t, v.as_str()).cmp(&(target, version)))
        {
            Ok(at) => at,
            Err(at) => {
                self.series
                    .insert(at, ((target, version.to_owned()), Series::default()));
                at
            }
        };
        &mut self.series[at].1
    }

    /// The series of `version` at `target`.
    pub fn get(&self, target: usize, version: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|((t, v), _)| *t == target && v == version)
            .map(|(_, series)| series)
    }

    pub fn add(&mut self, other: &Recorder) {
        for ((target, version), series) in &other.series {
            self.series_of(*target, version).add(series);
        }
        if let Some(theirs) = &other.send_lag {
            // Auto-resize: adding cannot fail.
            let _ = self
                .send_lag
                .get_or_insert_with(second_histogram)
                .add(theirs);
        }
    }

    /// [`Recorder::add`] without the timeline.
    pub fn add_totals(&mut self, other: &Recorder) {
        for ((target, version), series) in &other.series {
            self.series_of(*target, version).add_totals(series);
        }
    }

    pub fn requests(&self) -> u64 {
        self.series.iter().map(|(_, s)| s.requests()).sum()
    }

    pub fn errors(&self) -> u64 {
        self.series.iter().map(|(_, s)| s.errors()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_split_by_target_and_version_and_add_up() {
        let mut a = Recorder::default();
        let ms = Duration::from_millis;
        a.response(0, Some("stable"), 200, ms(20), ms(100));
        a.response(0, Some("canary"), 503, ms(30), ms(1_100));
        a.response(0, None, 200, ms(1), ms(1_200));
        a.failure(0, "timeout");
        let mut b = Recorder::default();
        b.response(0, Some("stable"), 200, ms(22), ms(1_900));
        b.response(1, Some("stable"), 200, ms(5), ms(1_900));
        b.add(&a);
        let stable = b.get(0, "stable").expect("stable");
        assert_eq!(stable.requests(), 2);
        assert_eq!(stable.timeline.len(), 2, "seconds 0 and 1");
        assert_eq!(b.get(0, "canary").map(Series::errors), Some(1));
        assert!(b.get(0, UNVERSIONED).is_some());
        assert_eq!(b.get(0, NO_RESPONSE).map(Series::errors), Some(1));
        assert_eq!(b.requests(), 6);
        assert_eq!(b.errors(), 2);
        // 3 significant digits.
        let p50 = stable.latency.value_at_quantile(0.5);
        assert!((19_980..=20_020).contains(&p50), "{p50}");
        assert!(b.send_lag.is_none(), "closed loop: no send lag");
    }

    #[test]
    fn send_lags_add_up_across_workers() {
        let us = Duration::from_micros;
        let mut a = Recorder::default();
        a.send_lag(us(0));
        a.send_lag(us(10));
        let mut b = Recorder::default();
        b.send_lag(us(3_000));
        b.add(&a);
        let lag = b.send_lag.expect("lags");
        assert_eq!(lag.len(), 3);
        assert_eq!(lag.min(), 1, "0 counts as the lowest, 1 µs");
        assert!((9..=11).contains(&lag.value_at_quantile(0.5)));
        assert!((2_970..=3_030).contains(&lag.max()));
    }
}
