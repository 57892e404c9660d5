//! How sure a comparison of two versions is: estimates with 95 %
//! confidence intervals, computed from HDR histograms (every request, at 3
//! significant digits) rather than from a sample. Used by `switchyard
//! load` (what a canary costs) and by experiments and the statistical
//! judge.
//!
//! - Latency shift: the Hodges–Lehmann estimate (the median of all
//!   pairwise differences version − baseline) with its 95 % confidence
//!   interval by Moses' method (order statistics of the same differences at
//!   ranks from the Mann–Whitney distribution), found by bisection over a
//!   two-pointer count, so no m × n list is ever built.
//! - Mann–Whitney U test p-value (normal approximation with the tie
//!   correction: HDR buckets tie many values).
//! - p50 and p99 ratios with percentile-bootstrap intervals (each resample
//!   a multinomial draw over the histogram's buckets).
//! - Proportions ([`proportions`]): error rates and conversion rates
//!   compared, with their intervals and p-values, fixed-sample and
//!   sequential.
//!
//! Distributions come from `statrs` and `rand_distr`.

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

mod proportions;
pub use proportions::*;

/// 95 % intervals.
const CONFIDENCE: f64 = 0.95;
/// Bootstrap resamples per interval.
const RESAMPLES: usize = 1000;

/// A histogram as sorted distinct values (µs) with their counts.
#[derive(Debug, Clone)]
pub struct Sample {
    values: Vec<(i64, u64)>,
    total: u64,
}

impl Sample {
    pub fn of(histogram: &Histogram<u64>) -> Sample {
        let values: Vec<(i64, u64)> = histogram
            .iter_recorded()
            .map(|v| {
                (
                    i64::try_from(histogram.median_equivalent(v.value_iterated_to()))
                        .unwrap_or(i64::MAX),
                    v.count_at_value(),
                )
            })
            .collect();
        let total = values.iter().map(|(_, c)| c).sum();
        Sample { values, total }
    }

    #[cfg(test)]
    fn from_values(values: &[i64]) -> Sample {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let mut out: Vec<(i64, u64)> = Vec::new();
        for v in sorted {
            match out.last_mut() {
                Some((last, count)) if *last == v => *count += 1,
                _ => out.push((v, 1)),
            }
        }
        Sample {
            total: values.len() as u64,
            values: out,
        }
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    /// Every value plus `us` (a tolerance added to a baseline).
    pub fn shifted(&self, us: i64) -> Sample {
        Sample {
            values: self
                .values
                .iter()
                .map(|&(v, c)| (v.saturating_add(us), c))
                .collect(),
            total: self.total,
        }
    }

    /// Every value times `factor` (a relative tolerance); `factor` > 0.
    pub fn scaled(&self, factor: f64) -> Sample {
        Sample {
            values: self
                .values
                .iter()
                .map(|&(v, c)| ((v as f64 * factor).round() as i64, c))
                .collect(),
            total: self.total,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The smallest value with at least `q` of the sample at or below it.
    fn quantile(&self, q: f64) -> Option<i64> {
        quantile_of(self.values.iter().map(|&(v, c)| (v, c)), self.total, q)
    }
}

fn quantile_of(values: impl Iterator<Item = (i64, u64)>, total: u64, q: f64) -> Option<i64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (value, count) in values {
        seen += count;
        if seen >= rank {
            return Some(value);
        }
    }
    None
}

/// An estimate and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }

    /// The same interval in other units (`f` applied to each bound).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Interval {
        Interval {
            estimate: f(self.estimate),
            low: f(self.low),
            high: f(self.high),
        }
    }
}

fn z() -> f64 {
    // Valid constant parameters: cannot fail.
    Normal::new(0.0, 1.0)
        .map(|n| n.inverse_cdf(1.0 - (1.0 - CONFIDENCE) / 2.0))
        .unwrap_or(1.959_963_984_540_054)
}

/// How many pairs (x, y) have x − y ≤ d.
fn pairs_at_most(x: &Sample, y: &Sample, d: i64) -> u128 {
    // For ascending x, the y with y ≥ x − d start at a pointer that only
    // moves right.
    let mut j = 0;
    let mut below: u128 = 0; // count of y < x - d so far
    let mut total: u128 = 0;
    for &(xv, xc) in &x.values {
        let bound = xv.saturating_sub(d);
        while j < y.values.len() && y.values[j].0 < bound {
            below += u128::from(y.values[j].1);
            j += 1;
        }
        let at_least = u128::from(y.total) - below;
        total += u128::from(xc) * at_least;
    }
    total
}

/// The `rank`-th smallest (1-based) pairwise difference x − y.
fn difference_at(x: &Sample, y: &Sample, rank: u128) -> Option<i64> {
    let (x_min, x_max) = (x.values.first()?.0, x.values.last()?.0);
    let (y_min, y_max) = (y.values.first()?.0, y.values.last()?.0);
    let (mut lo, mut hi) = (x_min.saturating_sub(y_max), x_max.saturating_sub(y_min));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pairs_at_most(x, y, mid) >= rank {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// Hodges–Lehmann shift of `x` against `y` (µs), with Moses' interval.
pub fn shift(x: &Sample, y: &Sample) -> Option<Interval> {
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let (m, n) = (x.total as f64, y.total as f64);
    let pairs = u128::from(x.total) * u128::from(y.total);
    let estimate = {
        // The median of the differences: the mean of the two middle ones.
        let low = difference_at(x, y, pairs.div_ceil(2))?;
        let high = difference_at(x, y, pairs / 2 + 1)?;
        (low + high) as f64 / 2.0
    };
    let spread = z() * (m * n * (m + n + 1.0) / 12.0).sqrt();
    let c = ((m * n / 2.0 - spread).floor().max(1.0)) as u128;
    let c = c.min(pairs);
    let low = difference_at(x, y, c)? as f64;
    let high = difference_at(x, y, pairs + 1 - c)? as f64;
    Some(Interval {
        estimate,
        low,
        high,
    })
}

/// Mann–Whitney U of `x` (pairs with x > y, ties a half) and its variance
/// under the null, with the tie correction over the pooled values.
fn mann_whitney_u(x: &Sample, y: &Sample) -> Option<(f64, f64, f64)> {
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let (m, n) = (x.total as f64, y.total as f64);
    let mut u = 0.0;
    let mut ties = 0.0;
    let (mut i, mut j) = (0, 0);
    let mut y_below = 0.0;
    while i < x.values.len() || j < y.values.len() {
        let xv = x.values.get(i).map_or(i64::MAX, |v| v.0);
        let yv = y.values.get(j).map_or(i64::MAX, |v| v.0);
        let value = xv.min(yv);
        let xc = if xv == value {
            i += 1;
            x.values[i - 1].1 as f64
        } else {
            0.0
        };
        let yc = if yv == value {
            j += 1;
            y.values[j - 1].1 as f64
        } else {
            0.0
        };
        u += xc * (y_below + yc / 2.0);
        y_below += yc;
        let t = xc + yc;
        ties += t * t * t - t;
    }
    let total = m + n;
    let variance = m * n / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    Some((u, m * n / 2.0, variance))
}

fn standard_normal() -> Option<Normal> {
    Normal::new(0.0, 1.0).ok()
}

/// Two-sided Mann–Whitney p-value for `x` and `y` differing in location.
pub fn mann_whitney_p(x: &Sample, y: &Sample) -> Option<f64> {
    let (u, mean, variance) = mann_whitney_u(x, y)?;
    if variance <= 0.0 {
        // Every value equal: no evidence of a difference.
        return Some(1.0);
    }
    let distance = ((u - mean).abs() - 0.5).max(0.0);
    Some((2.0 * standard_normal()?.sf(distance / variance.sqrt())).clamp(0.0, 1.0))
}

/// One-sided Mann–Whitney p-value for `x` being larger (slower) than `y`.
pub fn mann_whitney_greater_p(x: &Sample, y: &Sample) -> Option<f64> {
    let (u, mean, variance) = mann_whitney_u(x, y)?;
    if variance <= 0.0 {
        return Some(if u > mean { 0.0 } else { 1.0 });
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    Some(standard_normal()?.sf(z).clamp(0.0, 1.0))
}

/// The significance level for the `look`-th test (1-based) of a run that
/// may look any number of times: `alpha × 6 / (π² k²)`. These sum to
/// `alpha` over all looks, so by the union bound the chance of any false
/// alarm over the whole run stays at most `alpha` however often it looks.
pub fn spent_alpha(alpha: f64, look: u64) -> f64 {
    let k = look.max(1) as f64;
    alpha * 6.0 / (std::f64::consts::PI.powi(2) * k * k)
}

/// `q`-quantile of `x` over that of `y`, with a percentile-bootstrap
/// interval; `seed` makes a run's report reproducible.
pub fn quantile_ratio(x: &Sample, y: &Sample, q: f64, seed: u64) -> Option<Interval> {
    let estimate = x.quantile(q)? as f64 / y.quantile(q)?.max(1) as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ratios: Vec<f64> = (0..RESAMPLES)
        .filter_map(|_| {
            let xq = resampled_quantile(x, q, &mut rng)? as f64;
            let yq = resampled_quantile(y, q, &mut rng)?.max(1) as f64;
            Some(xq / yq)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let index = ((p * ratios.len() as f64) as usize).min(ratios.len().saturating_sub(1));
        ratios.get(index).copied()
    };
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(Interval {
        estimate,
        low: at(tail)?,
        high: at(1.0 - tail)?,
    })
}

/// The quantile of one multinomial resample of `sample` (same size).
fn resampled_quantile(sample: &Sample, q: f64, rng: &mut StdRng) -> Option<i64> {
    let mut left = sample.total;
    let mut mass_left = sample.total as f64;
    let counts = sample.values.iter().map(|&(value, count)| {
        // Sequential binomials: each bucket takes its share of what is left.
        let drawn = if left == 0 || mass_left <= 0.0 {
            0
        } else {
            let p = (count as f64 / mass_left).clamp(0.0, 1.0);
            Binomial::new(left, p).map_or(0, |b| b.sample(rng))
        };
        left -= drawn;
        mass_left -= count as f64;
        (value, drawn)
    });
    let counts: Vec<(i64, u64)> = counts.collect();
    quantile_of(counts.into_iter(), sample.total, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_shift_is_estimated_exactly_and_its_interval_holds_it() {
        let y: Vec<i64> = (0..400).map(|i| 20_000 + (i * 37) % 2_000).collect();
        let x: Vec<i64> = y.iter().map(|v| v + 10_000).collect();
        let (x, y) = (Sample::from_values(&x), Sample::from_values(&y));
        let shift = shift(&x, &y).expect("shift");
        assert_eq!(shift.estimate, 10_000.0);
        assert!(
            shift.contains(10_000.0) && shift.low < shift.high,
            "{shift:?}"
        );
        assert!(mann_whitney_p(&x, &y).expect("p") < 1e-6);
        let same = super::shift(&y, &y).expect("shift");
        assert!(same.contains(0.0), "{same:?}");
        assert!(mann_whitney_p(&y, &y).expect("p") > 0.9);
    }

    #[test]
    fn the_median_of_pairwise_differences_matches_a_brute_force_count() {
        let x = [3, 7, 7, 12, 40, 41];
        let y = [1, 5, 9, 9, 30];
        let mut diffs: Vec<i64> = x
            .iter()
            .flat_map(|a| y.iter().map(move |b| a - b))
            .collect();
        diffs.sort_unstable();
        let n = diffs.len();
        let expected = (diffs[(n - 1) / 2] + diffs[n / 2]) as f64 / 2.0;
        let got = shift(&Sample::from_values(&x), &Sample::from_values(&y)).expect("shift");
        assert_eq!(got.estimate, expected);
        for rank in 1..=n {
            let at = difference_at(
                &Sample::from_values(&x),
                &Sample::from_values(&y),
                rank as u128,
            );
            assert_eq!(at, Some(diffs[rank - 1]), "rank {rank}");
        }
    }

    #[test]
    fn a_ratio_of_equal_distributions_holds_one() {
        let values: Vec<i64> = (1..=2000).map(|i| 1_000 + i * 3).collect();
        let sample = Sample::from_values(&values);
        let ratio = quantile_ratio(&sample, &sample, 0.99, 7).expect("ratio");
        assert_eq!(ratio.estimate, 1.0);
        assert!(
            ratio.contains(1.0) && ratio.high - ratio.low < 0.1,
            "{ratio:?}"
        );
        let slower: Vec<i64> = values.iter().map(|v| v * 13 / 10).collect();
        let ratio = quantile_ratio(&Sample::from_values(&slower), &sample, 0.5, 7).expect("ratio");
        assert!(ratio.contains(1.3) && !ratio.contains(1.0), "{ratio:?}");
    }

    #[test]
    fn one_sided_tests_and_the_spending_rule() {
        let y: Vec<i64> = (0..300).map(|i| 10_000 + (i * 53) % 3_000).collect();
        let slower: Vec<i64> = y.iter().map(|v| v + 1_500).collect();
        let (x, y) = (Sample::from_values(&slower), Sample::from_values(&y));
        assert!(mann_whitney_greater_p(&x, &y).expect("p") < 1e-6);
        assert!(mann_whitney_greater_p(&y, &x).expect("p") > 0.99);
        // Within a tolerance of 2 ms the slower one is not "slower".
        assert!(mann_whitney_greater_p(&x, &y.shifted(2_000)).expect("p") > 0.5);
        assert!(mann_whitney_greater_p(&x, &y.scaled(1.3)).expect("p") > 0.5);
        // Fisher, checked against the hypergeometric tail summed here: 3 of
        // 10 against 0 of 10, P(X >= 3) with 3 errors among 20, 10 drawn.
        let choose =
            |n: u64, k: u64| (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
        let tail: f64 = (3..=3)
            .map(|k| choose(3, k) * choose(17, 10 - k) / choose(20, 10))
            .sum();
        let p = fisher_greater_p(3, 10, 0, 10).expect("p");
        assert!((p - tail).abs() < 1e-9, "{p} vs {tail}");
        assert_eq!(
            rate_increase_p(3, 10, 0, 10, 0.0).map(|r| r.1),
            Some("fisher")
        );
        // The textbook one-sided z-test: 60/1000 against 40/1000.
        let (p, test) = rate_increase_p(60, 1000, 40, 1000, 0.0).expect("p");
        let se = (0.06_f64 * 0.94 / 1000.0 + 0.04 * 0.96 / 1000.0).sqrt();
        let expected = standard_normal().expect("normal").sf(0.02 / se);
        assert_eq!(test, "z");
        assert!((p - expected).abs() < 1e-12 && p < 0.03, "{p}");
        // A margin of 2 points: no evidence of more than that.
        assert!(rate_increase_p(60, 1000, 40, 1000, 0.02).expect("p").0 >= 0.5);
        let total: f64 = (1..100_000).map(|k| spent_alpha(0.05, k)).sum();
        assert!(total < 0.05 && total > 0.0499, "{total}");
    }
}
