//! The routing table: routes → versions → endpoints with their precomputed
//! pickers, and the one `ArcSwap` through which the data plane reads it.
//!
//! A table is immutable once built. Every change (admin API, file reload,
//! health decision) builds a whole new table from a [`TableSpec`] and stores
//! it; a request loads the table once and keeps its `Arc` until it ends, so
//! in-flight requests finish on the table they started with.
//!
//! [`spec`] (the plain data) → [`build`] (every rule, problems keyed by
//! config path, [`error`]) → this module's [`RoutingTable`] (what a request
//! reads) → [`handle`] (the swap).

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

use crate::breaker::{BreakerLimits, BreakerState};
use crate::health::{EndpointHealth, HealthRegistry, OutlierPolicy};
use crate::route::{HeaderMatch, HostMatch};
use crate::shadow::Shadow;
use crate::split::{RoundRobin, WeightedPicker};
use crate::sticky::Sticky;
use crate::upstream::Transport;

pub mod build;
pub mod error;
mod features;
pub mod handle;
pub mod spec;
#[cfg(test)]
pub(crate) mod tests;

pub use error::{TableError, TableProblem};
pub use handle::TableHandle;
pub use spec::{RouteSpec, Settings, TableSpec, VersionOverride, VersionSpec};

/// One live table. Cheap to share; never mutated.
#[derive(Debug)]
pub struct RoutingTable {
    revision: u64,
    spec: TableSpec,
    /// Routes in match order (most specific first).
    routes: Vec<Route>,
    health: Arc<HealthRegistry>,
    /// In spec order.
    flags: Box<[Arc<crate::flags::Flag>]>,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub host: HostMatch,
    pub path_prefix: String,
    /// The path must be `path_prefix` exactly.
    pub path_exact: bool,
    /// The method a request must have; `None`: any.
    pub method: Option<http::Method>,
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
    /// Request bodies above this are refused or cut (413).
    pub max_request_body_bytes: Option<u64>,
    /// Counted per variant when the request has a unit (sticky key).
    pub experiment: Option<crate::experiment::Experiment>,
    /// The flags that apply to this route, in spec order.
    pub flags: Box<[Arc<crate::flags::Flag>]>,
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
    pub breaker_limits: BreakerLimits,
    /// Shared with the tables built after this one (see [`crate::breaker`]).
    pub breaker: Arc<BreakerState>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// What the upstream URI is built from.
    pub authority: Authority,
    /// Shared with every table that has this address.
    pub health: Arc<EndpointHealth>,
}

impl RoutingTable {
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

    /// Every flag, in spec order.
    pub fn flags(&self) -> &[Arc<crate::flags::Flag>] {
        &self.flags
    }

    pub fn flag(&self, name: &str) -> Option<&Arc<crate::flags::Flag>> {
        self.flags.iter().find(|f| *f.name == *name)
    }

    /// Routes in match order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route (most specific) matching `host` and `path` for a GET
    /// without headers (routes with `match_headers` never match).
    #[inline]
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.find_request(host, &http::Method::GET, path, &http::HeaderMap::new())
    }

    /// The first route (most specific) matching a request.
    #[inline]
    pub fn find_request(
        &self,
        host: &str,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<&Route> {
        self.routes.iter().find(|route| {
            (if route.path_exact {
                path == route.path_prefix
            } else {
                path.starts_with(route.path_prefix.as_str())
            }) && route.host.matches(host)
                && route.method.as_ref().is_none_or(|m| m == method)
                && route.headers.matches(headers)
        })
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|route| &*route.name == name)
    }
}

impl Route {
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
