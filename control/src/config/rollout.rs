//! `[routes.rollout]`: the schema, its checks, and the [`RolloutPolicy`]
//! the rollout controller (`crate::rollout`) runs.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{secs, Dur};
use super::{Config, RouteConfig};

/// What to do after the last step passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSuccess {
    Promote,
    Hold,
}

/// A route's rollout policy (`[routes.rollout]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    pub canary: String,
    pub baseline: String,
    /// Canary weight (percent) per step.
    pub steps: Vec<u32>,
    pub interval: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_p99_ratio: Option<f64>,
    pub max_p99: Option<Duration>,
    pub on_success: OnSuccess,
    /// Start when the proxy starts (otherwise through the API).
    pub autostart: bool,
    pub judge: Judge,
}

/// How a step's canary is judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Judge {
    /// Fixed limits: `max_error_rate`, `max_p99`, `max_p99_ratio`.
    Threshold,
    /// Tests of canary against baseline (see `crate::rollout::statistical`).
    Statistical(StatisticalPolicy),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatisticalPolicy {
    /// The chance of rolling back a canary no worse than the baseline, over
    /// a whole rollout however often it is judged.
    pub alpha: f64,
    /// How much slower than the baseline the canary may be.
    pub max_latency_shift: Tolerance,
    /// How many more errors (a share: 0.01 = 1 point) it may have.
    pub max_error_rate_increase: f64,
}

/// A latency tolerance: absolute or relative to the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Absolute(Duration),
    /// 0.05 = 5 % slower.
    Relative(f64),
}

impl Tolerance {
    /// `"5ms"`, `"250us"` or `"5%"`.
    pub fn parse(text: &str) -> Result<Tolerance, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<f64>() {
                Ok(p) if p.is_finite() && p >= 0.0 => Ok(Tolerance::Relative(p / 100.0)),
                _ => Err(format!("'{text}' is not a percentage: write e.g. \"5%\"")),
            };
        }
        humantime::parse_duration(text)
            .map(Tolerance::Absolute)
            .map_err(|e| format!("'{text}' is neither a duration nor a percentage ({e}): write e.g. \"5ms\" or \"5%\""))
    }
}

/// `judge` in `[routes.rollout]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeKind {
    #[default]
    Threshold,
    Statistical,
}

/// `[routes.rollout]`; meaning in `crate::rollout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    #[serde(default = "default_canary")]
    pub canary: Spanned<String>,
    #[serde(default)]
    pub baseline: Option<Spanned<String>>,
    #[serde(default = "default_steps")]
    pub steps: Spanned<Vec<u32>>,
    #[serde(default = "secs::<60>")]
    pub interval: Dur,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: Spanned<f64>,
    #[serde(default)]
    pub max_p99_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_p99: Option<Dur>,
    #[serde(default = "default_on_success")]
    pub on_success: OnSuccess,
    #[serde(default)]
    pub autostart: bool,
    #[serde(default)]
    pub judge: JudgeKind,
    /// Statistical judge: false-rollback rate over a rollout (default 0.05).
    #[serde(default)]
    pub alpha: Option<Spanned<f64>>,
    /// Statistical judge: `"5ms"` or `"5%"` (default `"5%"`).
    #[serde(default)]
    pub max_latency_shift: Option<Spanned<String>>,
    /// Statistical judge: a share, 0.01 = 1 point (default 0).
    #[serde(default)]
    pub max_error_rate_increase: Option<Spanned<f64>>,
}

const DEFAULT_ALPHA: f64 = 0.05;
const DEFAULT_LATENCY_SHIFT: Tolerance = Tolerance::Relative(0.05);

fn default_canary() -> Spanned<String> {
    Spanned::new(0..0, "canary".into())
}

fn default_steps() -> Spanned<Vec<u32>> {
    Spanned::new(0..0, vec![5, 25, 50, 100])
}

fn default_min_requests() -> u64 {
    200
}

fn default_max_error_rate() -> Spanned<f64> {
    Spanned::new(0..0, 0.01)
}

fn default_on_success() -> OnSuccess {
    OnSuccess::Promote
}

impl RolloutConfig {
    /// The policy's own checks; versions are route `r`'s.
    pub fn validate(
        &self,
        route: &RouteConfig,
        r: usize,
        error: &mut impl FnMut(String, Range<usize>, String),
    ) {
        let at = |key: &str| format!("routes[{r}].rollout.{key}");
        let versions: Vec<&str> = route
            .versions
            .get_ref()
            .iter()
            .map(|v| v.name.get_ref().as_str())
            .collect();
        let canary = self.canary.get_ref();
        if !versions.contains(&canary.as_str()) {
            error(
                at("canary"),
                self.canary.span(),
                format!(
                    "'{canary}' is not one of this route's versions ({})",
                    versions.join(", ")
                ),
            );
        }
        if let Some(baseline) = &self.baseline {
            if !versions.contains(&baseline.get_ref().as_str()) {
                error(
                    at("baseline"),
                    baseline.span(),
                    format!(
                        "'{}' is not one of this route's versions",
                        baseline.get_ref()
                    ),
                );
            } else if baseline.get_ref() == canary {
                error(
                    at("baseline"),
                    baseline.span(),
                    "the baseline must differ from the canary".into(),
                );
            }
        }
        let steps = self.steps.get_ref();
        if steps.is_empty()
            || steps.iter().any(|w| *w > 100)
            || steps.windows(2).any(|p| p[0] >= p[1])
        {
            error(
                at("steps"),
                self.steps.span(),
                "steps must be rising canary weights from 0 to 100, e.g. [5, 25, 50, 100]".into(),
            );
        }
        let rate = *self.max_error_rate.get_ref();
        if !(0.0..=1.0).contains(&rate) {
            error(
                at("max_error_rate"),
                self.max_error_rate.span(),
                format!("{rate} is a share: 0 to 1 (0.01 = 1 %)"),
            );
        }
        let statistical = self.judge == JudgeKind::Statistical;
        let only_statistical =
            |key: &str, span: Range<usize>, error: &mut dyn FnMut(String, Range<usize>, String)| {
                error(
                at(key),
                span,
                format!("{key} applies to the statistical judge: add judge = \"statistical\" or remove it"),
            );
            };
        if let Some(alpha) = &self.alpha {
            let value = *alpha.get_ref();
            if !statistical {
                only_statistical("alpha", alpha.span(), error);
            } else if !(value > 0.0 && value <= 0.5) {
                error(
                    at("alpha"),
                    alpha.span(),
                    format!("{value} is not a false-alarm rate between 0 and 0.5 (0.05 = 5 %)"),
                );
            }
        }
        if let Some(shift) = &self.max_latency_shift {
            if !statistical {
                only_statistical("max_latency_shift", shift.span(), error);
            } else if let Err(message) = Tolerance::parse(shift.get_ref()) {
                error(at("max_latency_shift"), shift.span(), message);
            }
        }
        if let Some(increase) = &self.max_error_rate_increase {
            let value = *increase.get_ref();
            if !statistical {
                only_statistical("max_error_rate_increase", increase.span(), error);
            } else if !(0.0..1.0).contains(&value) {
                error(
                    at("max_error_rate_increase"),
                    increase.span(),
                    format!("{value} is a share: 0 to below 1 (0.01 = 1 point)"),
                );
            }
        }
        if let Some(ratio) = &self.max_p99_ratio {
            if ratio.get_ref().is_nan() || *ratio.get_ref() <= 0.0 {
                error(
                    at("max_p99_ratio"),
                    ratio.span(),
                    "must be above 0 (1.5 = 50 % slower than the baseline)".into(),
                );
            }
        }
    }
}

impl RolloutConfig {
    /// The judge, with its defaults (validated before).
    fn judge(&self) -> Judge {
        match self.judge {
            JudgeKind::Threshold => Judge::Threshold,
            JudgeKind::Statistical => Judge::Statistical(StatisticalPolicy {
                alpha: self.alpha.as_ref().map_or(DEFAULT_ALPHA, |a| *a.get_ref()),
                max_latency_shift: self
                    .max_latency_shift
                    .as_ref()
                    .and_then(|s| Tolerance::parse(s.get_ref()).ok())
                    .unwrap_or(DEFAULT_LATENCY_SHIFT),
                max_error_rate_increase: self
                    .max_error_rate_increase
                    .as_ref()
                    .map_or(0.0, |i| *i.get_ref()),
            }),
        }
    }
}

impl Config {
    /// Each route's rollout policy, by route name.
    pub fn rollout_policies(&self) -> HashMap<String, RolloutPolicy> {
        let specs = self.table_spec();
        self.routes
            .iter()
            .zip(&specs.routes)
            .filter_map(|(route, spec)| {
                let rollout = route.rollout.as_ref()?;
                let baseline = match &rollout.baseline {
                    Some(baseline) => baseline.get_ref().clone(),
                    None => spec.baseline.clone(),
                };
                Some((
                    spec.name.clone(),
                    RolloutPolicy {
                        canary: rollout.canary.get_ref().clone(),
                        baseline,
                        steps: rollout.steps.get_ref().clone(),
                        interval: rollout.interval.0,
                        min_requests: rollout.min_requests,
                        max_error_rate: *rollout.max_error_rate.get_ref(),
                        max_p99_ratio: rollout.max_p99_ratio.as_ref().map(|r| *r.get_ref()),
                        max_p99: rollout.max_p99.map(|d| d.0),
                        on_success: rollout.on_success,
                        autostart: rollout.autostart,
                        judge: rollout.judge(),
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::errors;

    fn with_rollout(keys: &str) -> String {
        format!(
            "[[routes]]\nname = \"web\"\n  [routes.rollout]\n  {keys}\n  [[routes.versions]]\n  name = \"stable\"\n  weight = 100\n  endpoints = [\"127.0.0.1:9001\"]\n  [[routes.versions]]\n  name = \"canary\"\n  weight = 0\n  endpoints = [\"127.0.0.1:9002\"]\n"
        )
    }

    fn judge(keys: &str) -> Judge {
        let config = Config::parse(&with_rollout(keys), "t.toml").expect("valid");
        config.rollout_policies()["web"].judge.clone()
    }

    #[test]
    fn the_statistical_judge_and_its_defaults() {
        assert_eq!(judge(""), Judge::Threshold);
        assert_eq!(
            judge("judge = \"statistical\""),
            Judge::Statistical(StatisticalPolicy {
                alpha: 0.05,
                max_latency_shift: Tolerance::Relative(0.05),
                max_error_rate_increase: 0.0,
            })
        );
        assert_eq!(
            judge("judge = \"statistical\"\n  alpha = 0.01\n  max_latency_shift = \"5ms\"\n  max_error_rate_increase = 0.02"),
            Judge::Statistical(StatisticalPolicy {
                alpha: 0.01,
                max_latency_shift: Tolerance::Absolute(Duration::from_millis(5)),
                max_error_rate_increase: 0.02,
            })
        );
    }

    #[test]
    fn statistical_keys_are_checked() {
        for (keys, says) in [
            ("alpha = 0.05", "add judge = \"statistical\""),
            (
                "judge = \"statistical\"\n  alpha = 0.9",
                "between 0 and 0.5",
            ),
            (
                "judge = \"statistical\"\n  max_latency_shift = \"fast\"",
                "\"5ms\" or \"5%\"",
            ),
            (
                "judge = \"statistical\"\n  max_latency_shift = \"-3%\"",
                "not a percentage",
            ),
            (
                "judge = \"statistical\"\n  max_error_rate_increase = 2.0",
                "0.01 = 1 point",
            ),
            (
                "judge = \"bayesian\"",
                "expected `threshold` or `statistical`",
            ),
        ] {
            let found = errors(&with_rollout(keys));
            let text: Vec<String> = found.iter().map(|e| e.message.clone()).collect();
            let text = text.join("; ");
            assert!(text.contains(says), "{keys}: {text}");
        }
    }
}
