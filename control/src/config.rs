//! The config file: its TOML schema (serde), validation that reports every
//! problem with line, column and key path, and the conversion into the data
//! plane's [`TableSpec`].

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use switchyard_proxy::health::{HealthCheckSpec, OutlierPolicy};
use switchyard_proxy::metrics::{self, MetricsError, MetricsSettings};
use switchyard_proxy::route::{HeaderMatch, HostMatch};
use switchyard_proxy::shadow::{self, ShadowSpec, MAX_SHADOWS};
use switchyard_proxy::split::{MAX_VERSIONS, MAX_WEIGHT};
use switchyard_proxy::table::{parse_endpoint, valid_name};
use switchyard_proxy::{
    ListenerSettings, RouteSpec, Settings, TableSpec, UpstreamSettings, VersionSpec,
};
use toml::Spanned;

pub mod routing;
pub mod tls;

/// The whole file. Unknown keys anywhere are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub proxy: ProxyOptions,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `[metrics]`: how requests are measured. Fixed at start (a reload that
/// changes it is applied at the next restart).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Measure every request per route and version (default). Off: no
    /// per-version metrics, stats or dashboard figures, and no cost.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Upper bounds in seconds of the exported latency histogram buckets.
    #[serde(default = "default_buckets")]
    pub buckets: Spanned<Vec<f64>>,
    /// Stats windows are made of whole slices of this length …
    #[serde(default = "default_window_slice")]
    pub window_slice: Spanned<Dur>,
    /// … and reach back at most this many slices.
    #[serde(default = "default_window_slices")]
    pub window_slices: Spanned<usize>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            buckets: default_buckets(),
            window_slice: default_window_slice(),
            window_slices: default_window_slices(),
        }
    }
}

fn default_buckets() -> Spanned<Vec<f64>> {
    Spanned::new(0..0, metrics::DEFAULT_BUCKETS.to_vec())
}

fn default_window_slice() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(metrics::DEFAULT_SLICE))
}

fn default_window_slices() -> Spanned<usize> {
    Spanned::new(0..0, metrics::DEFAULT_SLICES)
}

/// Who may use the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the bearer token (its name in the history: `admin`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Further named tokens, so the history says which tool made a change.
    #[serde(default)]
    pub tokens: Vec<NamedToken>,
    /// Whether GET endpoints answer without a token. Default: yes when the
    /// admin listener is on loopback, no otherwise.
    #[serde(default)]
    pub public_reads: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    pub name: String,
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where clients connect.
    #[serde(default = "default_data")]
    pub data: Spanned<String>,
    /// Where the admin API listens (never on the data port).
    #[serde(default = "default_admin")]
    pub admin: Spanned<String>,
    /// Terminate TLS on the data listener (see [`tls`]).
    #[serde(default)]
    pub tls: Option<tls::ListenTls>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            data: default_data(),
            admin: default_admin(),
            tls: None,
        }
    }
}

fn default_data() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}

fn default_admin() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect to an upstream endpoint.
    #[serde(default = "secs::<2>")]
    pub connect: Dur,
    /// Upstream response headers; a route's `timeout` overrides it.
    #[serde(default = "secs::<30>")]
    pub upstream_response: Dur,
    /// An HTTP/1.1 client connection with no request in flight that starts
    /// none for this long is closed (idle keep-alive, trickled headers).
    #[serde(default = "secs::<60>")]
    pub client_idle: Dur,
    /// Idle pooled upstream connections are closed after this.
    #[serde(default = "secs::<90>")]
    pub upstream_idle: Dur,
    /// An upgraded (WebSocket) connection with no bytes either way for this
    /// long is closed.
    #[serde(default = "secs::<3600>")]
    pub tunnel_idle: Dur,
    /// Shutdown waits this long for in-flight requests.
    #[serde(default = "secs::<10>")]
    pub drain: Dur,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: secs::<2>(),
            upstream_response: secs::<30>(),
            client_idle: secs::<60>(),
            upstream_idle: secs::<90>(),
            tunnel_idle: secs::<3600>(),
            drain: secs::<10>(),
        }
    }
}

fn secs<const N: u64>() -> Dur {
    Dur(Duration::from_secs(N))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyOptions {
    /// `x-switchyard-version: NAME` on every proxied response.
    #[serde(default = "yes")]
    pub version_header: bool,
    /// `x-switchyard-revision: N` on every response (debugging, tests).
    #[serde(default)]
    pub revision_header: bool,
    /// Idle upstream connections kept per endpoint.
    #[serde(default = "default_pool_size")]
    pub max_idle_per_endpoint: usize,
    /// Honour the override header (see [`routing`]).
    #[serde(default = "yes")]
    pub version_override: bool,
    #[serde(default = "routing::default_override_header")]
    pub override_header: Spanned<String>,
    /// Required after `NAME:` in the override header's value.
    #[serde(default)]
    pub override_secret: Option<Spanned<String>>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            version_header: true,
            revision_header: false,
            max_idle_per_endpoint: default_pool_size(),
            version_override: true,
            override_header: routing::default_override_header(),
            override_secret: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_pool_size() -> usize {
    256
}

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
    /// Keep each user on one version (see [`routing`]).
    #[serde(default)]
    pub sticky: Option<Spanned<routing::StickyConfig>>,
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
    pub on_success: crate::rollout::OnSuccess,
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

fn default_on_success() -> crate::rollout::OnSuccess {
    crate::rollout::OnSuccess::Promote
}

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
    fn spec(&self) -> HealthCheckSpec {
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
    fn policy(&self) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: *self.consecutive_failures.get_ref(),
            base_ejection: self.base_ejection.0,
            max_ejection: self.max_ejection.0,
            max_ejection_percent: *self.max_ejection_percent.get_ref(),
        }
    }
}

/// One `[[routes.shadows]]`; defaults and meaning in
/// `switchyard_proxy::shadow::ShadowSpec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    pub name: Spanned<String>,
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "unspanned::<100>")]
    pub percent: Spanned<f64>,
    #[serde(default)]
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: Spanned<usize>,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: Spanned<usize>,
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
    #[serde(default)]
    pub strip_headers: Vec<Spanned<String>>,
    #[serde(default)]
    pub compare: bool,
    #[serde(default = "unset")]
    pub compare_ignore_body: Spanned<bool>,
}

/// A key left out: its default, at no position in the file.
fn unset<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

fn unspanned<const N: u8>() -> Spanned<f64> {
    Spanned::new(0..0, f64::from(N))
}

fn default_max_in_flight() -> Spanned<usize> {
    Spanned::new(0..0, shadow::DEFAULT_MAX_IN_FLIGHT)
}

fn default_max_body_bytes() -> Spanned<usize> {
    Spanned::new(0..0, shadow::DEFAULT_MAX_BODY_BYTES)
}

impl ShadowConfig {
    fn spec(&self) -> ShadowSpec {
        let strings = |list: &[Spanned<String>]| -> Vec<String> {
            list.iter().map(|s| s.get_ref().clone()).collect()
        };
        let mut spec = ShadowSpec::new(
            self.name.get_ref().clone(),
            strings(self.endpoints.get_ref()),
        );
        spec.percent = *self.percent.get_ref();
        if let Some(methods) = &self.methods {
            spec.methods = strings(methods.get_ref());
        }
        spec.max_in_flight = *self.max_in_flight.get_ref();
        spec.max_body_bytes = *self.max_body_bytes.get_ref();
        if let Some(timeout) = &self.timeout {
            spec.timeout = timeout.get_ref().0;
        }
        spec.strip_headers = strings(&self.strip_headers);
        spec.compare = self.compare;
        spec.compare_ignore_body = *self.compare_ignore_body.get_ref();
        spec
    }

    /// Where in the file a key (or list entry) of this shadow is.
    fn span(&self, key: &str, index: Option<usize>) -> Range<usize> {
        let entry = |list: &[Spanned<String>], whole: Range<usize>| match index {
            Some(i) => list.get(i).map_or(whole, Spanned::span),
            None => whole,
        };
        match key {
            "name" => self.name.span(),
            "endpoints" => entry(self.endpoints.get_ref(), self.endpoints.span()),
            "percent" => self.percent.span(),
            "methods" => self
                .methods
                .as_ref()
                .map_or(0..0, |m| entry(m.get_ref(), m.span())),
            "max_in_flight" => self.max_in_flight.span(),
            "max_body_bytes" => self.max_body_bytes.span(),
            "timeout" => self.timeout.as_ref().map_or(0..0, Spanned::span),
            "strip_headers" => entry(&self.strip_headers, 0..0),
            "compare_ignore_body" => self.compare_ignore_body.span(),
            _ => 0..0,
        }
    }
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
}

/// A duration written as `"250ms"`, `"2s"`, `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "'{text}' is not a duration ({e}): write e.g. \"250ms\", \"2s\" or \"1m\""
            ))
        })?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom("a duration must be above 0"));
        }
        Ok(Dur(duration))
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `routes[0].versions[1].weight`.
    pub path: String,
    /// 1-based line and column, when the key is in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.position {
            write!(f, "line {line}, column {column}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {error}", self.source_name)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source_name: path.display().to_string(),
            errors: vec![ConfigError {
                path: String::new(),
                position: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::parse_checked(&text, path)
    }

    /// Parses and validates the text of the file at `path`, including that
    /// every certificate, key and CA file it names can be used.
    pub fn parse_checked(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let source_name = path.display().to_string();
        let config = Config::parse(text, &source_name)?;
        let errors = config.check_files(Some(text), path.parent());
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors {
                source_name,
                errors,
            })
        }
    }

    /// Parses and validates TOML text; `source_name` prefixes each error.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source_name: source_name.to_owned(),
            errors,
        };
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // Spanned<T> shows up as a private map key in the path.
            let path = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            fail(vec![ConfigError {
                path: if path == "." { String::new() } else { path },
                position: inner.span().map(|span| line_column(text, span.start)),
                message: inner.message().trim().to_owned(),
            }])
        })?;
        let errors = config.validate(text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(fail(errors))
        }
    }

    fn validate(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut error = |path: String, span: Range<usize>, message: String| {
            errors.push(ConfigError {
                path,
                position: (span.end > 0).then(|| line_column(text, span.start)),
                message,
            })
        };
        for (key, addr) in [
            ("listen.data", &self.listen.data),
            ("listen.admin", &self.listen.admin),
        ] {
            if addr.get_ref().parse::<SocketAddr>().is_err() {
                error(
                    key.into(),
                    addr.span(),
                    format!(
                        "'{}' is not an IP:port address, e.g. 127.0.0.1:8080",
                        addr.get_ref()
                    ),
                );
            }
        }
        // Port 0 asks the OS for a fresh port each time, so both listeners on
        // "127.0.0.1:0" is fine (tests, benchmarks).
        if self.listen.data.get_ref() == self.listen.admin.get_ref()
            && !self.listen.data.get_ref().ends_with(":0")
        {
            error(
                "listen.admin".into(),
                self.listen.admin.span(),
                "the admin API must not share the data address".into(),
            );
        }
        if let Some(listen_tls) = &self.listen.tls {
            tls::validate_listen(listen_tls, &mut error);
        }
        routing::validate_proxy(&self.proxy, &mut error);
        if let Err(problem) = self.metrics_settings().validate() {
            let (key, span) = match problem {
                MetricsError::SliceTooShort(_) => {
                    ("metrics.window_slice", self.metrics.window_slice.span())
                }
                MetricsError::BadSliceCount(_) => {
                    ("metrics.window_slices", self.metrics.window_slices.span())
                }
                _ => ("metrics.buckets", self.metrics.buckets.span()),
            };
            error(key.into(), span, problem.to_string());
        }
        if self.routes.is_empty() {
            error(
                "routes".into(),
                0..0,
                "no routes: add at least one [[routes]]".into(),
            );
        }
        let mut route_names: Vec<&str> = Vec::new();
        let mut matches: Vec<(HostMatch, &str, HeaderMatch, &str)> = Vec::new();
        for (r, route) in self.routes.iter().enumerate() {
            let at = |key: &str| format!("routes[{r}].{key}");
            let name = route.name.get_ref();
            if !valid_name(name) {
                error(at("name"), route.name.span(), bad_name(name));
            }
            if route_names.contains(&name.as_str()) {
                error(
                    at("name"),
                    route.name.span(),
                    format!("route '{name}' is defined twice"),
                );
            }
            route_names.push(name);
            let host = match &route.host {
                Some(host) => match HostMatch::parse(Some(host.get_ref())) {
                    Ok(parsed) => Some(parsed),
                    Err(message) => {
                        error(at("host"), host.span(), message);
                        None
                    }
                },
                None => Some(HostMatch::Any),
            };
            let prefix = route.path_prefix.get_ref();
            if !prefix.starts_with('/') {
                error(
                    at("path_prefix"),
                    route.path_prefix.span(),
                    format!("'{prefix}' must start with '/'"),
                );
            }
            if let Some(host) = host {
                let headers = routing::header_match(route);
                if let Some((_, _, _, other)) = matches
                    .iter()
                    .find(|(h, p, m, _)| *h == host && p == prefix && *m == headers)
                {
                    error(
                        at("path_prefix"),
                        route.path_prefix.span(),
                        format!("route '{other}' already matches host '{host}' and path prefix '{prefix}'{}: give one a different host, prefix or match_headers", if headers.is_empty() { String::new() } else { format!(" with headers {headers}") }),
                    );
                }
                matches.push((host, prefix, headers, name));
            }
            routing::validate_route(route, r, &mut error);
            self.validate_versions(route, r, &mut error);
            if let Some(check) = &route.health_check {
                if !check.path.get_ref().starts_with('/') {
                    error(
                        at("health_check.path"),
                        check.path.span(),
                        format!("'{}' must start with '/'", check.path.get_ref()),
                    );
                }
                for (key, value) in [
                    ("health_check.healthy_threshold", &check.healthy_threshold),
                    (
                        "health_check.unhealthy_threshold",
                        &check.unhealthy_threshold,
                    ),
                ] {
                    if *value.get_ref() == 0 {
                        error(at(key), value.span(), "must be at least 1".into());
                    }
                }
            }
            if let Some(rollout) = &route.rollout {
                let versions: Vec<&str> = route
                    .versions
                    .get_ref()
                    .iter()
                    .map(|v| v.name.get_ref().as_str())
                    .collect();
                let canary = rollout.canary.get_ref();
                if !versions.contains(&canary.as_str()) {
                    error(
                        at("rollout.canary"),
                        rollout.canary.span(),
                        format!(
                            "'{canary}' is not one of this route's versions ({})",
                            versions.join(", ")
                        ),
                    );
                }
                if let Some(baseline) = &rollout.baseline {
                    if !versions.contains(&baseline.get_ref().as_str()) {
                        error(
                            at("rollout.baseline"),
                            baseline.span(),
                            format!(
                                "'{}' is not one of this route's versions",
                                baseline.get_ref()
                            ),
                        );
                    } else if baseline.get_ref() == canary {
                        error(
                            at("rollout.baseline"),
                            baseline.span(),
                            "the baseline must differ from the canary".into(),
                        );
                    }
                }
                let steps = rollout.steps.get_ref();
                if steps.is_empty()
                    || steps.iter().any(|w| *w > 100)
                    || steps.windows(2).any(|p| p[0] >= p[1])
                {
                    error(
                        at("rollout.steps"),
                        rollout.steps.span(),
                        "steps must be rising canary weights from 0 to 100, e.g. [5, 25, 50, 100]"
                            .into(),
                    );
                }
                let rate = *rollout.max_error_rate.get_ref();
                if !(0.0..=1.0).contains(&rate) {
                    error(
                        at("rollout.max_error_rate"),
                        rollout.max_error_rate.span(),
                        format!("{rate} is a share: 0 to 1 (0.01 = 1 %)"),
                    );
                }
                if let Some(ratio) = &rollout.max_p99_ratio {
                    if ratio.get_ref().is_nan() || *ratio.get_ref() <= 0.0 {
                        error(
                            at("rollout.max_p99_ratio"),
                            ratio.span(),
                            "must be above 0 (1.5 = 50 % slower than the baseline)".into(),
                        );
                    }
                }
            }
            if let Some(outlier) = &route.outlier_detection {
                if *outlier.consecutive_failures.get_ref() == 0 {
                    error(
                        at("outlier_detection.consecutive_failures"),
                        outlier.consecutive_failures.span(),
                        "must be at least 1".into(),
                    );
                }
                if *outlier.max_ejection_percent.get_ref() > 100 {
                    error(
                        at("outlier_detection.max_ejection_percent"),
                        outlier.max_ejection_percent.span(),
                        "is a percentage: 0 to 100".into(),
                    );
                }
                if outlier.max_ejection.0 < outlier.base_ejection.0 {
                    error(
                        at("outlier_detection.max_ejection"),
                        0..0,
                        "must not be shorter than base_ejection".into(),
                    );
                }
            }
            validate_shadows(route, r, &mut error);
        }
        errors
    }

    fn validate_versions(
        &self,
        route: &RouteConfig,
        r: usize,
        error: &mut impl FnMut(String, Range<usize>, String),
    ) {
        let versions = route.versions.get_ref();
        let at = |v: usize, key: &str| format!("routes[{r}].versions[{v}].{key}");
        if versions.is_empty() {
            error(
                format!("routes[{r}].versions"),
                route.versions.span(),
                "no versions: add at least one [[routes.versions]]".into(),
            );
            return;
        }
        if versions.len() > MAX_VERSIONS {
            error(
                format!("routes[{r}].versions"),
                route.versions.span(),
                format!("at most {MAX_VERSIONS} versions per route"),
            );
        }
        let mut names: Vec<&str> = Vec::new();
        for (v, version) in versions.iter().enumerate() {
            tls::validate_version(version, &|key| at(v, key), error);
            let name = version.name.get_ref();
            if !valid_name(name) {
                error(at(v, "name"), version.name.span(), bad_name(name));
            }
            if names.contains(&name.as_str()) {
                error(
                    at(v, "name"),
                    version.name.span(),
                    format!("version '{name}' is defined twice in this route"),
                );
            }
            names.push(name);
            let weight = *version.weight.get_ref();
            if weight > MAX_WEIGHT {
                error(
                    at(v, "weight"),
                    version.weight.span(),
                    format!("{weight} is above the maximum weight {MAX_WEIGHT}"),
                );
            }
            if version.endpoints.get_ref().is_empty() {
                error(
                    at(v, "endpoints"),
                    version.endpoints.span(),
                    "empty: list at least one \"host:port\"".into(),
                );
            }
            for (e, endpoint) in version.endpoints.get_ref().iter().enumerate() {
                if let Err(reason) = parse_endpoint(endpoint.get_ref()) {
                    error(
                        format!("routes[{r}].versions[{v}].endpoints[{e}]"),
                        endpoint.span(),
                        format!(
                            "'{}' is not a valid host:port: {reason}",
                            endpoint.get_ref()
                        ),
                    );
                }
            }
        }
        if versions.iter().all(|v| *v.weight.get_ref() == 0) {
            error(
                format!("routes[{r}].versions"),
                route.versions.span(),
                "every weight is 0, so no request could be served: give at least one version a weight above 0".into(),
            );
        }
        if let Some(baseline) = &route.baseline {
            if !names.contains(&baseline.get_ref().as_str()) {
                error(
                    format!("routes[{r}].baseline"),
                    baseline.span(),
                    format!(
                        "'{}' is not one of this route's versions ({})",
                        baseline.get_ref(),
                        names.join(", ")
                    ),
                );
            }
        }
    }

    /// Each route's rollout policy, by route name.
    pub fn rollout_policies(
        &self,
    ) -> std::collections::HashMap<String, crate::rollout::RolloutPolicy> {
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
                    crate::rollout::RolloutPolicy {
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

    /// The routing table this config describes.
    pub fn table_spec(&self) -> TableSpec {
        let routes = self
            .routes
            .iter()
            .map(|route| {
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
                    path_prefix: route.path_prefix.get_ref().clone(),
                    versions,
                    baseline,
                    timeout: route.timeout.unwrap_or(self.timeouts.upstream_response).0,
                    shadows: route
                        .shadows
                        .get_ref()
                        .iter()
                        .map(ShadowConfig::spec)
                        .collect(),
                    health_check: route.health_check.as_ref().map(HealthCheckConfig::spec),
                    outlier: route.outlier_detection.as_ref().map(OutlierConfig::policy),
                    match_headers: routing::match_headers_spec(route),
                    sticky: route.sticky.as_ref().map(|s| s.get_ref().spec()),
                }
            })
            .collect();
        TableSpec {
            routes,
            settings: Settings {
                version_header: self.proxy.version_header,
                revision_header: self.proxy.revision_header,
                version_override: routing::version_override(&self.proxy),
                tunnel_idle: self.timeouts.tunnel_idle.0,
            },
        }
    }

    pub fn data_addr(&self) -> SocketAddr {
        self.listen
            .data
            .get_ref()
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.listen
            .admin
            .get_ref()
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9901)))
    }

    pub fn upstream_settings(&self) -> UpstreamSettings {
        UpstreamSettings {
            connect_timeout: self.timeouts.connect.0,
            pool_idle_timeout: self.timeouts.upstream_idle.0,
            pool_max_idle_per_host: self.proxy.max_idle_per_endpoint,
            files_dir: None,
        }
    }

    pub fn metrics_settings(&self) -> MetricsSettings {
        MetricsSettings {
            enabled: self.metrics.enabled,
            slice: self.metrics.window_slice.get_ref().0,
            slices: *self.metrics.window_slices.get_ref(),
            buckets: self.metrics.buckets.get_ref().clone(),
        }
    }

    pub fn listener_settings(&self) -> ListenerSettings {
        ListenerSettings {
            client_idle_timeout: self.timeouts.client_idle.0,
            drain_timeout: self.timeouts.drain.0,
            tls: None,
        }
    }
}

fn validate_shadows(
    route: &RouteConfig,
    r: usize,
    error: &mut impl FnMut(String, Range<usize>, String),
) {
    let shadows = route.shadows.get_ref();
    if shadows.len() > MAX_SHADOWS {
        error(
            format!("routes[{r}].shadows"),
            route.shadows.span(),
            format!("at most {MAX_SHADOWS} shadows per route"),
        );
    }
    let mut names: Vec<&str> = Vec::new();
    for (s, shadow) in shadows.iter().enumerate() {
        let name = shadow.name.get_ref();
        if names.contains(&name.as_str()) {
            error(
                format!("routes[{r}].shadows[{s}].name"),
                shadow.name.span(),
                format!("shadow '{name}' is defined twice in this route"),
            );
        }
        names.push(name);
        for problem in shadow::check(&shadow.spec()) {
            let index = problem.index.map(|i| format!("[{i}]")).unwrap_or_default();
            error(
                format!("routes[{r}].shadows[{s}].{}{index}", problem.key),
                shadow.span(problem.key, problem.index),
                problem.message,
            );
        }
    }
}

fn bad_name(name: &str) -> String {
    format!("'{name}' is not a valid name: use 1-64 letters, digits, '.', '_' or '-'")
}

/// 1-based (line, column) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GOOD: &str = r#"
[listen]
data = "127.0.0.1:8080"

[[routes]]
name = "web"

  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["127.0.0.1:9001"]

  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["127.0.0.1:9002"]
"#;

    /// The errors a config that must fail reports (shared by the config tests).
    pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
        Config::parse(text, "t.toml")
            .expect_err("should fail")
            .errors
    }

    #[test]
    fn good_config_builds_a_table() {
        let config = Config::parse(GOOD, "t.toml").expect("valid");
        let spec = config.table_spec();
        assert_eq!(spec.routes[0].baseline, "stable");
        assert_eq!(spec.routes[0].path_prefix, "/");
        assert_eq!(spec.routes[0].timeout, Duration::from_secs(30));
        switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let text = GOOD.replace("weight = 10", "weight = 10\n  wieght = 3");
        let errors = errors(&text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "routes[0].versions[1].wieght");
        assert!(
            errors[0].message.contains("wieght"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[0].position.map(|p| p.0), Some(16));
    }

    #[test]
    fn negative_weight_is_a_type_error() {
        let text = GOOD.replace("weight = 10", "weight = -1");
        let errors = errors(&text);
        assert_eq!(errors[0].path, "routes[0].versions[1].weight");
        assert_eq!(errors[0].position.map(|p| p.0), Some(15));
    }

    #[test]
    fn reports_every_semantic_error() {
        let text = GOOD
            .replace("weight = 90", "weight = 0")
            .replace("weight = 10", "weight = 0")
            .replace("\"127.0.0.1:9002\"", "\"not an address\"")
            .replace("name = \"canary\"", "name = \"stable\"");
        let errors = errors(&text);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"routes[0].versions[1].name"), "{paths:?}");
        assert!(
            paths.contains(&"routes[0].versions[1].endpoints[0]"),
            "{paths:?}"
        );
        assert!(paths.contains(&"routes[0].versions"), "{paths:?}");
        let endpoint = errors
            .iter()
            .find(|e| e.path.ends_with("endpoints[0]"))
            .expect("endpoint error");
        assert_eq!(endpoint.position, Some((16, 16)));
    }

    #[test]
    fn duplicate_routes_and_matches() {
        let text = format!(
            "{GOOD}\n{}",
            &GOOD[GOOD.find("[[routes]]").expect("routes")..]
        );
        let errors = errors(&text);
        assert!(errors.iter().any(|e| e.path == "routes[1].name"));
        assert!(errors
            .iter()
            .any(|e| e.path == "routes[1].path_prefix" && e.message.contains("already matches")));
    }

    #[test]
    fn bad_durations_and_empty_endpoints() {
        let text = format!("[timeouts]\nconnect = \"soon\"\n{GOOD}");
        assert_eq!(errors(&text)[0].path, "timeouts.connect");
        let text = GOOD.replace("[\"127.0.0.1:9002\"]", "[]");
        assert_eq!(errors(&text)[0].path, "routes[0].versions[1].endpoints");
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 0), (1, 1));
    }

    const SHADOWS: &str = r#"
  [[routes.shadows]]
  name = "next"
  endpoints = ["127.0.0.1:9003"]

  [[routes.shadows]]
  name = "audit"
  endpoints = ["127.0.0.1:9004", "127.0.0.1:9005"]
  percent = 12.5
  methods = ["GET", "POST"]
  max_in_flight = 8
  max_body_bytes = 1024
  timeout = "250ms"
  strip_headers = ["Authorization", "cookie"]
  compare = true
  compare_ignore_body = true
"#;

    #[test]
    fn shadows_get_defaults_and_every_key() {
        let config = Config::parse(&format!("{GOOD}{SHADOWS}"), "t.toml").expect("valid");
        let spec = config.table_spec();
        let shadows = &spec.routes[0].shadows;
        assert_eq!(
            shadows[0],
            ShadowSpec::new("next", vec!["127.0.0.1:9003".into()])
        );
        let audit = &shadows[1];
        assert_eq!(audit.percent, 12.5);
        assert_eq!(audit.methods, ["GET", "POST"]);
        assert_eq!((audit.max_in_flight, audit.max_body_bytes), (8, 1024));
        assert_eq!(audit.timeout, Duration::from_millis(250));
        assert_eq!(audit.strip_headers, ["Authorization", "cookie"]);
        assert!(audit.compare && audit.compare_ignore_body);
        let table = switchyard_proxy::RoutingTable::build(spec, 1).expect("table");
        assert_eq!(table.routes()[0].shadows.len(), 2);
    }

    #[test]
    fn shadow_errors_name_key_and_line() {
        let bad = |from: &str, to: &str| {
            let text = format!("{GOOD}{}", SHADOWS.replace(from, to));
            errors(&text)
        };
        let e = bad("percent = 12.5", "percent = 101");
        assert_eq!(e[0].path, "routes[0].shadows[1].percent");
        assert_eq!(e[0].position.map(|p| p.0), Some(25));
        let e = bad("\"GET\", \"POST\"", "\"GET\", \"post\"");
        assert_eq!(e[0].path, "routes[0].shadows[1].methods[1]");
        assert!(e[0].message.contains("'POST'"), "{}", e[0].message);
        assert_eq!(e[0].position, Some((26, 21)));
        let e = bad("\"127.0.0.1:9005\"", "\"nowhere\"");
        assert_eq!(e[0].path, "routes[0].shadows[1].endpoints[1]");
        let e = bad("compare = true\n", "");
        assert_eq!(e[0].path, "routes[0].shadows[1].compare_ignore_body");
        assert!(e[0].message.contains("compare = true"), "{}", e[0].message);
        let e = bad("max_in_flight = 8", "max_in_flight = 0");
        assert_eq!(e[0].path, "routes[0].shadows[1].max_in_flight");
        let e = bad("max_in_flight = 8", "max_in_flight = -8");
        assert_eq!(e[0].path, "routes[0].shadows[1].max_in_flight");
        let e = bad("timeout = \"250ms\"", "timeout = \"0s\"");
        assert_eq!(e[0].path, "routes[0].shadows[1].timeout");
        let e = bad(
            "strip_headers = [\"Authorization\"",
            "strip_headers = [\"bad header\"",
        );
        assert_eq!(e[0].path, "routes[0].shadows[1].strip_headers[0]");
        let e = bad("name = \"audit\"", "name = \"next\"");
        assert_eq!(e[0].path, "routes[0].shadows[1].name");
        assert!(e[0].message.contains("twice"), "{}", e[0].message);
        let e = bad("endpoints = [\"127.0.0.1:9003\"]", "endpoints = []");
        assert_eq!(e[0].path, "routes[0].shadows[0].endpoints");
        let e = bad("compare = true", "compare = true\n  sample = 3");
        assert_eq!(e[0].path, "routes[0].shadows[1].sample");
    }
}
