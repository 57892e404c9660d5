//! Proportions compared: an error rate or a conversion rate of one version
//! against another's. Newcombe's interval of the difference and Wilson's
//! of one rate; the two-sided z-test for one fixed look and the mSPRT's
//! anytime-valid p-value for many; the one-sided test of an increase
//! beyond a margin (Fisher's exact test on small counts); the sample size
//! to detect an effect.

use statrs::distribution::{ContinuousCDF, DiscreteCDF, Hypergeometric};

use super::{standard_normal, z, Interval};

/// One-sided p-value for `x`'s error rate exceeding `y`'s by more than
/// `margin`: Fisher's exact test when `margin` is 0 and an expected count
/// is small (under 5), else the unpooled z-test for the difference with
/// that margin.
pub fn rate_increase_p(
    errors_x: u64,
    n_x: u64,
    errors_y: u64,
    n_y: u64,
    margin: f64,
) -> Option<(f64, &'static str)> {
    if !comparable(errors_x, n_x, errors_y, n_y) {
        return None;
    }
    let (p1, p2) = (errors_x as f64 / n_x as f64, errors_y as f64 / n_y as f64);
    let pooled = (errors_x + errors_y) as f64 / (n_x + n_y) as f64;
    let small = [n_x, n_y]
        .iter()
        .any(|n| (*n as f64 * pooled) < 5.0 || (*n as f64 * (1.0 - pooled)) < 5.0);
    if margin == 0.0 && small {
        return fisher_greater_p(errors_x, n_x, errors_y, n_y).map(|p| (p, "fisher"));
    }
    let se = (p1 * (1.0 - p1) / n_x as f64 + p2 * (1.0 - p2) / n_y as f64).sqrt();
    let difference = p1 - p2 - margin;
    if se == 0.0 {
        return Some((if difference > 0.0 { 0.0 } else { 1.0 }, "z"));
    }
    Some((standard_normal()?.sf(difference / se).clamp(0.0, 1.0), "z"))
}

/// Fisher's exact one-sided p-value: P(x's errors ≥ observed) given both
/// margins (hypergeometric).
pub fn fisher_greater_p(errors_x: u64, n_x: u64, errors_y: u64, n_y: u64) -> Option<f64> {
    let population = n_x + n_y;
    let errors = errors_x + errors_y;
    let hypergeometric = Hypergeometric::new(population, errors, n_x).ok()?;
    if errors_x == 0 {
        return Some(1.0);
    }
    Some((1.0 - hypergeometric.cdf(errors_x - 1)).clamp(0.0, 1.0))
}

/// `errors_x / n_x − errors_y / n_y` with Newcombe's hybrid score interval
/// (his method 10: Wilson intervals of each proportion, combined).
pub fn rate_difference(errors_x: u64, n_x: u64, errors_y: u64, n_y: u64) -> Option<Interval> {
    if n_x == 0 || n_y == 0 {
        return None;
    }
    let (p1, p2) = (errors_x as f64 / n_x as f64, errors_y as f64 / n_y as f64);
    let (l1, u1) = wilson(p1, n_x as f64);
    let (l2, u2) = wilson(p2, n_y as f64);
    let d = p1 - p2;
    Some(Interval {
        estimate: d,
        low: d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        high: d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    })
}

/// The Wilson score interval of `successes` of `n` (95 %).
pub fn wilson_interval(successes: u64, n: u64) -> Option<Interval> {
    if n == 0 || successes > n {
        return None;
    }
    let p = successes as f64 / n as f64;
    let (low, high) = wilson(p, n as f64);
    Some(Interval {
        estimate: p,
        low,
        high,
    })
}

/// Two-sided pooled two-proportion z-test p-value (`x1/n1` vs `x2/n2`).
pub fn two_proportion_p(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<f64> {
    if !comparable(x1, n1, x2, n2) {
        return None;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let se = pooled_variance(x1, n1, x2, n2).sqrt();
    if se == 0.0 {
        return Some(1.0);
    }
    Some((2.0 * standard_normal()?.sf(((p1 - p2) / se).abs())).clamp(0.0, 1.0))
}

/// An anytime-valid p-value for `x1/n1` vs `x2/n2` differing: the mixture
/// sequential probability ratio test (Johari, Pekelis and Walsh, "Always
/// valid inference", 2017) on the normal approximation of the difference,
/// with a normal mixing distribution of variance `tau²` over effects.
/// However often it is looked at, the chance that it ever falls below
/// `alpha` when the rates are equal is at most `alpha` (Ville's
/// inequality), unlike the fixed-sample z-test's.
pub fn sequential_p(x1: u64, n1: u64, x2: u64, n2: u64, tau: f64) -> Option<f64> {
    if !comparable(x1, n1, x2, n2) || tau <= 0.0 {
        return None;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let v = pooled_variance(x1, n1, x2, n2);
    if v <= 0.0 {
        return Some(1.0);
    }
    let t2 = tau * tau;
    let theta = p1 - p2;
    let log_lambda = 0.5 * (v / (v + t2)).ln() + t2 * theta * theta / (2.0 * v * (v + t2));
    Some((-log_lambda).exp().min(1.0))
}

/// Units needed per variant to detect an absolute change of `effect` from
/// the rate `base` with a two-sided test at `alpha` and the given `power`.
pub fn sample_size(base: f64, effect: f64, alpha: f64, power: f64) -> Option<u64> {
    let other = base + effect;
    if !(0.0..1.0).contains(&base) || !(0.0..=1.0).contains(&other) || effect == 0.0 {
        return None;
    }
    let normal = standard_normal()?;
    let (za, zb) = (
        normal.inverse_cdf(1.0 - alpha / 2.0),
        normal.inverse_cdf(power),
    );
    let mean = (base + other) / 2.0;
    let root = za * (2.0 * mean * (1.0 - mean)).sqrt()
        + zb * (base * (1.0 - base) + other * (1.0 - other)).sqrt();
    Some((root * root / (effect * effect)).ceil() as u64)
}

/// Whether `x1` of `n1` and `x2` of `n2` are two proportions to compare.
fn comparable(x1: u64, n1: u64, x2: u64, n2: u64) -> bool {
    n1 > 0 && n2 > 0 && x1 <= n1 && x2 <= n2
}

/// The variance of `x1/n1 − x2/n2` under the null of equal rates (the
/// pooled rate): zero only when every unit converted or none did.
fn pooled_variance(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)
}

fn wilson(p: f64, n: f64) -> (f64, f64) {
    let z = z();
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn proportions_wilson_z_test_sequential_and_sample_size() {
        // Wilson from first principles: the p0 solving |p̂ − p0| = z·√(p0(1−p0)/n).
        let (x, n) = (81u64, 263u64);
        let interval = wilson_interval(x, n).expect("interval");
        let z = z();
        let p_hat = x as f64 / n as f64;
        for bound in [interval.low, interval.high] {
            let residual = (p_hat - bound).abs() - z * (bound * (1.0 - bound) / n as f64).sqrt();
            assert!(residual.abs() < 1e-12, "{bound}: {residual}");
        }
        assert!(wilson_interval(3, 2).is_none());
        // Textbook z-test: 10 % of 1000 against 14 % of 1000.
        let p = two_proportion_p(140, 1000, 100, 1000).expect("p");
        let pooled: f64 = 0.12;
        let zs = 0.04 / (pooled * (1.0 - pooled) * 2.0 / 1000.0).sqrt();
        let expected = 2.0 * standard_normal().expect("normal").sf(zs);
        assert!((p - expected).abs() < 1e-12 && p < 0.01, "{p}");
        // The sequential p-value is larger (it pays for looking at will):
        // the same difference needs more units to be as sure.
        let sequential = sequential_p(140, 1000, 100, 1000, 0.05).expect("p");
        assert!(sequential > p, "{sequential} vs {p}");
        let more = sequential_p(420, 3000, 300, 3000, 0.05).expect("p");
        assert!(more < 0.01, "{more}");
        assert!(sequential_p(100, 1000, 100, 1000, 0.05).expect("p") > 0.9);
        // The classic: 10 % → 12 %, alpha 0.05, power 0.8 → ~3,841 per arm.
        let n = sample_size(0.10, 0.02, 0.05, 0.8).expect("n");
        assert!((3_830..=3_850).contains(&n), "{n}");
    }

    #[test]
    fn the_sequential_p_value_keeps_its_promise_when_looked_at_often() {
        use rand::Rng;
        // 200 experiments with equal rates, each looked at 50 times as its
        // units arrive: the share that ever dips below 0.05 stays under it.
        let mut rng = StdRng::seed_from_u64(11);
        let mut false_alarms = 0;
        for _ in 0..200 {
            let (mut x1, mut x2, mut n) = (0u64, 0u64, 0u64);
            let mut alarmed = false;
            for _ in 0..50 {
                for _ in 0..100 {
                    x1 += u64::from(rng.gen::<f64>() < 0.1);
                    x2 += u64::from(rng.gen::<f64>() < 0.1);
                }
                n += 100;
                alarmed |= sequential_p(x1, n, x2, n, 0.05).is_some_and(|p| p < 0.05);
            }
            false_alarms += u32::from(alarmed);
        }
        assert!(false_alarms <= 200 * 5 / 100 + 4, "{false_alarms} of 200");
    }

    #[test]
    fn newcombes_published_example() {
        // Newcombe (1998), Statistics in Medicine 17, table II, example (a):
        // 56/70 − 48/80 = 0.2000, method 10 interval 0.0524 to 0.3339.
        let d = rate_difference(56, 70, 48, 80).expect("interval");
        assert!((d.estimate - 0.2).abs() < 1e-9);
        assert!((d.low - 0.0524).abs() < 5e-4, "{d:?}");
        assert!((d.high - 0.3339).abs() < 5e-4, "{d:?}");
        assert!(rate_difference(0, 1000, 0, 1000)
            .expect("interval")
            .contains(0.0));
        assert!(rate_difference(1, 0, 0, 10).is_none());
    }
}
