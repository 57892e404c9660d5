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
}

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
                    },
                ))
            })
            .collect()
    }
}
