//! `[routes.health_check]` and `[routes.outlier_detection]`: the schema and
//! the data plane's specs (the table build checks them).

use std::ops::Range;

use serde::Deserialize;
use switchyard_proxy::health::{HealthCheckSpec, OutlierPolicy};
use toml::Spanned;

use super::values::{secs, Dur};

/// `[routes.health_check]`: a GET of `path` on every endpoint each
/// `interval`; any 2xx within `timeout` passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "default_health_path")]
    pub path: Spanned<String>,
    #[serde(default = "secs::<5>")]
    pub interval: Dur,
    #[serde(default = "secs::<1>")]
    pub timeout: Dur,
    #[serde(default = "two")]
    pub healthy_threshold: Spanned<u32>,
    #[serde(default = "three")]
    pub unhealthy_threshold: Spanned<u32>,
}

fn default_health_path() -> Spanned<String> {
    Spanned::new(0..0, "/healthz".into())
}

fn two() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}

fn three() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}

/// `[routes.outlier_detection]` (Envoy's outlier detection): after
/// `consecutive_failures` connect errors or 5xx in a row an endpoint is
/// ejected for `base_ejection` times the number of its ejections (at most
/// `max_ejection`), never more than `max_ejection_percent` of a version's
/// endpoints at once (one is always allowed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    #[serde(default = "five")]
    pub consecutive_failures: Spanned<u32>,
    #[serde(default = "secs::<30>")]
    pub base_ejection: Dur,
    #[serde(default = "secs::<300>")]
    pub max_ejection: Dur,
    #[serde(default = "fifty")]
    pub max_ejection_percent: Spanned<u8>,
}

fn five() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

fn fifty() -> Spanned<u8> {
    Spanned::new(0..0, 50)
}

impl HealthCheckConfig {
    pub fn spec(&self) -> HealthCheckSpec {
        HealthCheckSpec {
            path: self.path.get_ref().clone(),
            interval: self.interval.0,
            timeout: self.timeout.0,
            healthy_threshold: *self.healthy_threshold.get_ref(),
            unhealthy_threshold: *self.unhealthy_threshold.get_ref(),
        }
    }
}

impl OutlierConfig {
    pub fn policy(&self) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: *self.consecutive_failures.get_ref(),
            base_ejection: self.base_ejection.0,
            max_ejection: self.max_ejection.0,
            max_ejection_percent: *self.max_ejection_percent.get_ref(),
        }
    }
}

impl HealthCheckConfig {
    /// Where in the file a key of this check is.
    pub fn span(&self, key: &str) -> Range<usize> {
        match key {
            "path" => self.path.span(),
            "healthy_threshold" => self.healthy_threshold.span(),
            "unhealthy_threshold" => self.unhealthy_threshold.span(),
            _ => 0..0,
        }
    }
}

impl OutlierConfig {
    /// Where in the file a key of this policy is.
    pub fn span(&self, key: &str) -> Range<usize> {
        match key {
            "consecutive_failures" => self.consecutive_failures.span(),
            "max_ejection_percent" => self.max_ejection_percent.span(),
            _ => 0..0,
        }
    }
}
