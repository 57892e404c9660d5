//! The statistical judge (`judge = "statistical"`): is the canary worse
//! than the baseline, beyond a tolerance, with evidence strong enough that
//! a rollout judged many times still rolls back a good canary with at most
//! `alpha` probability?
//!
//! - Latency: one-sided Mann–Whitney U of the step's canary latencies
//!   against the baseline's shifted by the tolerance (HDR buckets as tied
//!   values), reported with the Hodges–Lehmann shift and its interval, as
//!   Kayenta's classifier does.
//! - Errors: one-sided test of the canary's error rate exceeding the
//!   baseline's by more than `max_error_rate_increase` (Fisher's exact test
//!   when counts are small, else a z-test), with Newcombe's interval.
//! - Looking often: the k-th look of a rollout tests at `alpha × 6/(π²k²)`
//!   (split between the two tests), a spending rule whose sum over any
//!   number of looks is `alpha` (`crate::statistics::spent_alpha`).

use serde_json::{json, Value};
use switchyard_proxy::metrics::Tally;

use crate::config::{StatisticalPolicy, Tolerance};
use crate::statistics::{self, Sample};

/// A look's outcome: why the canary fails, if it does, and the figures.
pub(super) struct Judgement {
    pub failure: Option<String>,
    pub statistics: Value,
    /// The figures in words, for decisions that pass.
    pub summary: String,
}

fn tolerance_text(tolerance: Tolerance) -> String {
    match tolerance {
        Tolerance::Absolute(d) => format!("{:.3} ms", d.as_secs_f64() * 1e3),
        Tolerance::Relative(r) => format!("{:.1}%", r * 100.0),
    }
}

/// Judges a step's canary against its baseline at look `look` (1-based).
pub(super) fn judge(
    policy: &StatisticalPolicy,
    canary: &Tally,
    baseline: &Tally,
    look: u64,
) -> Judgement {
    let (n_c, n_b) = (canary.requests(), baseline.requests());
    let level = statistics::spent_alpha(policy.alpha, look) / 2.0;
    let x = Sample::of(canary.latency());
    let y = Sample::of(baseline.latency());
    let tolerant = match policy.max_latency_shift {
        Tolerance::Absolute(d) => y.shifted(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        Tolerance::Relative(r) => y.scaled(1.0 + r),
    };
    let latency_p = statistics::mann_whitney_greater_p(&x, &tolerant);
    let shift = statistics::shift(&x, &y).map(|i| i.map(|us| us / 1e3));
    let errors = statistics::rate_increase_p(
        canary.errors(),
        n_c,
        baseline.errors(),
        n_b,
        policy.max_error_rate_increase,
    );
    let difference = statistics::rate_difference(canary.errors(), n_c, baseline.errors(), n_b);
    let rate = |e: u64, n: u64| e as f64 / n.max(1) as f64;
    let statistics = json!({
        "look": look,
        "alpha": policy.alpha,
        "level_this_look": level,
        "canary_requests": n_c,
        "baseline_requests": n_b,
        "latency": {
            "shift_ms": shift,
            "tolerance": tolerance_text(policy.max_latency_shift),
            "p_value": latency_p,
            "test": "mann-whitney (one-sided)",
        },
        "errors": {
            "canary_rate": rate(canary.errors(), n_c),
            "baseline_rate": rate(baseline.errors(), n_b),
            "difference": difference,
            "allowed_increase": policy.max_error_rate_increase,
            "p_value": errors.map(|e| e.0),
            "test": errors.map(|e| e.1),
        },
    });
    let shift_text = shift.map_or_else(
        || "no latency to compare".to_owned(),
        |s| {
            format!(
                "median shift {:+.2} ms ({:.2} to {:.2})",
                s.estimate, s.low, s.high
            )
        },
    );
    let counts = format!("n = {n_c} canary / {n_b} baseline, look {look}");
    if n_b == 0 {
        return Judgement {
            failure: None,
            statistics,
            summary: format!("no baseline traffic to compare with ({counts})"),
        };
    }
    if let Some(p) = latency_p.filter(|p| *p < level) {
        return Judgement {
            failure: Some(format!(
                "canary slower than the baseline beyond the tolerance of {}: {shift_text}, one-sided Mann–Whitney p = {p:.2e} < {level:.2e} ({counts}, alpha {})",
                tolerance_text(policy.max_latency_shift),
                policy.alpha
            )),
            statistics,
            summary: String::new(),
        };
    }
    if let Some((p, test)) = errors.filter(|(p, _)| *p < level) {
        return Judgement {
            failure: Some(format!(
                "canary error rate {:.2}% against the baseline's {:.2}%, more than {:.2} points higher: one-sided {test} p = {p:.2e} < {level:.2e} ({counts}, alpha {})",
                rate(canary.errors(), n_c) * 100.0,
                rate(baseline.errors(), n_b) * 100.0,
                policy.max_error_rate_increase * 100.0,
                policy.alpha
            )),
            statistics,
            summary: String::new(),
        };
    }
    Judgement {
        failure: None,
        statistics,
        summary: format!(
            "no evidence the canary is worse: {shift_text}, error rates {:.2}% vs {:.2}% ({counts})",
            rate(canary.errors(), n_c) * 100.0,
            rate(baseline.errors(), n_b) * 100.0,
        ),
    }
}

#[cfg(test)]
mod tests {
    //! Simulated rollouts over synthetic histograms: deterministic seeds,
    //! no network, a few seconds.

    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, LogNormal};
    use switchyard_proxy::metrics::{Instant, Outcome};

    use super::*;

    const LOOKS_PER_STEP: u64 = 4;
    const STEPS: u64 = 3;
    const PER_LOOK: usize = 400;

    fn policy() -> StatisticalPolicy {
        StatisticalPolicy {
            alpha: 0.05,
            max_latency_shift: Tolerance::Relative(0.0),
            max_error_rate_increase: 0.0,
        }
    }

    /// Adds `n` requests of median `median_ms` (log-normal, sigma 0.3) and
    /// error rate `errors`.
    fn add(tally: &mut Tally, rng: &mut StdRng, n: usize, median_ms: f64, errors: f64) {
        let latency = LogNormal::new(median_ms.ln(), 0.3).expect("log-normal");
        for _ in 0..n {
            let ms: f64 = latency.sample(rng);
            tally.record(&Outcome {
                status: if rng.gen::<f64>() < errors { 503 } else { 200 },
                upstream_error: None,
                headers: Duration::from_secs_f64(ms / 1e3),
                last_byte: Duration::from_secs_f64(ms / 1e3),
                aborted: false,
                finished: Instant::now(),
            });
        }
    }

    /// One rollout: each step accumulates traffic and is looked at
    /// `LOOKS_PER_STEP` times. Returns the canary requests seen when it
    /// was rolled back, or `None` if it completed.
    fn rollout(seed: u64, canary_ms: f64, canary_errors: f64) -> Option<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let policy = policy();
        let mut look = 0;
        let mut seen = 0;
        for _ in 0..STEPS {
            let (mut canary, mut baseline) = (Tally::empty(), Tally::empty());
            for _ in 0..LOOKS_PER_STEP {
                add(&mut canary, &mut rng, PER_LOOK, canary_ms, canary_errors);
                add(&mut baseline, &mut rng, PER_LOOK * 3, 20.0, 0.01);
                look += 1;
                if judge(&policy, &canary, &baseline, look).failure.is_some() {
                    return Some(seen + canary.requests());
                }
            }
            seen += canary.requests();
        }
        None
    }

    #[test]
    fn identical_versions_are_rarely_rolled_back() {
        let false_alarms = (0..500)
            .filter(|seed| rollout(*seed, 20.0, 0.01).is_some())
            .count();
        assert!(
            false_alarms as f64 / 500.0 <= 0.05 + 0.02,
            "{false_alarms} of 500"
        );
    }

    #[test]
    fn a_slower_or_failing_canary_is_caught() {
        for (what, ms, errors) in [
            ("+20 % latency", 24.0, 0.01),
            ("+2 points of errors", 20.0, 0.03),
        ] {
            let mut needed: Vec<u64> = (1000..1200)
                .filter_map(|seed| rollout(seed, ms, errors))
                .collect();
            let detected = needed.len() as f64 / 200.0;
            needed.sort_unstable();
            let median = needed.get(needed.len() / 2).copied().unwrap_or(0);
            println!(
                "{what}: detected in {:.0}% of rollouts, median {median} canary requests",
                detected * 100.0
            );
            assert!(detected >= 0.95, "{what}: {detected}");
        }
    }

    #[test]
    fn a_judgement_names_its_figures() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut canary, mut baseline) = (Tally::empty(), Tally::empty());
        add(&mut canary, &mut rng, 800, 30.0, 0.0);
        add(&mut baseline, &mut rng, 800, 20.0, 0.0);
        let slow = judge(&policy(), &canary, &baseline, 1);
        let reason = slow.failure.unwrap_or_default();
        assert!(
            reason.contains("Mann–Whitney") && reason.contains("look 1"),
            "{reason}"
        );
        assert!(
            slow.statistics["latency"]["shift_ms"]["estimate"]
                .as_f64()
                .unwrap_or(0.0)
                > 5.0
        );
        // 60 % tolerance: no longer a failure.
        let lenient = StatisticalPolicy {
            max_latency_shift: Tolerance::Relative(0.6),
            ..policy()
        };
        let judged = judge(&lenient, &canary, &baseline, 1);
        assert!(judged.failure.is_none(), "{}", judged.statistics);
        assert!(judged.summary.contains("no evidence"), "{}", judged.summary);
    }
}
