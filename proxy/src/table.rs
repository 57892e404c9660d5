//! The routing table: routes → versions → endpoints with their precomputed
//! pickers, and the one `ArcSwap` through which the data plane reads it.
//!
//! A table is immutable once built. Every change (admin API, file reload,
//! health decision) builds a whole new table from a [`TableSpec`] and stores
//! it; a request loads the table once and keeps its `Arc` until it ends, so
//! in-flight requests finish on the table they started with.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::forward::Transport;
use crate::health::{EndpointHealth, HealthCheckSpec, HealthRegistry, OutlierPolicy};
use crate::route::{match_order, HeaderMatch, HostMatch};
use crate::select::VersionOverride;
use crate::shadow::{Shadow, ShadowSpec, MAX_SHADOWS};
use crate::split::{RoundRobin, WeightedPicker, MAX_VERSIONS, MAX_WEIGHT};
use crate::sticky::{Sticky, StickySpec};

/// Plain data describing a table: what the control plane builds from config
/// and edits for weight changes.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub routes: Vec<RouteSpec>,
    pub settings: Settings,
}

/// Behaviour switches that travel with the table (so they reload with it).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Add `x-switchyard-version: NAME` to every proxied response.
    pub version_header: bool,
    /// Add `x-switchyard-revision: N` (the table revision a request used).
    pub revision_header: bool,
    /// The request header that forces a version; `None`: disabled.
    pub version_override: Option<VersionOverride>,
    /// Upgraded (WebSocket) connections idle this long either way close.
    pub tunnel_idle: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            version_header: true,
            revision_header: false,
            version_override: None,
            tunnel_idle: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteSpec {
    pub name: String,
    /// `None`, `*`, `*.example.com` or an exact host.
    pub host: Option<String>,
    pub path_prefix: String,
    pub versions: Vec<VersionSpec>,
    /// The version `rollback` returns to.
    pub baseline: String,
    /// Time allowed for the upstream's response headers.
    pub timeout: Duration,
    /// Targets that get a copy of this route's requests.
    pub shadows: Vec<ShadowSpec>,
    /// Header values a request must carry to match (name, value).
    pub match_headers: Vec<(String, String)>,
    /// Keep each user on one version.
    pub sticky: Option<StickySpec>,
    /// Passive ejection of failing endpoints; `None`: off.
    pub outlier: Option<OutlierPolicy>,
    /// Active checks of every endpoint (run by the control plane).
    pub health_check: Option<HealthCheckSpec>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionSpec {
    pub name: String,
    pub weight: u32,
    /// `host:port` of each backend.
    pub endpoints: Vec<String>,
    /// TLS and HTTP/2 towards the endpoints (default: plain HTTP/1.1).
    pub transport: Transport,
}

/// Why a spec cannot become a table. Each names the route and version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("route '{0}' is defined twice: route names must be unique")]
    DuplicateRoute(String),
    #[error("routes '{first}' and '{second}' both match host '{host}' and path prefix '{prefix}'{}: give one a different host, prefix or match_headers", headers_note(headers))]
    DuplicateMatch {
        first: String,
        second: String,
        host: String,
        prefix: String,
        headers: String,
    },
    #[error("route '{route}', match_headers: {reason}")]
    BadMatchHeaders { route: String, reason: String },
    #[error("route '{route}', sticky: {reason}")]
    BadSticky { route: String, reason: String },
    #[error("route '{route}': {reason}")]
    BadHost { route: String, reason: String },
    #[error("route '{0}': path_prefix must start with '/'")]
    BadPrefix(String),
    #[error("route '{0}' has no versions: add at least one [[routes.versions]]")]
    NoVersions(String),
    #[error("route '{0}' has more than {MAX_VERSIONS} versions")]
    TooManyVersions(String),
    #[error("route '{route}': version '{version}' is defined twice")]
    DuplicateVersion { route: String, version: String },
    #[error("route '{0}': every version has weight 0, so no request could be served: give at least one version a weight above 0")]
    AllZero(String),
    #[error(
        "route '{route}', version '{version}': weight {weight} is above the maximum {MAX_WEIGHT}"
    )]
    WeightTooLarge {
        route: String,
        version: String,
        weight: u32,
    },
    #[error(
        "route '{route}', version '{version}': endpoints is empty: list at least one host:port"
    )]
    NoEndpoints { route: String, version: String },
    #[error(
        "route '{route}', version '{version}': endpoint '{endpoint}' is not host:port ({reason})"
    )]
    BadEndpoint {
        route: String,
        version: String,
        endpoint: String,
        reason: String,
    },
    #[error("route '{route}': name '{name}' may only use letters, digits, '.', '_' and '-'")]
    BadName { route: String, name: String },
    #[error("route '{route}': baseline '{baseline}' is not one of its versions")]
    UnknownBaseline { route: String, baseline: String },
    #[error("route '{route}', shadow '{shadow}': {reason}")]
    BadShadow {
        route: String,
        shadow: String,
        reason: String,
    },
}

fn headers_note(headers: &str) -> String {
    if headers.is_empty() {
        String::new()
    } else {
        format!(" with headers {headers}")
    }
}

/// One live table. Cheap to share; never mutated.
#[derive(Debug)]
pub struct RoutingTable {
    revision: u64,
    spec: TableSpec,
    /// Routes in match order (most specific first).
    routes: Vec<Route>,
    health: Arc<HealthRegistry>,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub host: HostMatch,
    pub path_prefix: String,
    /// Required header values; empty for most routes.
    pub headers: HeaderMatch,
    pub versions: Box<[Version]>,
    pub timeout: Duration,
    /// Empty for most routes: then the mirror stage costs nothing.
    pub shadows: Box<[Shadow]>,
    picker: WeightedPicker,
    sticky: Option<Sticky>,
    /// Index of the baseline version.
    baseline: usize,
    /// Passive ejection; `None`: failures are not counted.
    pub outlier: Option<OutlierPolicy>,
}

#[derive(Debug)]
pub struct Version {
    pub name: Arc<str>,
    /// `name` ready for the `x-switchyard-version` response header.
    pub header_value: http::HeaderValue,
    pub weight: u32,
    pub endpoints: Box<[Endpoint]>,
    pub transport: Transport,
    round_robin: RoundRobin,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// What the upstream URI is built from.
    pub authority: Authority,
    /// Shared with every table that has this address.
    pub health: Arc<EndpointHealth>,
}

impl RoutingTable {
    /// Validates `spec` and precomputes pickers.
    pub fn build(spec: TableSpec, revision: u64) -> Result<RoutingTable, TableError> {
        RoutingTable::build_after(spec, revision, None)
    }

    /// Like [`RoutingTable::build`], taking over from `previous` the state
    /// that must outlive a swap (shadow counters, by route and shadow name).
    pub fn build_after(
        spec: TableSpec,
        revision: u64,
        previous: Option<&RoutingTable>,
    ) -> Result<RoutingTable, TableError> {
        let health = previous.map_or_else(Arc::default, |table| Arc::clone(&table.health));
        let mut names = HashSet::new();
        let mut routes = Vec::with_capacity(spec.routes.len());
        for route in &spec.routes {
            if !names.insert(route.name.as_str()) {
                return Err(TableError::DuplicateRoute(route.name.clone()));
            }
            routes.push(Route::build(
                route,
                previous.and_then(|t| t.route(&route.name)),
                &health,
            )?);
        }
        routes.sort_by(|a, b| {
            match_order(
                (&a.host, &a.path_prefix, a.headers.len()),
                (&b.host, &b.path_prefix, b.headers.len()),
            )
        });
        // Not just neighbours: routes of equal rank and prefix length keep
        // config order, so two with the same match need not be adjacent.
        for (i, second) in routes.iter().enumerate() {
            let same = |first: &&Route| {
                first.host == second.host
                    && first.path_prefix == second.path_prefix
                    && first.headers == second.headers
            };
            if let Some(first) = routes[..i].iter().find(same) {
                return Err(TableError::DuplicateMatch {
                    first: first.name.to_string(),
                    second: second.name.to_string(),
                    host: first.host.to_string(),
                    prefix: first.path_prefix.clone(),
                    headers: first.headers.to_string(),
                });
            }
        }
        Ok(RoutingTable {
            revision,
            spec,
            routes,
            health,
        })
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Endpoint health, shared by this table and the ones built after it.
    pub fn health(&self) -> &HealthRegistry {
        &self.health
    }

    /// The spec this table was built from (in config order).
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    pub fn settings(&self) -> &Settings {
        &self.spec.settings
    }

    /// Routes in match order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route (most specific) matching `host` and `path` for a
    /// request without headers (routes with `match_headers` never match).
    #[inline]
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.find_request(host, path, &http::HeaderMap::new())
    }

    /// The first route (most specific) matching a request.
    #[inline]
    pub fn find_request(
        &self,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<&Route> {
        self.routes.iter().find(|route| {
            path.starts_with(route.path_prefix.as_str())
                && route.host.matches(host)
                && route.headers.matches(headers)
        })
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|route| &*route.name == name)
    }
}

impl Route {
    fn build(
        spec: &RouteSpec,
        previous: Option<&Route>,
        health: &HealthRegistry,
    ) -> Result<Route, TableError> {
        if !valid_name(&spec.name) {
            return Err(TableError::BadName {
                route: spec.name.clone(),
                name: spec.name.clone(),
            });
        }
        let host =
            HostMatch::parse(spec.host.as_deref()).map_err(|reason| TableError::BadHost {
                route: spec.name.clone(),
                reason,
            })?;
        if !spec.path_prefix.starts_with('/') {
            return Err(TableError::BadPrefix(spec.name.clone()));
        }
        if spec.versions.is_empty() {
            return Err(TableError::NoVersions(spec.name.clone()));
        }
        if spec.versions.len() > MAX_VERSIONS {
            return Err(TableError::TooManyVersions(spec.name.clone()));
        }
        let mut seen = HashSet::new();
        let mut versions = Vec::with_capacity(spec.versions.len());
        for version in &spec.versions {
            if !seen.insert(version.name.as_str()) {
                return Err(TableError::DuplicateVersion {
                    route: spec.name.clone(),
                    version: version.name.clone(),
                });
            }
            versions.push(Version::build(&spec.name, version, health)?);
        }
        if !seen.contains(spec.baseline.as_str()) {
            return Err(TableError::UnknownBaseline {
                route: spec.name.clone(),
                baseline: spec.baseline.clone(),
            });
        }
        let weights: Vec<u32> = versions.iter().map(|v| v.weight).collect();
        if weights.iter().all(|w| *w == 0) {
            return Err(TableError::AllZero(spec.name.clone()));
        }
        let headers = HeaderMatch::parse(
            spec.match_headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .map_err(|reason| TableError::BadMatchHeaders {
            route: spec.name.clone(),
            reason,
        })?;
        let sticky = match &spec.sticky {
            Some(sticky) => Some(
                Sticky::build(
                    &spec.name,
                    sticky,
                    versions.iter().map(|v| (&*v.name, v.weight)),
                )
                .map_err(|reason| TableError::BadSticky {
                    route: spec.name.clone(),
                    reason,
                })?,
            ),
            None => None,
        };
        let baseline = versions
            .iter()
            .position(|v| *v.name == *spec.baseline)
            .unwrap_or_default();
        Ok(Route {
            name: spec.name.as_str().into(),
            host,
            path_prefix: spec.path_prefix.clone(),
            baseline,
            outlier: spec.outlier.clone(),
            headers,
            sticky,
            picker: WeightedPicker::new(&weights),
            versions: versions.into_boxed_slice(),
            timeout: spec.timeout,
            shadows: build_shadows(spec, previous)?,
        })
    }

    /// `version`, unless every one of its endpoints is known to be down:
    /// then its share goes to the baseline, or failing that to any version
    /// with weight and a live endpoint. When nothing is up, `version` still
    /// answers (as Envoy's panic routing does): better a try than a refusal.
    #[inline]
    pub fn available<'a>(&'a self, version: &'a Version) -> &'a Version {
        if !version.is_down() {
            return version;
        }
        let baseline = &self.versions[self.baseline];
        if !baseline.is_down() {
            return baseline;
        }
        self.versions
            .iter()
            .find(|v| v.weight > 0 && !v.is_down())
            .unwrap_or(version)
    }

    /// The version `rollback` returns to.
    pub fn baseline(&self) -> &Version {
        &self.versions[self.baseline]
    }

    pub fn shadow(&self, name: &str) -> Option<&Shadow> {
        self.shadows.iter().find(|s| &*s.name == name)
    }

    /// The version the next request goes to, by weight.
    #[inline]
    pub fn pick(&self) -> Option<&Version> {
        self.picker.pick().map(|index| &self.versions[index])
    }

    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| &*v.name == name)
    }

    /// The sticky assignment, when the route has one.
    #[inline]
    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref()
    }
}

impl Version {
    fn build(
        route: &str,
        spec: &VersionSpec,
        health: &HealthRegistry,
    ) -> Result<Version, TableError> {
        if !valid_name(&spec.name) {
            return Err(TableError::BadName {
                route: route.into(),
                name: spec.name.clone(),
            });
        }
        let header_value =
            http::HeaderValue::from_str(&spec.name).map_err(|_| TableError::BadName {
                route: route.into(),
                name: spec.name.clone(),
            })?;
        if spec.weight > MAX_WEIGHT {
            return Err(TableError::WeightTooLarge {
                route: route.into(),
                version: spec.name.clone(),
                weight: spec.weight,
            });
        }
        if spec.endpoints.is_empty() {
            return Err(TableError::NoEndpoints {
                route: route.into(),
                version: spec.name.clone(),
            });
        }
        let endpoints = spec
            .endpoints
            .iter()
            .map(|endpoint| {
                parse_endpoint(endpoint)
                    .map(|authority| Endpoint {
                        health: health.get(authority.as_str()),
                        authority,
                    })
                    .map_err(|reason| TableError::BadEndpoint {
                        route: route.into(),
                        version: spec.name.clone(),
                        endpoint: endpoint.clone(),
                        reason,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Version {
            name: spec.name.as_str().into(),
            header_value,
            weight: spec.weight,
            endpoints: endpoints.into_boxed_slice(),
            transport: spec.transport.clone(),
            round_robin: RoundRobin::default(),
        })
    }

    /// The next available endpoint, round-robin; when none is available,
    /// the next one regardless (see [`Route::available`]).
    #[inline]
    pub fn next_endpoint(&self) -> &Endpoint {
        let len = self.endpoints.len();
        let first = self.round_robin.next(len);
        let endpoint = &self.endpoints[first];
        if len == 1 || endpoint.health.is_available() {
            return endpoint;
        }
        (1..len)
            .map(|offset| &self.endpoints[(first + offset) % len])
            .find(|e| e.health.is_available())
            .unwrap_or(endpoint)
    }

    /// An available endpoint other than `not`, for a retry. It does not
    /// advance the round-robin: a retry must not shift the rotation.
    pub fn other_endpoint(&self, not: &Endpoint) -> Option<&Endpoint> {
        let len = self.endpoints.len();
        let first = self
            .endpoints
            .iter()
            .position(|e| e.authority == not.authority)
            .unwrap_or(0)
            + 1;
        (0..len)
            .map(|offset| &self.endpoints[(first + offset) % len])
            .find(|e| e.authority != not.authority && e.health.is_available())
    }

    /// Every endpoint is known to be down (active checks or ejection).
    #[inline]
    pub fn is_down(&self) -> bool {
        self.endpoints.iter().all(|e| !e.health.is_available())
    }

    /// Endpoints currently ejected by outlier detection.
    pub fn ejected(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.health.is_ejected())
            .count()
    }
}

fn build_shadows(spec: &RouteSpec, previous: Option<&Route>) -> Result<Box<[Shadow]>, TableError> {
    let error = |shadow: &str, reason: String| TableError::BadShadow {
        route: spec.name.clone(),
        shadow: shadow.into(),
        reason,
    };
    if spec.shadows.len() > MAX_SHADOWS {
        return Err(error(
            "*",
            format!("at most {MAX_SHADOWS} shadows per route"),
        ));
    }
    let mut shadows: Vec<Shadow> = Vec::with_capacity(spec.shadows.len());
    for shadow in &spec.shadows {
        if shadows.iter().any(|s| *s.name == shadow.name) {
            return Err(error(&shadow.name, "defined twice in this route".into()));
        }
        let before = previous.and_then(|route| route.shadow(&shadow.name));
        shadows.push(
            Shadow::build(&spec.name, shadow, spec.timeout, before)
                .map_err(|reason| error(&shadow.name, reason))?,
        );
    }
    Ok(shadows.into_boxed_slice())
}

/// Route and version names appear in URLs, headers and metric labels.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Checks `host:port` (IPv4, `[IPv6]` or a DNS name, with an explicit port).
pub fn parse_endpoint(endpoint: &str) -> Result<Authority, String> {
    let authority: Authority = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if authority.as_str().contains('@') {
        return Err("user info is not allowed".into());
    }
    if authority.port_u16().is_none() {
        return Err("a port is required, e.g. 127.0.0.1:9001".into());
    }
    if authority.port_u16() == Some(0) {
        return Err("port 0 cannot be connected to".into());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let is_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    let is_name = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !is_ip && !is_name {
        return Err(format!("'{host}' is neither an IP address nor a host name"));
    }
    Ok(authority)
}

/// The data plane's handle on the live table: lock-free reads, serialised
/// writes that always build a complete new table.
#[derive(Clone)]
pub struct TableHandle {
    shared: Arc<Shared>,
}

struct Shared {
    table: ArcSwap<RoutingTable>,
    /// Serialises writers so read-modify-write (compare-and-set on the
    /// revision) cannot lose an update; readers never touch it.
    writer: Mutex<()>,
}

impl TableHandle {
    /// A handle holding `spec` as revision 1.
    pub fn new(spec: TableSpec) -> Result<TableHandle, TableError> {
        let table = RoutingTable::build(spec, 1)?;
        Ok(TableHandle {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(table),
                writer: Mutex::new(()),
            }),
        })
    }

    /// The current table; keep the `Arc` for the whole request.
    #[inline]
    pub fn load(&self) -> Arc<RoutingTable> {
        self.shared.table.load_full()
    }

    /// Builds a new table from what `change` returns (given the current
    /// table) and stores it with the next revision. If `change` or the build
    /// fails, nothing is stored.
    pub fn update<E>(
        &self,
        change: impl FnOnce(&RoutingTable) -> Result<TableSpec, E>,
    ) -> Result<Arc<RoutingTable>, E>
    where
        E: From<TableError>,
    {
        let _writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.shared.table.load_full();
        let spec = change(&current)?;
        let next = Arc::new(RoutingTable::build_after(
            spec,
            current.revision + 1,
            Some(&current),
        )?);
        self.shared.table.store(Arc::clone(&next));
        Ok(next)
    }

    /// Replaces the table with `spec` (the next revision).
    pub fn store(&self, spec: TableSpec) -> Result<Arc<RoutingTable>, TableError> {
        self.update(|_| Ok::<_, TableError>(spec))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn version(name: &str, weight: u32, endpoints: &[&str]) -> VersionSpec {
        VersionSpec {
            name: name.into(),
            weight,
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            ..VersionSpec::default()
        }
    }

    pub fn route(
        name: &str,
        host: Option<&str>,
        prefix: &str,
        versions: Vec<VersionSpec>,
    ) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            baseline: versions[0].name.clone(),
            versions,
            timeout: Duration::from_secs(1),
            ..RouteSpec::default()
        }
    }

    fn spec(routes: Vec<RouteSpec>) -> TableSpec {
        TableSpec {
            routes,
            settings: Settings::default(),
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let v = || vec![version("stable", 1, &["127.0.0.1:1"])];
        let table = RoutingTable::build(
            spec(vec![
                route("root", None, "/", v()),
                route("api", None, "/api", v()),
                route("host", Some("a.example.com"), "/", v()),
                route("wild", Some("*.example.com"), "/", v()),
            ]),
            1,
        )
        .expect("valid");
        let found = |host: &str, path: &str| table.find(host, path).map(|r| r.name.to_string());
        assert_eq!(found("x.org", "/api/v1").as_deref(), Some("api"));
        assert_eq!(found("x.org", "/other").as_deref(), Some("root"));
        assert_eq!(found("a.example.com", "/api").as_deref(), Some("host"));
        assert_eq!(found("b.example.com", "/x").as_deref(), Some("wild"));
    }

    #[test]
    fn rejects_bad_specs() {
        let ok = || vec![version("stable", 1, &["127.0.0.1:1"])];
        let build = |routes| RoutingTable::build(spec(routes), 1).map(|_| ());
        assert!(matches!(
            build(vec![
                route("a", None, "/", ok()),
                route("a", None, "/x", ok())
            ]),
            Err(TableError::DuplicateRoute(_))
        ));
        assert!(matches!(
            build(vec![
                route("a", None, "/", ok()),
                route("b", Some("*"), "/", ok())
            ]),
            Err(TableError::DuplicateMatch { .. })
        ));
        assert!(matches!(
            build(vec![route(
                "a",
                None,
                "/",
                vec![version("s", 0, &["127.0.0.1:1"])]
            )]),
            Err(TableError::AllZero(_))
        ));
        assert!(matches!(
            build(vec![route("a", None, "/", vec![version("s", 1, &[])])]),
            Err(TableError::NoEndpoints { .. })
        ));
        assert!(matches!(
            build(vec![route(
                "a",
                None,
                "/",
                vec![
                    version("s", 1, &["127.0.0.1:1"]),
                    version("s", 1, &["127.0.0.1:2"])
                ]
            )]),
            Err(TableError::DuplicateVersion { .. })
        ));
        for bad in [
            "127.0.0.1",
            "nope nope:80",
            "127.0.0.1:0",
            "u@h:80",
            "1.2.3:80",
            "h:99999",
        ] {
            assert!(
                matches!(
                    build(vec![route("a", None, "/", vec![version("s", 1, &[bad])])]),
                    Err(TableError::BadEndpoint { .. })
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn duplicate_match_found_when_not_adjacent() {
        let v = || vec![version("stable", 1, &["127.0.0.1:1"])];
        let result = RoutingTable::build(
            spec(vec![
                route("a", Some("a.example.com"), "/x", v()),
                route("b", Some("b.example.com"), "/x", v()),
                route("c", Some("a.example.com"), "/x", v()),
            ]),
            1,
        );
        assert!(
            matches!(&result, Err(TableError::DuplicateMatch { first, second, .. }) if first == "a" && second == "c"),
            "{:?}",
            result.map(|_| ())
        );
    }

    #[test]
    fn accepts_endpoint_forms() {
        for good in [
            "127.0.0.1:80",
            "[::1]:8080",
            "backend.internal:9000",
            "localhost:1",
        ] {
            assert!(parse_endpoint(good).is_ok(), "{good} rejected");
        }
    }

    #[test]
    fn shadow_state_survives_swaps_by_route_and_name() {
        let shadow = |name: &str| ShadowSpec::new(name, vec!["127.0.0.1:9".into()]);
        let mut web = route(
            "web",
            None,
            "/",
            vec![version("stable", 1, &["127.0.0.1:1"])],
        );
        web.shadows = vec![shadow("next"), shadow("audit")];
        let handle = TableHandle::new(spec(vec![web])).expect("valid");
        let first = handle.load();
        let state = |t: &RoutingTable, name: &str| {
            t.route("web")
                .and_then(|r| r.shadow(name))
                .map(|s| s.state() as *const _)
        };
        let next = handle
            .update(|t| {
                let mut spec = t.spec().clone();
                spec.routes[0].versions[0].weight = 2;
                spec.routes[0].shadows.remove(1);
                Ok::<_, TableError>(spec)
            })
            .expect("valid");
        assert_eq!(state(&next, "next"), state(&first, "next"));
        assert_eq!(state(&next, "audit"), None);
        let back = handle.store(first.spec().clone()).expect("valid");
        assert_eq!(state(&back, "next"), state(&first, "next"));
        assert_ne!(state(&back, "audit"), state(&first, "audit"));

        let mut twice = first.spec().clone();
        twice.routes[0].shadows = vec![shadow("next"), shadow("next")];
        assert!(matches!(
            RoutingTable::build(twice, 1),
            Err(TableError::BadShadow { .. })
        ));
        let mut bad = first.spec().clone();
        bad.routes[0].shadows[0].percent = 200.0;
        let error = RoutingTable::build(bad, 1)
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("shadow 'next': percent"), "{error}");
    }

    #[test]
    fn update_bumps_revision_and_keeps_table_on_error() {
        let handle = TableHandle::new(spec(vec![route(
            "a",
            None,
            "/",
            vec![version("stable", 1, &["127.0.0.1:1"])],
        )]))
        .expect("valid");
        let before = handle.load();
        let failed = handle.update(|current| {
            let mut next = current.spec().clone();
            next.routes[0].versions[0].weight = 0;
            Ok::<_, TableError>(next)
        });
        assert!(failed.is_err());
        assert_eq!(handle.load().revision(), before.revision());
        let next = handle.store(before.spec().clone()).expect("valid");
        assert_eq!(next.revision(), before.revision() + 1);
    }

    #[test]
    fn header_routes_win_over_the_same_host_and_prefix() {
        let v = || vec![version("stable", 1, &["127.0.0.1:1"])];
        let mut beta = route("beta", None, "/", v());
        beta.match_headers = vec![("x-beta".into(), "1".into())];
        let mut beta_qa = route("beta-qa", None, "/", v());
        beta_qa.match_headers = vec![
            ("x-beta".into(), "1".into()),
            ("x-team".into(), "qa".into()),
        ];
        let table = RoutingTable::build(
            spec(vec![route("web", None, "/", v()), beta, beta_qa.clone()]),
            1,
        )
        .expect("valid");
        let found = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, http::HeaderValue::from_static(value));
            }
            table
                .find_request("x.org", "/", &headers)
                .map(|r| r.name.to_string())
        };
        assert_eq!(found(&[]).as_deref(), Some("web"));
        assert_eq!(found(&[("x-beta", "1")]).as_deref(), Some("beta"));
        assert_eq!(found(&[("x-beta", "2")]).as_deref(), Some("web"));
        assert_eq!(
            found(&[("x-beta", "1"), ("x-team", "qa")]).as_deref(),
            Some("beta-qa")
        );
        assert_eq!(table.find("x.org", "/").map(|r| &*r.name), Some("web"));

        let mut again = beta_qa;
        again.name = "again".into();
        again.match_headers.reverse();
        let result = RoutingTable::build(
            spec(vec![route("web", None, "/", v()), again, {
                let mut r = route("beta-qa", None, "/", v());
                r.match_headers = vec![
                    ("x-team".into(), "qa".into()),
                    ("x-beta".into(), "1".into()),
                ];
                r
            }]),
            1,
        );
        assert!(
            matches!(&result, Err(TableError::DuplicateMatch { headers, .. }) if headers == "x-beta: 1, x-team: qa"),
            "{:?}",
            result.map(|_| ())
        );
    }
}
