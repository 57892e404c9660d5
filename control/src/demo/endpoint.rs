//! The demo-only admin endpoints that make a demo backend bad or good at
//! run time (served only by `switchyard demo`, behind the admin API's
//! authentication like every other endpoint):
//!
//! - `GET /api/v1/demo/backends`: every backend, its address and fault;
//! - `GET /api/v1/demo/backends/{name}`: one;
//! - `POST /api/v1/demo/backends/{name}?error_rate=0.2&latency=80ms`
//!   (either or both; the other keeps its value), or `?reset=true`.
//!
//! Every parameter is checked before anything changes: bad input is a 400
//! that names the problem, and the backend keeps its fault.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use super::backends::{Backend, Fault};
use crate::admin::{json_response, sync_extension, AdminResponse, Extension};

const PREFIX: &str = "/api/v1/demo/backends";

/// Why a change was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("error_rate '{0}' is not a number from 0 to 1 (e.g. 0.2 for 20 %)")]
    ErrorRate(String),
    #[error("latency '{0}' is not a duration from 0 to 60s (e.g. 80ms, 1s, 0)")]
    Latency(String),
    #[error("reset '{0}' is not true or false")]
    Reset(String),
    #[error("unknown parameter '{0}': use error_rate, latency or reset")]
    Unknown(String),
    #[error("nothing to change: give error_rate, latency or reset=true")]
    Nothing,
    #[error("reset=true cannot be combined with error_rate or latency")]
    ResetAndSet,
}

/// Longest latency a backend may be given: longer only makes the demo hang.
const MAX_LATENCY: Duration = Duration::from_secs(60);

/// The fault `current` becomes under `query`, or why the query is refused.
pub fn apply(current: Fault, query: Option<&str>) -> Result<Fault, FaultError> {
    let (mut error_rate, mut latency, mut reset) = (None, None, false);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "error_rate" => {
                let rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| FaultError::ErrorRate(value.to_owned()))?;
                error_rate = Some(rate);
            }
            "latency" => {
                let parsed = if value == "0" {
                    Some(Duration::ZERO)
                } else {
                    humantime::parse_duration(value).ok()
                };
                latency = Some(
                    parsed
                        .filter(|d| *d <= MAX_LATENCY)
                        .ok_or_else(|| FaultError::Latency(value.to_owned()))?,
                );
            }
            "reset" => {
                reset = match value {
                    "" | "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => return Err(FaultError::Reset(other.to_owned())),
                }
            }
            other => return Err(FaultError::Unknown(other.to_owned())),
        }
    }
    match (reset, error_rate, latency) {
        (true, None, None) => Ok(Fault::default()),
        (true, _, _) => Err(FaultError::ResetAndSet),
        (false, None, None) => Err(FaultError::Nothing),
        (false, rate, latency) => Ok(Fault {
            error_rate: rate.unwrap_or(current.error_rate),
            latency: latency.unwrap_or(current.latency),
        }),
    }
}

/// The endpoints over `backends`.
pub fn extension(backends: Vec<Backend>) -> Extension {
    sync_extension(move |method, path, query| {
        let rest = path.strip_prefix(PREFIX)?.trim_end_matches('/');
        let name = match rest.strip_prefix('/') {
            None if rest.is_empty() => None,
            Some(name) if !name.is_empty() && !name.contains('/') => Some(name),
            _ => return None,
        };
        Some(match (method, name) {
            (&Method::GET, None) => {
                let views: Vec<_> = backends.iter().map(Backend::view).collect();
                json_response(StatusCode::OK, &json!({ "backends": views }))
            }
            (&Method::GET, Some(name)) => match find(&backends, name) {
                Ok(backend) => json_response(StatusCode::OK, &backend.view()),
                Err(error) => error_response(StatusCode::NOT_FOUND, error),
            },
            (&Method::POST, Some(name)) => match find(&backends, name) {
                Ok(backend) => match apply(backend.fault(), query) {
                    Ok(fault) => {
                        backend.set_fault(fault);
                        tracing::info!(backend = backend.name, ?fault, "demo fault changed");
                        json_response(StatusCode::OK, &backend.view())
                    }
                    Err(error) => error_response(StatusCode::BAD_REQUEST, error.to_string()),
                },
                Err(error) => error_response(StatusCode::NOT_FOUND, error),
            },
            _ => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} {path}: use GET to read, POST …/{{name}}?error_rate=…&latency=… to change"),
            ),
        })
    })
}

/// The backend called `name`, or the 404's message naming the others.
fn find<'a>(backends: &'a [Backend], name: &str) -> Result<&'a Backend, String> {
    backends.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<&str> = backends.iter().map(|b| b.name).collect();
        format!("no demo backend '{name}' (backends: {})", names.join(", "))
    })
}

fn error_response(status: StatusCode, error: String) -> AdminResponse {
    json_response(status, &json!({ "error": error, "detail": null }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: Fault = Fault {
        error_rate: 0.2,
        latency: Duration::from_millis(80),
    };

    #[test]
    fn sets_either_or_both_and_resets() {
        let none = Fault::default();
        assert_eq!(apply(none, Some("error_rate=0.2&latency=80ms")), Ok(BAD));
        let rate_only = apply(BAD, Some("error_rate=0.5")).map(|f| (f.error_rate, f.latency));
        assert_eq!(rate_only, Ok((0.5, Duration::from_millis(80))));
        assert_eq!(
            apply(BAD, Some("latency=0")).map(|f| f.latency),
            Ok(Duration::ZERO)
        );
        assert_eq!(apply(BAD, Some("reset=true")), Ok(none));
        assert_eq!(apply(BAD, Some("reset")), Ok(none));
    }

    #[test]
    fn refuses_bad_input_by_name() {
        let none = Fault::default();
        for (query, error) in [
            ("error_rate=1.5", FaultError::ErrorRate("1.5".into())),
            ("error_rate=-0.1", FaultError::ErrorRate("-0.1".into())),
            ("error_rate=NaN", FaultError::ErrorRate("NaN".into())),
            ("error_rate=lots", FaultError::ErrorRate("lots".into())),
            ("latency=fast", FaultError::Latency("fast".into())),
            ("latency=2h", FaultError::Latency("2h".into())),
            ("reset=maybe", FaultError::Reset("maybe".into())),
            ("speed=1", FaultError::Unknown("speed".into())),
            ("", FaultError::Nothing),
            ("reset=true&latency=1s", FaultError::ResetAndSet),
        ] {
            assert_eq!(apply(none, Some(query)), Err(error), "{query}");
        }
        assert_eq!(apply(none, None), Err(FaultError::Nothing));
    }
}
