//! Why a spec cannot become a table: each [`TableError`] names its route
//! (and version or shadow) for the admin API, and each [`TableProblem`]
//! adds the config key path it concerns, e.g. `routes[0].versions[1].weight`,
//! which the config layer turns into a line and column.

use crate::split::MAX_VERSIONS;
use crate::split::MAX_WEIGHT;

/// Why a spec cannot become a table. Each names the route and version.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("route '{0}' is defined twice: route names must be unique")]
    DuplicateRoute(String),
    #[error("route '{second}': route '{first}' already matches host '{host}' and path prefix '{prefix}'{}: give one a different host, prefix or match_headers", headers_note(headers))]
    DuplicateMatch {
        first: String,
        second: String,
        host: String,
        prefix: String,
        headers: String,
    },
    #[error("route '{route}', match_headers: {reason}")]
    BadMatchHeaders { route: String, reason: String },
    #[error("route '{route}': match_method '{method}' is not an HTTP method")]
    BadMatchMethod { route: String, method: String },
    #[error("route '{route}', sticky: {reason}")]
    BadSticky { route: String, reason: String },
    #[error("flag '{flag}': {reason}")]
    BadFlag { flag: String, reason: String },
    #[error("route '{route}', experiment: {reason}")]
    BadExperiment { route: String, reason: String },
    #[error("route '{route}': {reason}")]
    BadHost { route: String, reason: String },
    #[error("route '{route}': path_prefix '{prefix}' must start with '/'")]
    BadPrefix { route: String, prefix: String },
    #[error("route '{0}' has no versions: add at least one [[routes.versions]]")]
    NoVersions(String),
    #[error("route '{0}' has more than {MAX_VERSIONS} versions")]
    TooManyVersions(String),
    #[error("route '{route}': version '{version}' is defined twice in this route")]
    DuplicateVersion { route: String, version: String },
    #[error("route '{0}': every weight is 0, so no request could be served: give at least one version a weight above 0")]
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
        "route '{route}', version '{version}': endpoints is empty: list at least one \"host:port\""
    )]
    NoEndpoints { route: String, version: String },
    #[error("route '{route}', version '{version}': {key} is 0, which refuses every request: set at least 1, or remove it for no limit")]
    ZeroBreakerLimit {
        route: String,
        version: String,
        key: &'static str,
    },
    #[error(
        "route '{route}', version '{version}': endpoint '{endpoint}' is not a valid host:port: {reason}"
    )]
    BadEndpoint {
        route: String,
        version: String,
        endpoint: String,
        reason: String,
    },
    #[error(
        "route '{route}': '{name}' is not a valid name: use 1-64 letters, digits, '.', '_' or '-'"
    )]
    BadName { route: String, name: String },
    #[error("route '{route}': baseline '{baseline}' is not one of its versions ({versions})")]
    UnknownBaseline {
        route: String,
        baseline: String,
        versions: String,
    },
    #[error("route '{route}', shadow '{shadow}': {reason}")]
    BadShadow {
        route: String,
        shadow: String,
        reason: String,
    },
    #[error("route '{route}', health_check: {reason}")]
    BadHealthCheck { route: String, reason: String },
    #[error("route '{route}', outlier_detection: {reason}")]
    BadOutlier { route: String, reason: String },
}

fn headers_note(headers: &str) -> String {
    if headers.is_empty() {
        String::new()
    } else {
        format!(" with headers {headers}")
    }
}

/// One problem of a spec and the config key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableProblem {
    /// Dotted key path in config terms, e.g. `routes[0].versions[1].weight`
    /// (indices in the spec's order, which is the file's).
    pub path: String,
    pub error: TableError,
}

/// Every problem a build finds, in the order it finds them.
#[derive(Debug, Default)]
pub(super) struct Problems(pub(super) Vec<TableProblem>);

impl Problems {
    pub(super) fn add(&mut self, path: String, error: TableError) {
        self.0.push(TableProblem { path, error });
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}
