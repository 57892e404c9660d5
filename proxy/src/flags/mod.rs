//! Feature flags at the proxy: for each request on a flag's routes, the
//! unit (the value of the flag's key header or cookie) is bucketed and the
//! flags it gets are named to the upstream in one request header
//! (`x-switchyard-flags: new-checkout,theme=dark`); the client's own copy of
//! that header never passes. Requests are counted per flag and state (on,
//! off, or a variant) so the control plane can guard a flag and show what
//! it costs.
//!
//! Bucketing is flagd's `fractional` operation, so an application that
//! evaluates the same flag through OpenFeature and flagd agrees with the
//! proxy on every unit: `h = murmur3_x86_32(flag name ++ key, seed 0)`,
//! `b = ⌊h × total weight / 2³²⌋`, and the unit gets the first variant
//! whose cumulative weight exceeds `b`. A boolean flag at `percent` is
//! `[["on", percent], ["off", 100 − percent]]` (in millionths of a percent,
//! so fractions work and whole percents bucket exactly as flagd does):
//! raising `percent` only turns units on.
//!
//! The counts belong to the flag, not to one table: a table built after
//! this one takes them over while the flag keeps its name and states.

mod counts;

use std::io::Read;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

pub use counts::{FlagCounts, StateCounts, StateTotals};

/// The request header naming a unit's flags, unless configured otherwise.
pub const DEFAULT_HEADER: &str = "x-switchyard-flags";
/// The states of a boolean flag, in index order.
pub const BOOLEAN_STATES: [&str; 2] = ["on", "off"];

/// `[[flags]]` as the table gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagSpec {
    pub name: String,
    /// Off for every unit (the kill switch) when false.
    pub enabled: bool,
    /// Boolean flags: the share of units that get it, 0 to 100.
    pub percent: f64,
    /// Where the unit's key is: a header, then a cookie.
    pub header: Option<String>,
    pub cookie: Option<String>,
    /// The routes it applies to; empty: every route.
    pub routes: Vec<String>,
    /// Multi-variant flags: names and weights (boolean when empty).
    pub variants: Vec<(String, u32)>,
    /// The variant of a disabled multi-variant flag and of a unit without
    /// a key (default: the first).
    pub default_variant: Option<String>,
}

impl Default for FlagSpec {
    fn default() -> Self {
        FlagSpec {
            name: String::new(),
            enabled: true,
            percent: 0.0,
            header: None,
            cookie: None,
            routes: Vec::new(),
            variants: Vec::new(),
            default_variant: None,
        }
    }
}

/// Why a unit got its state (OpenFeature's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Bucketed (pseudorandom, deterministic per unit).
    Split,
    /// The flag is disabled.
    Disabled,
    /// No key: the default.
    Default,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Default => "DEFAULT",
        }
    }
}

/// A flag in a table.
#[derive(Debug)]
pub struct Flag {
    pub name: Arc<str>,
    pub enabled: bool,
    pub percent: f64,
    header: Option<HeaderName>,
    cookie: Option<String>,
    /// Empty: every route.
    pub routes: Vec<String>,
    /// (name, weight): `on`/`off` for a boolean flag.
    variants: Box<[(String, u64)]>,
    total: u64,
    boolean: bool,
    /// The state of a disabled flag or a unit without a key.
    default: usize,
    counts: Arc<FlagCounts>,
}

impl Flag {
    /// Builds `spec`, taking over `previous`'s counts when it has the same
    /// states; `Err` says what is wrong (the caller names the key).
    pub fn build(spec: &FlagSpec, previous: Option<&Flag>) -> Result<Flag, (&'static str, String)> {
        if !crate::names::valid_name(&spec.name) {
            return Err((
                "name",
                format!(
                    "'{}' is not a valid flag name: use letters, digits, '-', '_' and '.'",
                    spec.name
                ),
            ));
        }
        let header = spec
            .header
            .as_deref()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| ("key", format!("'{h}' is not a header name")))
            })
            .transpose()?;
        if let Some(cookie) = &spec.cookie {
            if !crate::sticky::valid_cookie_name(cookie) {
                return Err(("key", format!("'{cookie}' is not a cookie name")));
            }
        }
        if header.is_none() && spec.cookie.is_none() {
            return Err((
                "key",
                "a flag needs a key: key = { header = \"x-user-id\" } or { cookie = \"uid\" }"
                    .into(),
            ));
        }
        let boolean = spec.variants.is_empty();
        let variants: Vec<(String, u64)> = if boolean {
            if !(0.0..=100.0).contains(&spec.percent) {
                return Err((
                    "percent",
                    format!("{} is not between 0 and 100", spec.percent),
                ));
            }
            let on = (spec.percent * PERCENT_UNITS as f64).round() as u64;
            vec![("on".into(), on), ("off".into(), 100 * PERCENT_UNITS - on)]
        } else {
            if spec.percent != 0.0 {
                return Err((
                    "percent",
                    "a flag with variants splits by their weights: leave percent out".into(),
                ));
            }
            for (i, (name, _)) in spec.variants.iter().enumerate() {
                if !crate::names::valid_name(name) {
                    return Err(("variants", format!("'{name}' is not a valid variant name")));
                }
                if spec.variants[..i].iter().any(|(other, _)| other == name) {
                    return Err(("variants", format!("variant '{name}' is named twice")));
                }
            }
            let total: u64 = spec.variants.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 || total > i32::MAX as u64 {
                return Err((
                    "variants",
                    "the variants' weights must add up to more than 0 (and below 2^31)".into(),
                ));
            }
            spec.variants
                .iter()
                .map(|(name, weight)| (name.clone(), u64::from(*weight)))
                .collect()
        };
        let total = variants.iter().map(|(_, w)| w).sum();
        let default = match &spec.default_variant {
            None if boolean => 1,
            None => 0,
            Some(name) => variants
                .iter()
                .position(|(v, _)| v == name)
                .ok_or_else(|| {
                    (
                        "default_variant",
                        format!("'{name}' is not one of the flag's variants"),
                    )
                })?,
        };
        let states: Vec<&str> = variants.iter().map(|(name, _)| name.as_str()).collect();
        let counts = previous
            .filter(|p| *p.name == *spec.name && p.counts.has_states(&states))
            .map_or_else(
                || Arc::new(FlagCounts::new(&states)),
                |p| Arc::clone(&p.counts),
            );
        Ok(Flag {
            name: spec.name.as_str().into(),
            enabled: spec.enabled,
            percent: spec.percent,
            header,
            cookie: spec.cookie.clone(),
            routes: spec.routes.clone(),
            variants: variants.into_boxed_slice(),
            total,
            boolean,
            default,
            counts,
        })
    }

    /// Whether it applies to `route`.
    pub fn covers(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }

    pub fn is_boolean(&self) -> bool {
        self.boolean
    }

    /// The state names, in index order (`on`, `off` for a boolean flag).
    pub fn states(&self) -> impl Iterator<Item = &str> {
        self.variants.iter().map(|(name, _)| name.as_str())
    }

    pub fn state_name(&self, state: usize) -> &str {
        self.variants
            .get(state)
            .map_or("", |(name, _)| name.as_str())
    }

    /// The variants and their shares (percent of units).
    pub fn shares(&self) -> impl Iterator<Item = (&str, f64)> {
        let total = self.total.max(1) as f64;
        self.variants
            .iter()
            .map(move |(name, weight)| (name.as_str(), *weight as f64 * 100.0 / total))
    }

    /// The unit key of a request.
    pub fn key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        crate::sticky::unit_key(self.header.as_ref(), self.cookie.as_deref(), headers)
    }

    /// The state of the unit with key `key` (`None`: no key), and why.
    pub fn evaluate(&self, key: Option<&[u8]>) -> (usize, Reason) {
        if !self.enabled {
            return (self.default, Reason::Disabled);
        }
        let Some(key) = key else {
            return (self.default, Reason::Default);
        };
        let bucket = (u64::from(hash(&self.name, key)) * self.total) >> 32;
        let mut end = 0;
        for (state, (_, weight)) in self.variants.iter().enumerate() {
            end += weight;
            if bucket < end {
                return (state, Reason::Split);
            }
        }
        // Unreachable (bucket < total); the default keeps it total.
        (self.default, Reason::Split)
    }

    /// Appends what the upstream header says of `state` to `named`
    /// (comma-separated): the flag's name when a boolean flag is on,
    /// `name=variant` for a variant, nothing when off or disabled.
    pub fn push_header_part(&self, state: usize, reason: Reason, named: &mut String) {
        let variant = match (self.boolean, reason) {
            (_, Reason::Disabled) | (false, Reason::Default) => return,
            (true, _) if state != 0 => return,
            (true, _) => None,
            (false, Reason::Split) => Some(self.state_name(state)),
        };
        if !named.is_empty() {
            named.push(',');
        }
        named.push_str(&self.name);
        if let Some(variant) = variant {
            named.push('=');
            named.push_str(variant);
        }
    }

    /// [`Self::push_header_part`] on its own.
    #[cfg(test)]
    pub fn header_part(&self, state: usize, reason: Reason) -> Option<String> {
        let mut part = String::new();
        self.push_header_part(state, reason, &mut part);
        (!part.is_empty()).then_some(part)
    }

    /// The state of a disabled flag or a unit without a key: `off`, or the
    /// default variant.
    pub fn default_state(&self) -> usize {
        self.default
    }

    /// Where the unit's key is read: `(header, cookie)`.
    pub fn key_source(&self) -> (Option<&str>, Option<&str>) {
        (
            self.header.as_ref().map(HeaderName::as_str),
            self.cookie.as_deref(),
        )
    }

    pub fn counts(&self) -> &FlagCounts {
        &self.counts
    }
}

/// Millionths of a percent: a boolean flag's weights add up to 10⁸.
const PERCENT_UNITS: u64 = 1_000_000;

/// flagd's `fractional` hash of `key` for flag `flag`.
pub fn hash(flag: &str, key: &[u8]) -> u32 {
    // The two read as one input, without copying them together; reading
    // from memory cannot fail (a failure would bucket at 0).
    murmur3::murmur3_32(&mut flag.as_bytes().chain(key), 0).unwrap_or(0)
}

#[cfg(test)]
mod tests;
