//! `--hgrm DIR`: each series' latency histogram as the percentile
//! distribution text that HdrHistogram's `outputPercentileDistribution`
//! writes (values in ms: µs with a scaling ratio of 1000; five ticks per
//! half distance), so HdrHistogram's plotter (`plotFiles.html`) and the
//! tools around it read them. One file per series: `<target>-<version>.hgrm`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use super::record::Recorder;
use super::report::target_name;

/// µs recorded, ms written.
const SCALING_RATIO: f64 = 1000.0;
/// The Java default, what the plotter's files usually have.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The percentile distribution of `h` in HdrHistogram's text format.
pub fn distribution(h: &Histogram<u64>) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let total = h.len() as f64;
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            let value = v.value_iterated_to() as f64 / SCALING_RATIO;
            let quantile = v.quantile_iterated_to();
            // The running count up to this value's bucket, as Java's
            // getTotalCountToThisValue.
            let count = (v.quantile() * total).round() as u64;
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.digits$} {quantile:2.12} {count:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(out, "{value:12.digits$} {quantile:2.12} {count:10}");
            }
        }
    }
    let mean = h.mean() / SCALING_RATIO;
    let deviation = h.stdev() / SCALING_RATIO;
    let max = h.max() as f64 / SCALING_RATIO;
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {deviation:12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count: the power of two that holds values up
/// to 2 × 10^digits at unit resolution (2048 for 3 digits).
fn sub_buckets(digits: u8) -> u64 {
    (2 * 10u64.pow(u32::from(digits))).next_power_of_two()
}

/// A file name from a version name (which comes from a response header):
/// anything but letters, digits, `-`, `_` and `.` becomes `_`.
fn file_name(target: usize, version: &str) -> String {
    let safe: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}-{}.hgrm",
        target_name(target),
        safe.trim_start_matches('.')
    )
}

/// Writes one file per series of `recorder` into `dir` (created if
/// missing); the paths written.
pub fn write(dir: &Path, recorder: &Recorder) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    recorder
        .series
        .iter()
        .filter(|(_, series)| !series.latency.is_empty())
        .map(|((target, version), series)| {
            let path = dir.join(file_name(*target, version));
            std::fs::write(&path, distribution(&series.latency))?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_hdrhistograms() {
        let mut h = super::super::record::histogram();
        for us in 1..=10_000u64 {
            let _ = h.record(us * 10);
        }
        let text = distribution(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First row: the lowest value at percentile 0.
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first, ["0.010", "0.000000000000", "1", "1.00"]);
        // The median row: 50 ms, half the count, 2.00.
        let median = lines
            .iter()
            .find(|l| l.contains(" 0.500000000000 "))
            .expect("a 50 % row");
        let median: Vec<&str> = median.split_whitespace().collect();
        // The running count to the end of the median's bucket (32 µs wide
        // at 50 ms: up to three more 10 µs values).
        let count: u64 = median[2].parse().expect("count");
        assert!((5000..=5003).contains(&count), "{count}");
        assert_eq!(median[3], "2.00");
        assert!((median[0].parse::<f64>().expect("value") - 50.0).abs() < 0.05);
        // The last row is 100 % without the 1/(1-p) column, then the footer.
        let last = lines
            .iter()
            .rev()
            .find(|l| !l.starts_with('#'))
            .expect("rows");
        let last: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(last.len(), 3, "{last:?}");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "10000");
        assert!(text.contains("#[Max     =      100.031, Total count    =        10000]"));
        // The totals histogram covers 1 µs to 60 s from the start.
        assert!(text.ends_with("#[Buckets =           16, SubBuckets     =         2048]\n"));
        assert!(text.contains("#[Mean    =       50."));
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name(0, "stable"), "url-stable.hgrm");
        assert_eq!(file_name(1, "../x y"), "compare-_x_y.hgrm");
        assert_eq!(file_name(0, "no response"), "url-no_response.hgrm");
    }
}
