//! The report of a `switchyard load` run: its JSON (schema
//! `switchyard-load/1`, documented in `docs/load.md`, with a
//! Fortio-compatible `DurationHistogram` per series), the terminal summary,
//! and the canary's cost in plain words.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::{Recorder, Series, NO_RESPONSE};
use crate::statistics::{self as cost, Interval, Sample};

pub const SCHEMA: &str = "switchyard-load/1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub started: String,
    pub parameters: Parameters,
    pub achieved: Achieved,
    pub generator: Generator,
    pub series: Vec<SeriesReport>,
    /// Each version against the baseline (primary target).
    pub cost: Vec<Cost>,
    /// `--compare`: the URL's latency against the compared URL's.
    pub overhead: Option<Comparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Parameters {
    pub url: String,
    pub compare: Option<String>,
    /// `open` (`--rate`) or `closed`.
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub requests: Option<u64>,
    pub timeout_ms: u64,
    pub method: String,
    pub protocol: &'static str,
    pub baseline: String,
    pub block: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Achieved {
    pub requests: u64,
    pub seconds: f64,
    pub rate: f64,
    /// Open loop: sends more than 2 ms behind their intended time.
    pub late_sends: u64,
    pub late_fraction: f64,
    /// False when more than 1 % of the sends were late: the latencies then
    /// include the generator's own queueing.
    pub rate_held: bool,
    /// Open loop: how long after their intended times the requests left.
    pub send_lag_us: Option<SendLag>,
}

/// Microseconds; the generator's own lateness, part of every open-loop
/// latency.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SendLag {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl SendLag {
    pub fn of(histogram: &Histogram<u64>) -> SendLag {
        SendLag {
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
            max: histogram.max(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    /// User + system CPU of this process during the run.
    pub cpu_seconds: f64,
    pub cpu_per_request_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesReport {
    /// `url` or `compare`.
    pub target: &'static str,
    pub version: String,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub status: BTreeMap<&'static str, u64>,
    pub failures: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
    pub timeline: Vec<Second>,
    #[serde(rename = "DurationHistogram")]
    pub duration_histogram: Fortio,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: u64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Fortio's `HistogramData`, in seconds, so Fortio's tools read it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Fortio {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub avg: f64,
    pub std_dev: f64,
    pub data: Vec<FortioBucket>,
    pub percentiles: Vec<FortioPercentile>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FortioBucket {
    pub start: f64,
    pub end: f64,
    /// Cumulative, as Fortio writes it.
    pub percent: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FortioPercentile {
    pub percentile: f64,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub version: String,
    pub baseline: String,
    /// Hodges–Lehmann shift (version − baseline), ms, 95 % interval.
    pub shift_ms: Option<Interval>,
    pub mann_whitney_p: Option<f64>,
    pub p50_ratio: Option<Interval>,
    pub p99_ratio: Option<Interval>,
    /// Error rate (version − baseline), as a fraction.
    pub error_rate_difference: Option<Interval>,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Hodges–Lehmann shift (url − compare), ms, 95 % interval.
    pub added_ms: Option<Interval>,
    pub mann_whitney_p: Option<f64>,
    pub p50_ratio: Option<Interval>,
    pub p99_ratio: Option<Interval>,
    pub summary: String,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        min: ms(h.min()),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1e3,
    }
}

fn fortio(h: &Histogram<u64>) -> Fortio {
    let count = h.len();
    let secs = |us: u64| us as f64 / 1e6;
    let mut seen = 0;
    let data = h
        .iter_recorded()
        .map(|v| {
            seen += v.count_at_value();
            let value = v.value_iterated_to();
            FortioBucket {
                start: secs(h.lowest_equivalent(value)),
                end: secs(h.highest_equivalent(value)),
                percent: 100.0 * seen as f64 / count.max(1) as f64,
                count: v.count_at_value(),
            }
        })
        .collect();
    Fortio {
        count,
        min: secs(h.min()),
        max: secs(h.max()),
        sum: h.mean() * count as f64 / 1e6,
        avg: h.mean() / 1e6,
        std_dev: h.stdev() / 1e6,
        data,
        percentiles: [50.0, 75.0, 90.0, 99.0, 99.9]
            .into_iter()
            .map(|p| FortioPercentile {
                percentile: p,
                value: secs(h.value_at_percentile(p)),
            })
            .collect(),
    }
}

pub fn target_name(target: usize) -> &'static str {
    if target == 0 {
        "url"
    } else {
        "compare"
    }
}

pub fn series_reports(recorder: &Recorder) -> Vec<SeriesReport> {
    recorder
        .series
        .iter()
        .map(|((target, version), series)| {
            let requests = series.requests();
            SeriesReport {
                target: target_name(*target),
                version: version.clone(),
                requests,
                errors: series.errors(),
                error_rate: series.errors() as f64 / requests.max(1) as f64,
                status: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .into_iter()
                    .zip(series.classes)
                    .collect(),
                failures: series.failures.clone(),
                latency_ms: percentiles(&series.latency),
                timeline: series
                    .timeline
                    .iter()
                    .map(|(second, h)| Second {
                        second: *second,
                        requests: h.len(),
                        p50_ms: ms(h.value_at_quantile(0.5)),
                        p99_ms: ms(h.value_at_quantile(0.99)),
                    })
                    .collect(),
                duration_histogram: fortio(&series.latency),
            }
        })
        .collect()
}

/// In µs → ms.
fn in_ms(interval: Interval) -> Interval {
    interval.map(|us| us / 1e3)
}

/// Each version of the primary target against `baseline`.
pub fn costs(recorder: &Recorder, baseline: &str) -> Vec<Cost> {
    let Some(base) = recorder.get(0, baseline) else {
        return Vec::new();
    };
    recorder
        .series
        .iter()
        .filter(|((target, version), _)| {
            *target == 0 && version != baseline && version != NO_RESPONSE
        })
        .map(|((_, version), series)| cost_of(version, series, baseline, base))
        .collect()
}

fn cost_of(version: &str, series: &Series, baseline: &str, base: &Series) -> Cost {
    let (x, y) = (Sample::of(&series.latency), Sample::of(&base.latency));
    let shift = cost::shift(&x, &y).map(in_ms);
    let p99 = cost::quantile_ratio(&x, &y, 0.99, 99);
    let errors = cost::rate_difference(
        series.errors(),
        series.requests(),
        base.errors(),
        base.requests(),
    );
    Cost {
        version: version.to_owned(),
        baseline: baseline.to_owned(),
        summary: summary(version, baseline, shift, p99, errors),
        shift_ms: shift,
        mann_whitney_p: cost::mann_whitney_p(&x, &y),
        p50_ratio: cost::quantile_ratio(&x, &y, 0.5, 50),
        p99_ratio: p99,
        error_rate_difference: errors,
    }
}

/// The URL against `--compare`, every version together.
pub fn comparison(recorder: &Recorder) -> Option<Comparison> {
    let all = |target: usize| {
        let mut h = super::record::histogram();
        for ((t, _), series) in &recorder.series {
            if *t == target {
                let _ = h.add(&series.latency);
            }
        }
        Sample::of(&h)
    };
    let (x, y) = (all(0), all(1));
    if y.is_empty() {
        return None;
    }
    let added = cost::shift(&x, &y).map(in_ms);
    let p99 = cost::quantile_ratio(&x, &y, 0.99, 99);
    let summary = match added {
        Some(a) if a.contains(0.0) => format!(
            "no added latency distinguishable ({:+.3} ms, {:.3} to {:.3})",
            a.estimate, a.low, a.high
        ),
        Some(a) => format!(
            "the URL adds {:.3} ms ({:.3}–{:.3}) at the median over the compared one{}",
            a.estimate,
            a.low,
            a.high,
            p99.map_or_else(String::new, |r| format!(
                "; p99 {:.2}× ({:.2}–{:.2}×)",
                r.estimate, r.low, r.high
            ))
        ),
        None => "too few responses to compare".into(),
    };
    Some(Comparison {
        mann_whitney_p: cost::mann_whitney_p(&x, &y),
        p50_ratio: cost::quantile_ratio(&x, &y, 0.5, 50),
        added_ms: added,
        p99_ratio: p99,
        summary,
    })
}

/// "canary is 4.1 ms (3.6–4.7) slower at the median; p99 1.31×
/// (1.18–1.44×); error rates not distinguishable".
fn summary(
    version: &str,
    baseline: &str,
    shift: Option<Interval>,
    p99: Option<Interval>,
    errors: Option<Interval>,
) -> String {
    let Some(shift) = shift else {
        return format!("{version}: too few responses to compare with {baseline}");
    };
    let mut out = if shift.contains(0.0) {
        format!(
            "{version}'s median latency is not distinguishable from {baseline}'s ({:+.1} ms, {:.1} to {:.1})",
            shift.estimate, shift.low, shift.high
        )
    } else {
        format!(
            "{version} is {:.1} ms ({:.1}–{:.1}) {} than {baseline} at the median",
            shift.estimate.abs(),
            shift.low.abs().min(shift.high.abs()),
            shift.low.abs().max(shift.high.abs()),
            if shift.estimate > 0.0 {
                "slower"
            } else {
                "faster"
            }
        )
    };
    if let Some(r) = p99 {
        let _ = write!(
            out,
            "; p99 {:.2}× ({:.2}–{:.2}×)",
            r.estimate, r.low, r.high
        );
    }
    match errors {
        Some(e) if e.contains(0.0) => out.push_str("; error rates not distinguishable"),
        Some(e) => {
            let _ = write!(
                out,
                "; error rate {:+.2} points ({:+.2} to {:+.2})",
                e.estimate * 100.0,
                e.low * 100.0,
                e.high * 100.0
            );
        }
        None => {}
    }
    out
}

/// The terminal summary.
pub fn render(report: &Report, color: bool) -> String {
    let mut out = String::new();
    let p = &report.parameters;
    let a = &report.achieved;
    let _ = writeln!(
        out,
        "{} {} ({} loop{}), {:.1} s, {} requests, {:.0} req/s",
        p.method,
        p.url,
        p.mode,
        p.rate
            .map_or_else(String::new, |r| format!(" at {r} req/s")),
        a.seconds,
        a.requests,
        a.rate
    );
    if let Some(compare) = &p.compare {
        let _ = writeln!(
            out,
            "compared with {compare}, alternating blocks of {}",
            p.block
        );
    }
    let header = [
        "TARGET", "VERSION", "REQUESTS", "ERRORS", "P50 ms", "P90 ms", "P99 ms", "P99.9 ms",
        "MAX ms",
    ];
    let mut rows = vec![header.map(str::to_owned)];
    for s in &report.series {
        let l = &s.latency_ms;
        rows.push([
            s.target.to_owned(),
            s.version.clone(),
            s.requests.to_string(),
            format!("{} ({:.2}%)", s.errors, s.error_rate * 100.0),
            format!("{:.3}", l.p50),
            format!("{:.3}", l.p90),
            format!("{:.3}", l.p99),
            format!("{:.3}", l.p999),
            format!("{:.3}", l.max),
        ]);
    }
    crate::columns::write_columns(&mut out, "", &rows);
    for cost in &report.cost {
        let _ = writeln!(out, "{}", cost.summary);
    }
    if let Some(overhead) = &report.overhead {
        let _ = writeln!(out, "{}", overhead.summary);
    }
    if let Some(lag) = a.send_lag_us {
        let _ = writeln!(
            out,
            "sends left their intended times {} µs late at the median, {} µs at p99 (max {} µs)",
            lag.p50, lag.p99, lag.max
        );
    }
    if !a.rate_held {
        let warning = format!(
            "the generator could not hold the rate: {} sends ({:.1}%) were more than 2 ms late; latencies include its own queueing (add --connections or --threads)",
            a.late_sends,
            a.late_fraction * 100.0
        );
        let _ = if color {
            writeln!(out, "\x1b[31m{warning}\x1b[0m")
        } else {
            writeln!(out, "{warning}")
        };
    }
    let _ = writeln!(
        out,
        "generator: {:.2} s CPU ({:.1} µs per request)",
        report.generator.cpu_seconds, report.generator.cpu_per_request_us
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_say_slower_faster_or_not_distinguishable() {
        let i = |estimate, low, high| {
            Some(Interval {
                estimate,
                low,
                high,
            })
        };
        let text = summary(
            "canary",
            "stable",
            i(4.1, 3.6, 4.7),
            i(1.31, 1.18, 1.44),
            i(0.0, -0.01, 0.01),
        );
        assert_eq!(
            text,
            "canary is 4.1 ms (3.6–4.7) slower than stable at the median; p99 1.31× (1.18–1.44×); error rates not distinguishable"
        );
        let text = summary(
            "canary",
            "stable",
            i(-0.2, -0.5, 0.1),
            None,
            i(0.05, 0.02, 0.08),
        );
        assert!(text.contains("not distinguishable from stable's"), "{text}");
        assert!(text.contains("error rate +5.00 points"), "{text}");
        let text = summary("canary", "stable", i(-2.0, -2.5, -1.5), None, None);
        assert!(text.contains("2.0 ms (1.5–2.5) faster"), "{text}");
    }
}
