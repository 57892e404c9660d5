//! `[[flags]]`: feature flags served at the proxy (their bucketing and
//! header are the data plane's, `switchyard_proxy::flags`), with an
//! optional `[flags.guard]` kill switch the control plane runs
//! (`crate::flags::guard`).
//!
//! ```toml
//! [[flags]]
//! name = "new-checkout"
//! percent = 10                     # of units, 0-100, fractions allowed
//! key = { header = "x-user-id" }   # or { cookie = "uid" }
//! routes = ["shop"]                # default: every route
//!   [flags.guard]
//!   max_error_rate_increase = 0.01
//!   min_requests = 500
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use switchyard_proxy::FlagSpec;
use toml::Spanned;

use super::values::{secs, yes, Dur};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagConfig {
    pub name: Spanned<String>,
    /// The kill switch: false turns the flag off for every unit.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Boolean flags: the share of units that get it (0-100).
    #[serde(default)]
    pub percent: Option<Spanned<f64>>,
    pub key: Spanned<FlagKey>,
    /// Default: every route.
    #[serde(default)]
    pub routes: Option<Spanned<Vec<String>>>,
    /// Multi-variant flags: `[{ name = "light", weight = 50 }, …]`.
    #[serde(default)]
    pub variants: Option<Spanned<Vec<VariantConfig>>>,
    #[serde(default)]
    pub default_variant: Option<Spanned<String>>,
    #[serde(default)]
    pub guard: Option<GuardConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagKey {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    pub name: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `[flags.guard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// How much higher the flagged error rate may be than the unflagged.
    #[serde(default = "default_increase")]
    pub max_error_rate_increase: Spanned<f64>,
    /// Flagged requests in the window before any judgement.
    #[serde(default = "default_min_requests")]
    pub min_requests: Spanned<u64>,
    /// The sliding window compared.
    #[serde(default = "secs::<60>")]
    pub window: Dur,
    /// How often it looks.
    #[serde(default = "secs::<5>")]
    pub interval: Dur,
    /// False trips over the flag's life stay below this.
    #[serde(default = "default_alpha")]
    pub alpha: Spanned<f64>,
}

fn default_increase() -> Spanned<f64> {
    Spanned::new(0..0, 0.01)
}

fn default_min_requests() -> Spanned<u64> {
    Spanned::new(0..0, 500)
}

fn default_alpha() -> Spanned<f64> {
    Spanned::new(0..0, 0.05)
}

/// A guard as the controller runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardPolicy {
    pub max_error_rate_increase: f64,
    pub min_requests: u64,
    pub window: Duration,
    pub interval: Duration,
    pub alpha: f64,
}

impl FlagConfig {
    pub fn spec(&self) -> FlagSpec {
        FlagSpec {
            name: self.name.get_ref().clone(),
            enabled: self.enabled,
            percent: self.percent.as_ref().map_or(0.0, |p| *p.get_ref()),
            header: self.key.get_ref().header.clone(),
            cookie: self.key.get_ref().cookie.clone(),
            routes: self
                .routes
                .as_ref()
                .map_or_else(Vec::new, |r| r.get_ref().clone()),
            variants: self.variants.as_ref().map_or_else(Vec::new, |v| {
                v.get_ref()
                    .iter()
                    .map(|v| (v.name.clone(), v.weight))
                    .collect()
            }),
            default_variant: self.default_variant.as_ref().map(|d| d.get_ref().clone()),
        }
    }

    /// The guard's own rules (the flag's are the table build's).
    pub fn validate(&self, f: usize, error: &mut impl FnMut(String, Range<usize>, String)) {
        let Some(guard) = &self.guard else {
            return;
        };
        let at = |key: &str| format!("flags[{f}].guard.{key}");
        let increase = *guard.max_error_rate_increase.get_ref();
        if !(0.0..1.0).contains(&increase) {
            error(
                at("max_error_rate_increase"),
                guard.max_error_rate_increase.span(),
                format!("{increase} is not a fraction from 0 to below 1 (0.01: one point)"),
            );
        }
        if *guard.min_requests.get_ref() == 0 {
            error(
                at("min_requests"),
                guard.min_requests.span(),
                "must be at least 1".into(),
            );
        }
        let alpha = *guard.alpha.get_ref();
        if !(alpha > 0.0 && alpha < 1.0) {
            error(
                at("alpha"),
                guard.alpha.span(),
                format!("{alpha} is not between 0 and 1 (0.05 is usual)"),
            );
        }
        if guard.interval.0 > guard.window.0 {
            error(
                at("interval"),
                0..0,
                "the interval is longer than the window: it would judge requests it never saw"
                    .into(),
            );
        }
    }

    /// Where `key` (`name`, `percent`, `key`, `routes`, `variants`, …) is.
    pub fn span(&self, key: &str) -> Range<usize> {
        fn of<T>(value: &Option<Spanned<T>>) -> Range<usize> {
            value.as_ref().map_or(0..0, Spanned::span)
        }
        match key {
            "name" => self.name.span(),
            "percent" => of(&self.percent),
            "key" => self.key.span(),
            "routes" => of(&self.routes),
            "variants" => of(&self.variants),
            "default_variant" => of(&self.default_variant),
            _ => 0..0,
        }
    }
}

/// The guarded flags' policies, by flag name.
pub fn guards(flags: &[FlagConfig]) -> BTreeMap<String, GuardPolicy> {
    flags
        .iter()
        .filter_map(|flag| {
            let guard = flag.guard.as_ref()?;
            Some((
                flag.name.get_ref().clone(),
                GuardPolicy {
                    max_error_rate_increase: *guard.max_error_rate_increase.get_ref(),
                    min_requests: *guard.min_requests.get_ref(),
                    window: guard.window.0,
                    interval: guard.interval.0,
                    alpha: *guard.alpha.get_ref(),
                },
            ))
        })
        .collect()
}
