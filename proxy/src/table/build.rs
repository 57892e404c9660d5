//! Building a table from a spec: every rule a spec must meet, checked in
//! one place for the admin API, reloads and `switchyard check` alike. The
//! build does not stop at the first problem: it reports each one with the
//! config key it concerns (see [`TableProblem`]), then fails.

use std::collections::HashSet;
use std::sync::Arc;

use super::error::Problems;
use super::features::{build_experiment, build_flags};
use super::{
    Endpoint, Route, RouteSpec, RoutingTable, TableError, TableProblem, TableSpec, Version,
    VersionSpec,
};
use crate::health::HealthRegistry;
use crate::names::{parse_endpoint, valid_name};
use crate::route::{match_order, HeaderMatch, HostMatch, Rank};
use crate::shadow::{self, Shadow, MAX_SHADOWS};
use crate::split::{RoundRobin, WeightedPicker, MAX_VERSIONS, MAX_WEIGHT};
use crate::sticky::Sticky;

impl RoutingTable {
    /// Validates `spec` and precomputes pickers.
    pub fn build(spec: TableSpec, revision: u64) -> Result<RoutingTable, TableError> {
        RoutingTable::build_after(spec, revision, None)
    }

    /// Like [`RoutingTable::build`], taking over from `previous` the state
    /// that must outlive a swap (shadow counters, by route and shadow name).
    /// On failure, the first problem found.
    pub fn build_after(
        spec: TableSpec,
        revision: u64,
        previous: Option<&RoutingTable>,
    ) -> Result<RoutingTable, TableError> {
        let mut problems = Problems::default();
        let table = assemble(spec, revision, previous, &mut problems);
        match problems.0.into_iter().next() {
            Some(problem) => Err(problem.error),
            None => Ok(table),
        }
    }

    /// Every problem that keeps `spec` from becoming a table (none: it
    /// builds), each with the config key path it concerns.
    pub fn check(spec: &TableSpec) -> Vec<TableProblem> {
        let mut problems = Problems::default();
        assemble(spec.clone(), 0, None, &mut problems);
        problems.0
    }
}

/// The table of every route that builds; `problems` gets the rest.
fn assemble(
    spec: TableSpec,
    revision: u64,
    previous: Option<&RoutingTable>,
    problems: &mut Problems,
) -> RoutingTable {
    let health = previous.map_or_else(Arc::default, |table| Arc::clone(&table.health));
    let mut names = HashSet::new();
    let mut routes = Vec::with_capacity(spec.routes.len());
    for (r, route) in spec.routes.iter().enumerate() {
        if !names.insert(route.name.as_str()) {
            problems.add(
                format!("routes[{r}].name"),
                TableError::DuplicateRoute(route.name.clone()),
            );
        }
        let before = previous.and_then(|t| t.route(&route.name));
        if let Some(built) = build_route(route, r, before, &health, problems) {
            routes.push((r, built));
        }
    }
    routes.sort_by(|(_, a), (_, b)| match_order(rank(a), rank(b)));
    // Not just neighbours: routes of equal rank and prefix length keep
    // config order, so two with the same match need not be adjacent.
    for (i, (r, second)) in routes.iter().enumerate() {
        let same = |(_, first): &&(usize, Route)| {
            first.host == second.host
                && first.path_prefix == second.path_prefix
                && first.path_exact == second.path_exact
                && first.method == second.method
                && first.headers == second.headers
        };
        if let Some((_, first)) = routes[..i].iter().find(same) {
            problems.add(
                format!("routes[{r}].path_prefix"),
                TableError::DuplicateMatch {
                    first: first.name.to_string(),
                    second: second.name.to_string(),
                    host: first.host.to_string(),
                    prefix: first.path_prefix.clone(),
                    headers: first.headers.to_string(),
                },
            );
        }
    }
    let flags = build_flags(&spec, previous, problems);
    let routes = routes
        .into_iter()
        .map(|(_, mut route)| {
            route.flags = flags
                .iter()
                .filter(|f| f.covers(&route.name))
                .cloned()
                .collect();
            route
        })
        .collect();
    RoutingTable {
        revision,
        spec,
        routes,
        health,
        flags,
    }
}

/// Where `route` stands in the match order.
fn rank(route: &Route) -> Rank<'_> {
    Rank {
        host: &route.host,
        path: &route.path_prefix,
        path_exact: route.path_exact,
        method: route.method.is_some(),
        headers: route.headers.len(),
    }
}

/// Route `r` of the spec, or `None` after adding its problems.
fn build_route(
    spec: &RouteSpec,
    r: usize,
    previous: Option<&Route>,
    health: &HealthRegistry,
    problems: &mut Problems,
) -> Option<Route> {
    let found_before = problems.len();
    let at = |key: &str| format!("routes[{r}].{key}");
    let route = || spec.name.clone();
    if !valid_name(&spec.name) {
        problems.add(
            at("name"),
            TableError::BadName {
                route: route(),
                name: spec.name.clone(),
            },
        );
    }
    let host = HostMatch::parse(spec.host.as_deref())
        .map_err(|reason| {
            problems.add(
                at("host"),
                TableError::BadHost {
                    route: route(),
                    reason,
                },
            )
        })
        .ok();
    if !spec.path_prefix.starts_with('/') {
        problems.add(
            at("path_prefix"),
            TableError::BadPrefix {
                route: route(),
                prefix: spec.path_prefix.clone(),
            },
        );
    }
    let versions = build_versions(spec, r, previous, health, problems);
    let headers = HeaderMatch::parse(
        spec.match_headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )
    .and_then(|headers| {
        headers.with_patterns(
            spec.match_headers_regex
                .iter()
                .map(|(name, pattern)| (name.as_str(), pattern.as_str())),
        )
    })
    .map_err(|reason| {
        problems.add(
            at("match_headers"),
            TableError::BadMatchHeaders {
                route: route(),
                reason,
            },
        )
    })
    .ok();
    let method = spec
        .match_method
        .as_deref()
        .map(|m| {
            http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                problems.add(
                    at("match_method"),
                    TableError::BadMatchMethod {
                        route: route(),
                        method: m.to_owned(),
                    },
                )
            })
        })
        .transpose()
        .ok();
    let sticky = spec.sticky.as_ref().and_then(|sticky| {
        let weights = spec.versions.iter().map(|v| (v.name.as_str(), v.weight));
        Sticky::build(&spec.name, sticky, weights)
            .map_err(|reason| {
                problems.add(
                    at("sticky"),
                    TableError::BadSticky {
                        route: route(),
                        reason,
                    },
                )
            })
            .ok()
    });
    check_health(spec, r, problems);
    let experiment = build_experiment(spec, r, previous, problems);
    let shadows = build_shadows(spec, r, previous, problems);
    if problems.len() > found_before {
        return None;
    }
    let (host, headers, versions, method) = (host?, headers?, versions?, method?);
    let weights: Vec<u32> = versions.iter().map(|v| v.weight).collect();
    let baseline = versions
        .iter()
        .position(|v| *v.name == *spec.baseline)
        .unwrap_or_default();
    Some(Route {
        name: spec.name.as_str().into(),
        host,
        path_prefix: spec.path_prefix.clone(),
        path_exact: spec.path_exact,
        method,
        baseline,
        outlier: spec.outlier.clone(),
        headers,
        sticky,
        picker: WeightedPicker::new(&weights),
        versions: versions.into_boxed_slice(),
        timeout: spec.timeout,
        max_request_body_bytes: spec.max_request_body_bytes,
        shadows,
        experiment,
        flags: Box::default(),
    })
}

/// The route's versions, or `None` after adding their problems (and those
/// of the route's weights and baseline).
fn build_versions(
    spec: &RouteSpec,
    r: usize,
    previous: Option<&Route>,
    health: &HealthRegistry,
    problems: &mut Problems,
) -> Option<Vec<Version>> {
    let found_before = problems.len();
    let at = |key: &str| format!("routes[{r}].{key}");
    if spec.versions.is_empty() {
        problems.add(at("versions"), TableError::NoVersions(spec.name.clone()));
        return None;
    }
    if spec.versions.len() > MAX_VERSIONS {
        problems.add(
            at("versions"),
            TableError::TooManyVersions(spec.name.clone()),
        );
    }
    let mut seen = HashSet::new();
    let mut versions = Vec::with_capacity(spec.versions.len());
    for (v, version) in spec.versions.iter().enumerate() {
        if !seen.insert(version.name.as_str()) {
            problems.add(
                at(&format!("versions[{v}].name")),
                TableError::DuplicateVersion {
                    route: spec.name.clone(),
                    version: version.name.clone(),
                },
            );
        }
        versions.extend(build_version(
            &spec.name,
            version,
            &at(&format!("versions[{v}]")),
            previous.and_then(|route| route.versions.iter().find(|p| *p.name == *version.name)),
            health,
            problems,
        ));
    }
    if spec.versions.iter().all(|v| v.weight == 0) {
        problems.add(at("versions"), TableError::AllZero(spec.name.clone()));
    }
    if !seen.contains(spec.baseline.as_str()) {
        problems.add(
            at("baseline"),
            TableError::UnknownBaseline {
                route: spec.name.clone(),
                baseline: spec.baseline.clone(),
                versions: spec
                    .versions
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        );
    }
    (problems.len() == found_before).then_some(versions)
}

/// One version (`at` is its key path), or `None` after adding its problems.
fn build_version(
    route: &str,
    spec: &VersionSpec,
    at: &str,
    previous: Option<&Version>,
    health: &HealthRegistry,
    problems: &mut Problems,
) -> Option<Version> {
    let found_before = problems.len();
    let version = || spec.name.clone();
    let header_value = http::HeaderValue::from_str(&spec.name)
        .ok()
        .filter(|_| valid_name(&spec.name));
    if header_value.is_none() {
        problems.add(
            format!("{at}.name"),
            TableError::BadName {
                route: route.into(),
                name: spec.name.clone(),
            },
        );
    }
    if spec.weight > MAX_WEIGHT {
        problems.add(
            format!("{at}.weight"),
            TableError::WeightTooLarge {
                route: route.into(),
                version: version(),
                weight: spec.weight,
            },
        );
    }
    if spec.endpoints.is_empty() {
        problems.add(
            format!("{at}.endpoints"),
            TableError::NoEndpoints {
                route: route.into(),
                version: version(),
            },
        );
    }
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    for (e, endpoint) in spec.endpoints.iter().enumerate() {
        match parse_endpoint(endpoint) {
            Ok(authority) => endpoints.push(Endpoint {
                health: health.get(authority.as_str()),
                authority,
            }),
            Err(reason) => problems.add(
                format!("{at}.endpoints[{e}]"),
                TableError::BadEndpoint {
                    route: route.into(),
                    version: version(),
                    endpoint: endpoint.clone(),
                    reason,
                },
            ),
        }
    }
    for (key, limit) in [
        ("max_requests", spec.breaker.max_requests),
        ("max_pending", spec.breaker.max_pending),
    ] {
        if limit == Some(0) {
            problems.add(
                format!("{at}.{key}"),
                TableError::ZeroBreakerLimit {
                    route: route.into(),
                    version: version(),
                    key,
                },
            );
        }
    }
    if problems.len() > found_before {
        return None;
    }
    Some(Version {
        name: spec.name.as_str().into(),
        header_value: header_value?,
        weight: spec.weight,
        endpoints: endpoints.into_boxed_slice(),
        transport: spec.transport.clone(),
        round_robin: RoundRobin::default(),
        breaker_limits: spec.breaker,
        breaker: previous.map_or_else(Arc::default, |p| Arc::clone(&p.breaker)),
    })
}

/// The route's active health check and outlier detection settings.
fn check_health(spec: &RouteSpec, r: usize, problems: &mut Problems) {
    let mut problem =
        |key: &str, error: TableError| problems.add(format!("routes[{r}].{key}"), error);
    if let Some(check) = &spec.health_check {
        let bad = |reason: String| TableError::BadHealthCheck {
            route: spec.name.clone(),
            reason,
        };
        if !check.path.starts_with('/') {
            problem(
                "health_check.path",
                bad(format!("path '{}' must start with '/'", check.path)),
            );
        }
        for (key, value) in [
            ("healthy_threshold", check.healthy_threshold),
            ("unhealthy_threshold", check.unhealthy_threshold),
        ] {
            if value == 0 {
                problem(
                    &format!("health_check.{key}"),
                    bad(format!("{key} must be at least 1")),
                );
            }
        }
    }
    if let Some(outlier) = &spec.outlier {
        let bad = |reason: &str| TableError::BadOutlier {
            route: spec.name.clone(),
            reason: reason.into(),
        };
        if outlier.consecutive_failures == 0 {
            problem(
                "outlier_detection.consecutive_failures",
                bad("consecutive_failures must be at least 1"),
            );
        }
        if outlier.max_ejection_percent > 100 {
            problem(
                "outlier_detection.max_ejection_percent",
                bad("max_ejection_percent is a percentage: 0 to 100"),
            );
        }
        if outlier.max_ejection < outlier.base_ejection {
            problem(
                "outlier_detection.max_ejection",
                bad("max_ejection must not be shorter than base_ejection"),
            );
        }
    }
}

/// The route's shadows (taking over `previous`'s state by name); problems
/// are keyed down to the shadow's key and list entry.
fn build_shadows(
    spec: &RouteSpec,
    r: usize,
    previous: Option<&Route>,
    problems: &mut Problems,
) -> Box<[Shadow]> {
    let error = |shadow: &str, reason: String| TableError::BadShadow {
        route: spec.name.clone(),
        shadow: shadow.into(),
        reason,
    };
    if spec.shadows.len() > MAX_SHADOWS {
        problems.add(
            format!("routes[{r}].shadows"),
            error("*", format!("at most {MAX_SHADOWS} shadows per route")),
        );
    }
    let mut names: Vec<&str> = Vec::with_capacity(spec.shadows.len());
    let mut shadows: Vec<Shadow> = Vec::with_capacity(spec.shadows.len());
    for (s, shadow) in spec.shadows.iter().enumerate() {
        let at = format!("routes[{r}].shadows[{s}]");
        if names.contains(&shadow.name.as_str()) {
            problems.add(
                format!("{at}.name"),
                error(&shadow.name, "defined twice in this route".into()),
            );
        }
        names.push(&shadow.name);
        let found = shadow::check(shadow);
        if found.is_empty() {
            let before = previous.and_then(|route| route.shadow(&shadow.name));
            match Shadow::build(&spec.name, shadow, spec.timeout, before) {
                Ok(built) => shadows.push(built),
                Err(reason) => problems.add(at, error(&shadow.name, reason)),
            }
            continue;
        }
        for problem in found {
            let index = problem.index.map(|i| format!("[{i}]")).unwrap_or_default();
            problems.add(
                format!("{at}.{}{index}", problem.key),
                error(&shadow.name, problem.to_string()),
            );
        }
    }
    shadows.into_boxed_slice()
}
