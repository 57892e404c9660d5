//! `[[routes]]` and `[[routes.versions]]`: the schema, the conversion of the
//! whole file into the data plane's [`TableSpec`], and the way back from a
//! table problem's key path (`routes[0].versions[1].weight`) to where that
//! key is in the file. The rules themselves are the table build's.

use std::ops::Range;

use serde::Deserialize;
use switchyard_proxy::{BreakerLimits, RouteSpec, Settings, TableSpec, VersionSpec};
use toml::Spanned;

use super::experiment::ExperimentConfig;
use super::health::{HealthCheckConfig, OutlierConfig};
use super::rollout::RolloutConfig;
use super::shadow::ShadowConfig;
use super::values::{unset, Dur};
use super::{routing, tls, Config};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Spanned<String>,
    /// Exact host, `*.example.com`, or `*` (the default).
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    #[serde(default = "default_prefix")]
    pub path_prefix: Spanned<String>,
    /// The version `rollback` returns to: `stable` if there is one, else the
    /// first version.
    #[serde(default)]
    pub baseline: Option<Spanned<String>>,
    /// Upstream response-header timeout for this route.
    #[serde(default)]
    pub timeout: Option<Dur>,
    pub versions: Spanned<Vec<VersionConfig>>,
    /// Targets that get a copy of this route's requests.
    #[serde(default = "unset")]
    pub shadows: Spanned<Vec<ShadowConfig>>,
    /// Active HTTP checks of every endpoint of the route.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection of endpoints that keep failing.
    #[serde(default)]
    pub outlier_detection: Option<OutlierConfig>,
    /// Progressive rollout with automatic rollback.
    #[serde(default)]
    pub rollout: Option<RolloutConfig>,
    /// Header values a request must carry for this route to match.
    #[serde(default)]
    pub match_headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// Headers whose whole value must match a regular expression.
    #[serde(default)]
    pub match_headers_regex: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// The method a request must have (`GET`, `POST`, …).
    #[serde(default)]
    pub match_method: Option<Spanned<String>>,
    /// An exact path instead of `path_prefix`.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// Keep each user on one version (see [`routing`]).
    #[serde(default)]
    pub sticky: Option<Spanned<routing::StickyConfig>>,
    /// Larger request bodies are answered 413 (or cut mid-stream);
    /// default: `[limits] max_request_body_bytes`.
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// An A/B experiment's readout (see [`super::experiment`]).
    #[serde(default)]
    pub experiment: Option<ExperimentConfig>,
}

fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    pub name: Spanned<String>,
    pub weight: Spanned<u32>,
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    /// HTTPS to the endpoints (see [`tls`]).
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    /// HTTP/2 to the endpoints.
    #[serde(default)]
    pub http2: bool,
    /// Circuit breaking: requests in flight to this version (503 beyond).
    #[serde(default)]
    pub max_requests: Option<Spanned<u32>>,
    /// Circuit breaking: requests waiting for this version's response
    /// headers (503 beyond).
    #[serde(default)]
    pub max_pending: Option<Spanned<u32>>,
}

impl Config {
    /// The routing table this config describes.
    pub fn table_spec(&self) -> TableSpec {
        TableSpec {
            routes: self.routes.iter().map(|r| self.route_spec(r)).collect(),
            settings: Settings {
                version_header: self.proxy.version_header,
                revision_header: self.proxy.revision_header,
                version_override: routing::version_override(&self.proxy),
                tunnel_idle: self.timeouts.tunnel_idle.0,
                flags_header: routing::flags_header(&self.proxy),
            },
            flags: self.flags.iter().map(|f| f.spec()).collect(),
        }
    }

    fn route_spec(&self, route: &RouteConfig) -> RouteSpec {
        let versions: Vec<VersionSpec> = route
            .versions
            .get_ref()
            .iter()
            .map(|version| VersionSpec {
                name: version.name.get_ref().clone(),
                weight: *version.weight.get_ref(),
                endpoints: version
                    .endpoints
                    .get_ref()
                    .iter()
                    .map(|e| e.get_ref().clone())
                    .collect(),
                transport: tls::transport(version),
                breaker: BreakerLimits {
                    max_requests: version.max_requests.as_ref().map(|m| *m.get_ref()),
                    max_pending: version.max_pending.as_ref().map(|m| *m.get_ref()),
                },
            })
            .collect();
        let baseline = match &route.baseline {
            Some(baseline) => baseline.get_ref().clone(),
            None if versions.iter().any(|v| v.name == "stable") => "stable".into(),
            None => versions.first().map(|v| v.name.clone()).unwrap_or_default(),
        };
        RouteSpec {
            name: route.name.get_ref().clone(),
            host: route.host.as_ref().map(|h| h.get_ref().clone()),
            path_prefix: route
                .path
                .as_ref()
                .unwrap_or(&route.path_prefix)
                .get_ref()
                .clone(),
            path_exact: route.path.is_some(),
            match_method: route.match_method.as_ref().map(|m| m.get_ref().clone()),
            match_headers_regex: routing::headers_spec(route.match_headers_regex.as_ref()),
            versions,
            baseline: baseline.clone(),
            timeout: route.timeout.unwrap_or(self.timeouts.upstream_response).0,
            shadows: route
                .shadows
                .get_ref()
                .iter()
                .map(ShadowConfig::spec)
                .collect(),
            health_check: route.health_check.as_ref().map(HealthCheckConfig::spec),
            outlier: route.outlier_detection.as_ref().map(OutlierConfig::policy),
            match_headers: routing::headers_spec(route.match_headers.as_ref()),
            sticky: route.sticky.as_ref().map(|s| s.get_ref().spec()),
            max_request_body_bytes: route
                .max_request_body_bytes
                .or(self.limits.max_request_body_bytes),
            experiment: route.experiment.as_ref().map(|e| e.spec(&baseline)),
        }
    }

    /// Where in the file the key at `path` (a table problem's) is; `0..0`
    /// when it is not written there (a default, or a whole section).
    pub fn span_of(&self, path: &str) -> Range<usize> {
        let mut keys = path.split('.').map(indexed);
        let route = match keys.next() {
            Some(("routes", Some(r))) => self.routes.get(r),
            Some(("flags", Some(f))) => {
                let key = keys.next().map_or("name", |(key, _)| key);
                return self.flags.get(f).map_or(0..0, |flag| flag.span(key));
            }
            _ => None,
        };
        route.map_or(0..0, |route| route.span_of(keys))
    }
}

impl RouteConfig {
    fn span_of<'a>(
        &self,
        mut keys: impl Iterator<Item = (&'a str, Option<usize>)>,
    ) -> Range<usize> {
        let Some((key, index)) = keys.next() else {
            return 0..0;
        };
        let optional = |value: &Option<Spanned<String>>| value.as_ref().map_or(0..0, Spanned::span);
        let field = keys.next();
        match (key, index) {
            ("name", _) => self.name.span(),
            ("host", _) => optional(&self.host),
            ("path_prefix", _) => self
                .path
                .as_ref()
                .map_or_else(|| self.path_prefix.span(), Spanned::span),
            ("match_method", _) => optional(&self.match_method),
            ("baseline", _) => optional(&self.baseline),
            ("match_headers", _) => self
                .match_headers
                .as_ref()
                .or(self.match_headers_regex.as_ref())
                .map_or(0..0, Spanned::span),
            ("sticky", _) => self.sticky.as_ref().map_or(0..0, Spanned::span),
            ("versions", None) => self.versions.span(),
            ("versions", Some(v)) => self
                .versions
                .get_ref()
                .get(v)
                .map_or(0..0, |version| version.span_of(field)),
            ("shadows", None) => self.shadows.span(),
            ("shadows", Some(s)) => match (self.shadows.get_ref().get(s), field) {
                (Some(shadow), Some((key, index))) => shadow.span(key, index),
                _ => 0..0,
            },
            ("health_check", _) => match (&self.health_check, field) {
                (Some(check), Some((key, _))) => check.span(key),
                _ => 0..0,
            },
            ("outlier_detection", _) => match (&self.outlier_detection, field) {
                (Some(outlier), Some((key, _))) => outlier.span(key),
                _ => 0..0,
            },
            ("experiment", _) => match &self.experiment {
                Some(experiment) => experiment.span(field, keys.next()),
                None => 0..0,
            },
            _ => 0..0,
        }
    }
}

impl VersionConfig {
    fn span_of(&self, key: Option<(&str, Option<usize>)>) -> Range<usize> {
        match key {
            Some(("name", _)) => self.name.span(),
            Some(("weight", _)) => self.weight.span(),
            Some(("max_requests", _)) => self.max_requests.as_ref().map_or(0..0, Spanned::span),
            Some(("max_pending", _)) => self.max_pending.as_ref().map_or(0..0, Spanned::span),
            Some(("endpoints", None)) => self.endpoints.span(),
            Some(("endpoints", Some(e))) => self
                .endpoints
                .get_ref()
                .get(e)
                .map_or_else(|| self.endpoints.span(), Spanned::span),
            _ => 0..0,
        }
    }
}

/// `versions[1]` → `("versions", Some(1))`; `name` → `("name", None)`.
fn indexed(key: &str) -> (&str, Option<usize>) {
    match key.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (key, None),
    }
}
