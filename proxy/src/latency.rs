//! HDR latency histograms as every recorder here sizes them (1 µs to 60 s,
//! 3 significant digits, growing to what they hold) and the status classes
//! answers are counted by: shared by the per-version metrics and the
//! per-flag counts.

use hdrhistogram::Histogram;

/// HDR range and precision: 1 µs to 60 s, 3 significant digits.
pub(crate) const LOWEST_US: u64 = 1;
pub(crate) const HIGHEST_US: u64 = 60_000_000;
pub(crate) const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty histogram sized to what it will hold: it grows (auto-resize)
/// to the largest value recorded, so a tally of millisecond latencies takes
/// ~40 KiB instead of the ~140 KiB the whole 1 µs – 60 s range would, and
/// every tally a series keeps (totals, window slices, shards) is that much
/// smaller. Values above 60 s are recorded as 60 s ([`clamped`]).
pub(crate) fn histogram() -> Histogram<u64> {
    // Constant bounds, valid for every build: nothing a request or config
    // does can reach this expect.
    let mut histogram = Histogram::new_with_bounds(LOWEST_US, 2 * LOWEST_US, SIGNIFICANT_DIGITS)
        .expect("constant HDR bounds are valid");
    histogram.auto(true);
    histogram
}

#[inline]
pub(crate) fn clamped(us: u64) -> u64 {
    us.clamp(LOWEST_US, HIGHEST_US)
}

/// The HTTP status class index (0 = 1xx … 4 = 5xx) of a status code.
#[inline]
pub(crate) fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
