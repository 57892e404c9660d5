//! The admin API's JSON views of the live table: typed, so they serialize
//! straight to bytes (weight changes may come 100 times a second), with what
//! health makes of each version and endpoint.

use serde::Serialize;
use switchyard_proxy::{RouteSpec, RoutingTable};

/// The live table as JSON (config order), with what health makes of it:
/// each version's `down` and `effective_weight` (a down version's share goes
/// to the baseline), each endpoint's state.
pub fn routes_json(table: &RoutingTable) -> RoutesView<'_> {
    RoutesView {
        revision: table.revision(),
        routes: table
            .spec()
            .routes
            .iter()
            .map(|route| route_json(table, route))
            .collect(),
    }
}

/// The live table as `GET /api/v1/routes` shows it. Typed views serialize
/// straight to bytes: weight changes may come 100 times a second.
#[derive(Serialize)]
pub struct RoutesView<'a> {
    revision: u64,
    routes: Vec<RouteView<'a>>,
}

/// One route of the table, after a change to it.
pub fn changed_json<'a>(table: &'a RoutingTable, route: &str) -> ChangedView<'a> {
    ChangedView {
        revision: table.revision(),
        route: table
            .spec()
            .routes
            .iter()
            .find(|r| r.name == route)
            .map(|r| route_json(table, r)),
    }
}

#[derive(Serialize)]
pub struct ChangedView<'a> {
    revision: u64,
    route: Option<RouteView<'a>>,
}

#[derive(Serialize)]
struct RouteView<'a> {
    name: &'a str,
    host: &'a str,
    path_prefix: &'a str,
    baseline: &'a str,
    timeout_ms: u64,
    versions: Vec<VersionView<'a>>,
}

#[derive(Serialize)]
struct VersionView<'a> {
    name: &'a str,
    weight: u32,
    effective_weight: u32,
    down: bool,
    endpoints: &'a [String],
    endpoint_health: Option<Vec<EndpointView<'a>>>,
}

#[derive(Serialize)]
struct EndpointView<'a> {
    address: &'a str,
    available: bool,
    check_failed: bool,
    ejected: bool,
}

/// One route of [`routes_json`].
fn route_json<'a>(table: &'a RoutingTable, route: &'a RouteSpec) -> RouteView<'a> {
    let live = table.route(&route.name);
    let shares = live.map(crate::health::effective_route_weights);
    RouteView {
        name: &route.name,
        host: route.host.as_deref().unwrap_or("*"),
        path_prefix: &route.path_prefix,
        baseline: &route.baseline,
        timeout_ms: u64::try_from(route.timeout.as_millis()).unwrap_or(u64::MAX),
        versions: route
            .versions
            .iter()
            .map(|v| {
                let version = live.and_then(|r| r.version(&v.name));
                VersionView {
                    name: &v.name,
                    weight: v.weight,
                    effective_weight: shares
                        .as_ref()
                        .and_then(|w| w.get(&v.name))
                        .copied()
                        .unwrap_or(v.weight),
                    down: version.is_some_and(|v| v.is_down()),
                    endpoints: &v.endpoints,
                    endpoint_health: version.map(|v| {
                        v.endpoints
                            .iter()
                            .map(|e| EndpointView {
                                address: e.authority.as_str(),
                                available: e.health.is_available(),
                                check_failed: e.health.is_active_down(),
                                ejected: e.health.is_ejected(),
                            })
                            .collect()
                    }),
                }
            })
            .collect(),
    }
}
