//! The admin API: its own listener (never the data port), and a plain
//! `match` on method and path that dispatches to the control plane's
//! operations. JSON in and out; errors are `{"error": "...", "detail": ...}`
//! with the matching status.
//!
//! A request meets [`server`] (accept loop) → [`auth`] (bearer token) →
//! this router (or an [`Extension`] of another module) → the control plane
//! → [`views`] (the JSON of the table) or the [`api`] error envelope.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body::Body;
use serde_json::{json, Value};
use switchyard_proxy::RoutingTable;

use crate::history::Source;
use crate::plane::{
    ChangeError, ControlPlane, FlagEdit, Origin, ReloadError, ReloadOutcome, TrafficOp,
};
use crate::readout::ConcludeError;

pub mod api;
pub mod auth;
pub mod server;
pub mod views;

pub use api::{
    json_response, sync_extension, text_response, AdminResponse, ApiError, Extension,
    PendingResponse,
};
use api::{read_body, read_json};
pub use auth::{AdminAuth, AuthError};
pub use server::serve;
use views::changed_json;
pub use views::{routes_json, RoutesView};

pub struct Admin {
    pub plane: Arc<ControlPlane>,
    pub auth: AdminAuth,
    pub extensions: Vec<Extension>,
}

impl From<ChangeError> for ApiError {
    fn from(error: ChangeError) -> ApiError {
        let status = match &error {
            ChangeError::UnknownRoute(_) | ChangeError::UnknownFlag(_) => StatusCode::NOT_FOUND,
            ChangeError::RevisionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ChangeError::Conflict(_) => StatusCode::CONFLICT,
            ChangeError::Invalid(_) | ChangeError::Table(_) => StatusCode::BAD_REQUEST,
            ChangeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ChangeError::Experiment(ConcludeError::UnknownVariant { .. }) => {
                StatusCode::BAD_REQUEST
            }
            ChangeError::Experiment(_) => StatusCode::NOT_FOUND,
        };
        let detail = match &error {
            ChangeError::RevisionMismatch { current, .. } => json!({ "revision": current }),
            _ => Value::Null,
        };
        ApiError::new(status, error.to_string()).with_detail(detail)
    }
}

impl Admin {
    /// Answers one admin request. Generic over the body so the same router,
    /// auth and body parsing serve the listener (hyper's `Incoming`) and
    /// callers holding a body in memory (the admin fuzz target).
    pub async fn handle<B>(&self, req: Request<B>) -> AdminResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.route(req).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn route<B>(&self, req: Request<B>) -> Result<AdminResponse, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let who = self.auth.authorize(&method, &path, req.headers())?;
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let if_match = req
            .headers()
            .get(header::IF_MATCH)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let flags = Flags::parse(query.as_deref());

        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["healthz"]) => Ok(text_response(StatusCode::OK, "text/plain", "ok\n")),
            (Method::GET, ["readyz"]) => Ok(self.readyz()),
            (Method::GET, ["api", "v1", "fleet"]) => self.fleet().await,
            (Method::GET, ["api", "v1", "routes"]) => Ok(self.routes()),
            (Method::GET, ["api", "v1", "history"]) => {
                let (changes, scope) = self.plane.shown_history().await;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "changes": changes, "scope": scope }),
                ))
            }
            (Method::GET, ["api", "v1", "status"]) => {
                Ok(json_response(StatusCode::OK, &self.plane.status()))
            }
            (Method::POST, ["api", "v1", "reload"]) => self.reload(),
            (Method::PUT, ["api", "v1", "routes", route, "weights"]) => {
                let body: BTreeMap<String, i64> = read_json(req).await?;
                let expected = precondition(if_match.as_deref(), flags.force)?;
                let op = TrafficOp::Weights {
                    weights: body,
                    exact: flags.exact,
                };
                self.traffic(route, op, expected, api(&who, None)).await
            }
            (Method::POST, ["api", "v1", "routes", route, "promote"]) => {
                let body: VersionBody = read_json(req).await?;
                let expected = optional_precondition(if_match.as_deref())?;
                let op = TrafficOp::Promote {
                    version: body.version,
                };
                self.traffic(route, op, expected, api(&who, Some("promote")))
                    .await
            }
            (Method::POST, ["api", "v1", "routes", route, "rollback"]) => {
                let expected = optional_precondition(if_match.as_deref())?;
                let origin = api(&who, Some("rollback"));
                self.traffic(route, TrafficOp::Rollback, expected, origin)
                    .await
            }
            (Method::PUT, ["api", "v1", "flags", name]) => {
                let edit: FlagEdit = read_json(req).await?;
                let expected = precondition(if_match.as_deref(), flags.force)?;
                let table = self
                    .plane
                    .set_flag(name, &edit, expected, api(&who, None))
                    .await?;
                let flag = table.spec().flags.iter().find(|f| f.name == *name);
                Ok(with_etag(
                    json_response(
                        StatusCode::OK,
                        &json!({
                            "revision": table.revision(),
                            "flag": name,
                            "state": flag.map(crate::history::describe_flag),
                        }),
                    ),
                    &table,
                ))
            }
            (Method::POST, ["ofrep", "v1", "evaluate", "flags", key]) => {
                let key = key.to_string();
                let body = read_body(req).await?;
                Ok(ofrep_response(crate::ofrep::single(
                    &self.plane.table().load(),
                    &key,
                    &body,
                )))
            }
            (Method::POST, ["ofrep", "v1", "evaluate", "flags"]) => {
                let if_none_match = req
                    .headers()
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = read_body(req).await?;
                Ok(ofrep_response(crate::ofrep::bulk(
                    &self.plane.table().load(),
                    &body,
                    if_none_match.as_deref(),
                )))
            }
            (Method::POST, ["api", "v1", "routes", route, "experiments", name, "conclude"]) => {
                let body: WinnerBody = read_json(req).await?;
                let expected = optional_precondition(if_match.as_deref())?;
                let table = self
                    .plane
                    .conclude(route, name, &body.winner, expected, api(&who, None))
                    .await?;
                Ok(self.changed(table, route))
            }
            (Method::POST, ["api", "v1", "routes", route, "flip"]) => {
                let body: FlipBody = read_json(req).await?;
                let expected = optional_precondition(if_match.as_deref())?;
                if !flags.force {
                    self.guard_flip(route, &body.to)?;
                }
                let op = TrafficOp::Flip {
                    from: body.from,
                    to: body.to,
                };
                self.traffic(route, op, expected, api(&who, Some("flip")))
                    .await
            }
            _ => {
                if let Some(pending) = self
                    .extensions
                    .iter()
                    .find_map(|extension| extension(&method, &path, query.as_deref()))
                {
                    return Ok(pending.await);
                }
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no admin endpoint {method} {path}"),
                ))
            }
        }
    }

    fn routes(&self) -> AdminResponse {
        let table = self.plane.table().load();
        with_etag(json_response(StatusCode::OK, &routes_json(&table)), &table)
    }

    /// Only the changed route: deploy tooling may change weights often.
    fn changed(&self, table: Arc<RoutingTable>, route: &str) -> AdminResponse {
        with_etag(
            json_response(StatusCode::OK, &changed_json(&table, route)),
            &table,
        )
    }

    async fn traffic(
        &self,
        route: &str,
        op: TrafficOp,
        expected: Option<u64>,
        origin: Origin<'_>,
    ) -> Result<AdminResponse, ApiError> {
        let table = self.plane.traffic(route, &op, expected, origin).await?;
        Ok(self.changed(table, route))
    }

    /// Ready or not, and in a fleet whether etcd is reachable: a replica
    /// that lost etcd still serves (on its last table), so it stays ready.
    fn readyz(&self) -> AdminResponse {
        let cluster = self
            .plane
            .store()
            .map(|store| format!("cluster: {}\n", store.status().state))
            .unwrap_or_default();
        if self.plane.is_ready() {
            text_response(StatusCode::OK, "text/plain", format!("ready\n{cluster}"))
        } else {
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready\n{cluster}"),
            )
        }
    }

    /// `GET /api/v1/fleet`: the replicas and the revision each serves.
    async fn fleet(&self) -> Result<AdminResponse, ApiError> {
        let Some(store) = self.plane.store().cloned() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "this process is not part of a fleet: add a [cluster] section to its config",
            ));
        };
        let members = store
            .members()
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let status = store.status();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "prefix": status.prefix,
                "revision": self.plane.shared().map(|(revision, _)| revision),
                "replicas": members,
            }),
        ))
    }

    /// Blue-green safety: on a route with active health checks, refuse to
    /// send traffic to a version whose endpoints are not all passing.
    fn guard_flip(&self, route: &str, to: &str) -> Result<(), ApiError> {
        let table = self.plane.table().load();
        let checked = table
            .spec()
            .routes
            .iter()
            .any(|r| r.name == route && r.health_check.is_some());
        let Some(version) = table.route(route).and_then(|r| r.version(to)) else {
            return Ok(()); // unknown names are reported by the change itself
        };
        let failing: Vec<&str> = version
            .endpoints
            .iter()
            .filter(|e| !e.health.is_available())
            .map(|e| e.authority.as_str())
            .collect();
        if checked && !failing.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("refusing to flip to '{to}': its endpoints {} fail health checks (add ?force=true to flip anyway)", failing.join(", ")),
            ));
        }
        Ok(())
    }

    fn reload(&self) -> Result<AdminResponse, ApiError> {
        match self.plane.reload(Source::Api) {
            Ok(ReloadOutcome::Unchanged) => Ok(json_response(
                StatusCode::OK,
                &json!({"reloaded": false, "reason": "the file is unchanged", "revision": self.plane.table().load().revision()}),
            )),
            Ok(ReloadOutcome::Applied {
                revision, changes, ..
            }) => Ok(json_response(
                StatusCode::OK,
                &json!({"reloaded": true, "revision": revision, "changes": changes}),
            )),
            Err(ReloadError::NoFile) => Err(ApiError::new(
                StatusCode::CONFLICT,
                ReloadError::NoFile.to_string(),
            )),
            Err(ReloadError::Invalid(error)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the config file is invalid; the current table is kept",
            )
            .with_detail(Value::String(error))),
        }
    }
}

/// The table's revision as the `ETag` (what `If-Match` sends back).
/// An OFREP answer as the admin listener sends it.
fn ofrep_response(answer: crate::ofrep::Answer) -> AdminResponse {
    let mut response = match &answer.body {
        Some(body) => json_response(answer.status, body),
        None => text_response(answer.status, "application/json", ""),
    };
    if let Some(etag) = answer.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn with_etag(mut response: AdminResponse, table: &RoutingTable) -> AdminResponse {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", table.revision())) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A change made through the API by `who`.
fn api<'a>(who: &'a str, reason: Option<&'a str>) -> Origin<'a> {
    Origin {
        source: Source::Api,
        who,
        reason,
    }
}

/// Query flags of the mutating endpoints.
#[derive(Default)]
struct Flags {
    force: bool,
    exact: bool,
}

impl Flags {
    fn parse(query: Option<&str>) -> Flags {
        let mut flags = Flags::default();
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let on = matches!(value, "true" | "1" | "yes" | "");
            match key {
                "force" => flags.force = on,
                "exact" => flags.exact = on,
                _ => {}
            }
        }
        flags
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: String,
}

/// `POST …/experiments/{name}/conclude`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WinnerBody {
    winner: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlipBody {
    from: String,
    to: String,
}

/// `If-Match` for a weight change: required unless `force`.
fn precondition(if_match: Option<&str>, force: bool) -> Result<Option<u64>, ApiError> {
    match if_match {
        Some(value) => parse_if_match(value),
        None if force => Ok(None),
        None => Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "send If-Match: \"<revision>\" (from GET /api/v1/routes' ETag), or add ?force=true to overwrite blindly",
        )),
    }
}

fn optional_precondition(if_match: Option<&str>) -> Result<Option<u64>, ApiError> {
    if_match.map_or(Ok(None), parse_if_match)
}

fn parse_if_match(value: &str) -> Result<Option<u64>, ApiError> {
    let value = value.trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("If-Match '{value}' is not a revision like \"42\""),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        assert_eq!(parse_if_match("\"7\"").ok(), Some(Some(7)));
        assert_eq!(parse_if_match("W/\"7\"").ok(), Some(Some(7)));
        assert_eq!(parse_if_match("*").ok(), Some(None));
        assert!(parse_if_match("\"x\"").is_err());
        assert!(precondition(None, false).is_err());
        assert_eq!(precondition(None, true).ok(), Some(None));
    }
}
