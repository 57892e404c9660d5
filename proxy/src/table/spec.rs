//! A table as plain data: what the control plane builds from the config
//! file and edits for weight changes, and what [`super::RoutingTable`] is
//! built from. Field order follows the config file's keys.

use std::fmt;
use std::time::Duration;

use http::header::HeaderName;

use crate::health::{HealthCheckSpec, OutlierPolicy};
use crate::shadow::ShadowSpec;
use crate::sticky::StickySpec;
use crate::upstream::Transport;

/// Plain data describing a table: what the control plane builds from config
/// and edits for weight changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSpec {
    pub routes: Vec<RouteSpec>,
    pub settings: Settings,
    /// Feature flags, each on its routes (see `crate::flags`).
    pub flags: Vec<crate::flags::FlagSpec>,
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
    /// The request header naming a unit's flags to the upstream (a
    /// client's own copy is always removed).
    pub flags_header: HeaderName,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            version_header: true,
            revision_header: false,
            version_override: None,
            tunnel_idle: Duration::from_secs(3600),
            flags_header: HeaderName::from_static(crate::flags::DEFAULT_HEADER),
        }
    }
}

/// The override header's settings (see `select` for how a request uses
/// them).
#[derive(Clone, PartialEq, Eq)]
pub struct VersionOverride {
    pub header: HeaderName,
    /// Required after `NAME:` in the header value, when set.
    pub secret: Option<String>,
}

impl fmt::Debug for VersionOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionOverride")
            .field("header", &self.header)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
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
    /// Headers whose value must match a regular expression, whole.
    pub match_headers_regex: Vec<(String, String)>,
    /// The path must be `path_prefix` exactly, not start with it.
    pub path_exact: bool,
    /// The request method must be this one.
    pub match_method: Option<String>,
    /// Keep each user on one version.
    pub sticky: Option<StickySpec>,
    /// Passive ejection of failing endpoints; `None`: off.
    pub outlier: Option<OutlierPolicy>,
    /// Active checks of every endpoint (run by the control plane).
    pub health_check: Option<HealthCheckSpec>,
    /// Request bodies larger than this are refused (413) or cut; `None`:
    /// unlimited.
    pub max_request_body_bytes: Option<u64>,
    /// An A/B experiment counted on this route (needs `sticky`).
    pub experiment: Option<crate::experiment::ExperimentSpec>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionSpec {
    pub name: String,
    pub weight: u32,
    /// `host:port` of each backend.
    pub endpoints: Vec<String>,
    /// TLS and HTTP/2 towards the endpoints (default: plain HTTP/1.1).
    pub transport: Transport,
    /// Circuit breaking (see [`crate::breaker`]).
    pub breaker: crate::breaker::BreakerLimits,
}
