//! A shadow's settings as config and the admin API give them, and their
//! checks: what the table build refuses and the config file reports with
//! line numbers.

use std::time::Duration;

use http::header::HeaderName;
use http::Method;

use crate::names::{parse_endpoint, valid_name};

/// Only methods without side effects are copied unless a shadow says more.
pub const DEFAULT_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shadows per route.
pub const MAX_SHADOWS: usize = 16;

/// Plain data describing one shadow of a route (see the `[[routes.shadows]]`
/// config keys).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSpec {
    pub name: String,
    /// `host:port` of each shadow backend, used round-robin.
    pub endpoints: Vec<String>,
    /// Share of eligible requests copied, 0–100.
    pub percent: f64,
    /// Methods copied; others are counted as dropped (`method`).
    pub methods: Vec<String>,
    /// Copies in progress at once; beyond it copies are dropped (`overload`).
    pub max_in_flight: usize,
    /// Largest request body copied; larger ones are not (`body_too_large`).
    pub max_body_bytes: usize,
    /// The whole shadow exchange: connect, request, response to its end.
    pub timeout: Duration,
    /// Headers removed from the copy only (credentials, cookies).
    pub strip_headers: Vec<String>,
    /// Compare the shadow's status and body with the primary's.
    pub compare: bool,
    /// With `compare`, compare statuses only.
    pub compare_ignore_body: bool,
}

impl ShadowSpec {
    /// A shadow with every default: all requests with a safe method.
    pub fn new(name: impl Into<String>, endpoints: Vec<String>) -> ShadowSpec {
        ShadowSpec {
            name: name.into(),
            endpoints,
            percent: 100.0,
            methods: DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            strip_headers: Vec::new(),
            compare: false,
            compare_ignore_body: false,
        }
    }
}

/// One problem in a shadow's settings: the key (and list index) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The config key, e.g. `endpoints`.
    pub key: &'static str,
    /// The entry of a list key, e.g. `methods[1]`.
    pub index: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}]: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem in `spec`: what the table build refuses and what the
/// config file reports with line numbers.
pub fn check(spec: &ShadowSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let mut problem = |key, index, message: String| {
        problems.push(SpecProblem {
            key,
            index,
            message,
        })
    };
    if !valid_name(&spec.name) {
        problem(
            "name",
            None,
            format!(
                "'{}' is not a valid name: use 1-64 letters, digits, '.', '_' or '-'",
                spec.name
            ),
        );
    }
    if spec.endpoints.is_empty() {
        problem(
            "endpoints",
            None,
            "empty: list at least one \"host:port\"".into(),
        );
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        if let Err(reason) = parse_endpoint(endpoint) {
            problem(
                "endpoints",
                Some(i),
                format!("'{endpoint}' is not a valid host:port: {reason}"),
            );
        }
    }
    if !(spec.percent.is_finite() && (0.0..=100.0).contains(&spec.percent)) {
        problem(
            "percent",
            None,
            format!("{} is not a percentage: use 0 to 100", spec.percent),
        );
    }
    if spec.methods.is_empty() {
        problem(
            "methods",
            None,
            "empty, so nothing could be copied: list at least one method".into(),
        );
    }
    for (i, method) in spec.methods.iter().enumerate() {
        if let Err(message) = parse_method(method) {
            problem("methods", Some(i), message);
        }
    }
    if spec.max_in_flight == 0 {
        problem(
            "max_in_flight",
            None,
            "0 would drop every copy: use percent = 0 to pause a shadow".into(),
        );
    }
    if spec.timeout.is_zero() {
        problem("timeout", None, "must be above 0".into());
    }
    for (i, header) in spec.strip_headers.iter().enumerate() {
        if HeaderName::from_bytes(header.as_bytes()).is_err() {
            problem(
                "strip_headers",
                Some(i),
                format!("'{header}' is not a header name"),
            );
        }
    }
    if spec.compare_ignore_body && !spec.compare {
        problem(
            "compare_ignore_body",
            None,
            "only applies with compare = true: set compare = true or remove it".into(),
        );
    }
    problems
}

pub(super) fn parse_method(method: &str) -> Result<Method, String> {
    let parsed = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("'{method}' is not an HTTP method"))?;
    let upper = method.to_ascii_uppercase();
    if upper != method && KNOWN_METHODS.contains(&upper.as_str()) {
        // Methods are case-sensitive: "get" would never match a GET.
        return Err(format!("'{method}' is not an HTTP method: write '{upper}'"));
    }
    Ok(parsed)
}

const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT",
];
