//! The admin API: its own listener (never the data port), bearer-token
//! authentication compared in constant time, and a plain `match` on method
//! and path that dispatches to the control plane. JSON in and out; errors are
//! `{"error": "...", "detail": ...}` with the matching status.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use switchyard_proxy::{RoutingTable, TableError};
use tokio::net::TcpListener;

use crate::config::AdminConfig;
use crate::history::Source;
use crate::plane::{ChangeError, ControlPlane, ReloadError, ReloadOutcome};

/// Largest admin request body accepted.
const MAX_BODY: usize = 1 << 20;

pub type AdminResponse = Response<Full<Bytes>>;

/// Who may call what.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    /// (name, token) pairs.
    tokens: Vec<(String, String)>,
    public_reads: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the admin token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the admin token file {0} is empty: put the token in it")]
    EmptyToken(String),
    #[error("the admin API would listen on {0}, which is not a loopback address, without a token: set [admin] token_file or SWITCHYARD_ADMIN_TOKEN, or listen on 127.0.0.1")]
    NoTokenOffLoopback(SocketAddr),
}

impl AdminAuth {
    /// Tokens from the config's files (relative paths are relative to
    /// `base`) and from `SWITCHYARD_ADMIN_TOKEN`.
    pub fn load(
        config: &AdminConfig,
        base: Option<&Path>,
        addr: SocketAddr,
        env_token: Option<String>,
    ) -> Result<AdminAuth, AuthError> {
        let mut tokens = Vec::new();
        let read = |file: &Path| -> Result<String, AuthError> {
            let path = match base {
                Some(base) if file.is_relative() => base.join(file),
                _ => file.to_path_buf(),
            };
            let text = std::fs::read_to_string(&path).map_err(|source| AuthError::TokenFile {
                path: path.display().to_string(),
                source,
            })?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(AuthError::EmptyToken(path.display().to_string()));
            }
            Ok(token)
        };
        if let Some(file) = &config.token_file {
            tokens.push(("admin".to_owned(), read(file)?));
        }
        for named in &config.tokens {
            tokens.push((named.name.clone(), read(&named.file)?));
        }
        if let Some(token) = env_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            tokens.push(("env".to_owned(), token));
        }
        let loopback = addr.ip().is_loopback();
        if tokens.is_empty() && !loopback {
            return Err(AuthError::NoTokenOffLoopback(addr));
        }
        if tokens.is_empty() {
            tracing::warn!(%addr, "the admin API has no token: anyone on this host can change the routing table; set [admin] token_file or SWITCHYARD_ADMIN_TOKEN");
        }
        Ok(AdminAuth {
            tokens,
            public_reads: config.public_reads.unwrap_or(loopback),
        })
    }

    /// The caller's name, if its bearer token is known. Every token is
    /// compared, in constant time, so timing tells nothing about which.
    fn caller(&self, headers: &http::HeaderMap) -> Option<String> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)?;
        let mut found = None;
        for (name, token) in &self.tokens {
            if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(name.clone());
            }
        }
        found
    }
}

/// An extra endpoint contributed by another module (metrics, dashboard,
/// shadows): returns `None` when the path is not its own.
pub type Extension =
    Box<dyn Fn(&Method, &str, Option<&str>) -> Option<AdminResponse> + Send + Sync>;

pub struct Admin {
    pub plane: Arc<ControlPlane>,
    pub auth: AdminAuth,
    pub extensions: Vec<Extension>,
}

/// Serves the admin API until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An admin failure: the status and the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    detail: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            detail: Value::Null,
        }
    }

    fn with_detail(mut self, detail: Value) -> ApiError {
        self.detail = detail;
        self
    }

    fn into_response(self) -> AdminResponse {
        json_response(
            self.status,
            &json!({"error": self.error, "detail": self.detail}),
        )
    }
}

impl From<ChangeError> for ApiError {
    fn from(error: ChangeError) -> ApiError {
        let status = match &error {
            ChangeError::UnknownRoute(_) => StatusCode::NOT_FOUND,
            ChangeError::RevisionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ChangeError::Conflict(_) => StatusCode::CONFLICT,
            ChangeError::Invalid(_) | ChangeError::Table(_) => StatusCode::BAD_REQUEST,
        };
        let detail = match &error {
            ChangeError::RevisionMismatch { current, .. } => json!({ "revision": current }),
            _ => Value::Null,
        };
        ApiError::new(status, error.to_string()).with_detail(detail)
    }
}

/// Compact JSON (half the cost of pretty printing; `switchyard ctl --json`
/// and `jq` indent it for people).
pub fn json_response(status: StatusCode, value: &impl Serialize) -> AdminResponse {
    let mut body = Vec::with_capacity(1024);
    if serde_json::to_writer(&mut body, value).is_err() {
        body = b"{}".to_vec();
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> AdminResponse {
        match self.route(req).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<AdminResponse, ApiError> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let caller = self.auth.caller(req.headers());
        // No token configured (only allowed on loopback): the host is trusted.
        let caller = caller.or_else(|| self.auth.tokens.is_empty().then(|| "local".to_owned()));
        let presented_token = req.headers().contains_key(header::AUTHORIZATION);
        let read_only = method == Method::GET || method == Method::HEAD;
        // Liveness and readiness probes never need a token.
        let open = matches!(path.as_str(), "/healthz" | "/readyz");
        if !open && caller.is_none() && (!read_only || !self.auth.public_reads || presented_token) {
            let why = if presented_token {
                "the bearer token is not valid"
            } else {
                "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'"
            };
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, why));
        }
        let who = caller.unwrap_or_else(|| "anonymous".to_owned());
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let if_match = req
            .headers()
            .get(header::IF_MATCH)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let flags = Flags::parse(query.as_deref());

        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["healthz"]) => Ok(text_response(StatusCode::OK, "text/plain", "ok\n")),
            (Method::GET, ["readyz"]) => Ok(if self.plane.is_ready() {
                text_response(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }),
            (Method::GET, ["api", "v1", "routes"]) => Ok(self.routes()),
            (Method::GET, ["api", "v1", "history"]) => Ok(json_response(
                StatusCode::OK,
                &json!({ "changes": self.plane.history() }),
            )),
            (Method::GET, ["api", "v1", "status"]) => {
                Ok(json_response(StatusCode::OK, &self.plane.status()))
            }
            (Method::POST, ["api", "v1", "reload"]) => self.reload(),
            (Method::PUT, ["api", "v1", "routes", route, "weights"]) => {
                let body: BTreeMap<String, i64> = read_json(req).await?;
                let expected = precondition(if_match.as_deref(), flags.force)?;
                self.set_weights(route, body, expected, flags.exact, &who)
            }
            (Method::POST, ["api", "v1", "routes", route, "promote"]) => {
                let body: VersionBody = read_json(req).await?;
                let expected = optional_precondition(if_match.as_deref())?;
                self.promote(route, &body.version, expected, &who)
            }
            (Method::POST, ["api", "v1", "routes", route, "rollback"]) => {
                let expected = optional_precondition(if_match.as_deref())?;
                self.rollback(route, expected, &who)
            }
            (Method::POST, ["api", "v1", "routes", route, "flip"]) => {
                let body: FlipBody = read_json(req).await?;
                let expected = optional_precondition(if_match.as_deref())?;
                if !flags.force {
                    self.guard_flip(route, &body.to)?;
                }
                self.flip(route, &body.from, &body.to, expected, &who)
            }
            _ => {
                if let Some(response) = self
                    .extensions
                    .iter()
                    .find_map(|extension| extension(&method, &path, query.as_deref()))
                {
                    return Ok(response);
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
        let mut response = json_response(StatusCode::OK, &routes_json(&table));
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", table.revision())) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }

    fn changed(&self, table: Arc<RoutingTable>, route: &str) -> AdminResponse {
        // Only the changed route: deploy tooling may change weights often.
        let body = ChangedView {
            revision: table.revision(),
            route: table
                .spec()
                .routes
                .iter()
                .find(|r| r.name == route)
                .map(|r| route_json(&table, r)),
        };
        let mut response = json_response(StatusCode::OK, &body);
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", table.revision())) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }

    fn set_weights(
        &self,
        route: &str,
        weights: BTreeMap<String, i64>,
        expected: Option<u64>,
        exact: bool,
        who: &str,
    ) -> Result<AdminResponse, ApiError> {
        if weights.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "no weights given: send e.g. {\"stable\": 75, \"canary\": 25}",
            ));
        }
        let table = self
            .plane
            .change_route(route, expected, Source::Api, who, None, |spec| {
                for (name, weight) in &weights {
                    if spec.versions.iter().all(|v| &v.name != name) {
                        return Err(ChangeError::Invalid(format!(
                            "route '{route}' has no version '{name}' (versions: {})",
                            version_names(spec)
                        )));
                    }
                    if *weight < 0 {
                        return Err(ChangeError::Invalid(format!(
                            "weight of '{name}' is negative ({weight}): weights are 0 or more"
                        )));
                    }
                }
                for version in &mut spec.versions {
                    match weights.get(&version.name) {
                        Some(weight) => {
                            version.weight = u32::try_from(*weight).map_err(|_| {
                                ChangeError::Table(TableError::WeightTooLarge {
                                    route: route.to_owned(),
                                    version: version.name.clone(),
                                    weight: u32::MAX,
                                })
                            })?
                        }
                        None if exact => version.weight = 0,
                        None => {}
                    }
                }
                Ok(())
            })?;
        Ok(self.changed(table, route))
    }

    fn promote(
        &self,
        route: &str,
        version: &str,
        expected: Option<u64>,
        who: &str,
    ) -> Result<AdminResponse, ApiError> {
        let table = self.plane.change_route(
            route,
            expected,
            Source::Api,
            who,
            Some("promote"),
            |spec| all_to(spec, version),
        )?;
        Ok(self.changed(table, route))
    }

    fn rollback(
        &self,
        route: &str,
        expected: Option<u64>,
        who: &str,
    ) -> Result<AdminResponse, ApiError> {
        let table = self.plane.change_route(
            route,
            expected,
            Source::Api,
            who,
            Some("rollback"),
            |spec| {
                let baseline = spec.baseline.clone();
                all_to(spec, &baseline)
            },
        )?;
        Ok(self.changed(table, route))
    }

    fn flip(
        &self,
        route: &str,
        from: &str,
        to: &str,
        expected: Option<u64>,
        who: &str,
    ) -> Result<AdminResponse, ApiError> {
        let table =
            self.plane
                .change_route(route, expected, Source::Api, who, Some("flip"), |spec| {
                    flip(spec, from, to)
                })?;
        Ok(self.changed(table, route))
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlipBody {
    from: String,
    to: String,
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not the JSON expected: {e}"),
        )
    })
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

fn version_names(spec: &switchyard_proxy::RouteSpec) -> String {
    spec.versions
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `version` takes all the traffic, the others none.
fn all_to(spec: &mut switchyard_proxy::RouteSpec, version: &str) -> Result<(), ChangeError> {
    if spec.versions.iter().all(|v| v.name != version) {
        return Err(ChangeError::Invalid(format!(
            "route '{}' has no version '{version}' (versions: {})",
            spec.name,
            version_names(spec)
        )));
    }
    for v in &mut spec.versions {
        v.weight = if v.name == version { 100 } else { 0 };
    }
    Ok(())
}

/// Blue-green: `to` takes over `from`'s share in one swap; other versions
/// keep theirs.
fn flip(spec: &mut switchyard_proxy::RouteSpec, from: &str, to: &str) -> Result<(), ChangeError> {
    let index = |name: &str| {
        spec.versions
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| {
                ChangeError::Invalid(format!(
                    "route '{}' has no version '{name}' (versions: {})",
                    spec.name,
                    version_names(spec)
                ))
            })
    };
    let (from_index, to_index) = (index(from)?, index(to)?);
    if from_index == to_index {
        return Err(ChangeError::Invalid(
            "from and to are the same version".into(),
        ));
    }
    let moved = spec.versions[from_index].weight;
    if moved == 0 {
        return Err(ChangeError::Conflict(format!(
            "version '{from}' carries no traffic: nothing to flip"
        )));
    }
    let to_weight = spec.versions[to_index].weight.saturating_add(moved);
    spec.versions[to_index].weight = to_weight;
    spec.versions[from_index].weight = 0;
    Ok(())
}

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

#[derive(Serialize)]
struct ChangedView<'a> {
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
fn route_json<'a>(
    table: &'a RoutingTable,
    route: &'a switchyard_proxy::RouteSpec,
) -> RouteView<'a> {
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

    #[test]
    fn tokens_compare_and_name_the_caller() {
        let auth = AdminAuth {
            tokens: vec![("deployer".into(), "s3cret".into())],
            public_reads: false,
        };
        let mut headers = http::HeaderMap::new();
        assert_eq!(auth.caller(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(auth.caller(&headers).as_deref(), Some("deployer"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert_eq!(auth.caller(&headers), None);
    }

    #[test]
    fn refuses_public_admin_without_token() {
        let addr: SocketAddr = "0.0.0.0:9901".parse().expect("addr");
        assert!(matches!(
            AdminAuth::load(&AdminConfig::default(), None, addr, None),
            Err(AuthError::NoTokenOffLoopback(_))
        ));
        let auth = AdminAuth::load(&AdminConfig::default(), None, addr, Some("t".into()))
            .expect("token from env");
        assert!(!auth.public_reads);
    }

    #[test]
    fn flip_moves_the_share() {
        let mut spec = switchyard_proxy::RouteSpec {
            name: "web".into(),
            host: None,
            path_prefix: "/".into(),
            versions: vec![
                switchyard_proxy::VersionSpec {
                    name: "stable".into(),
                    weight: 100,
                    endpoints: vec![],
                    ..Default::default()
                },
                switchyard_proxy::VersionSpec {
                    name: "green".into(),
                    weight: 0,
                    endpoints: vec![],
                    ..Default::default()
                },
            ],
            baseline: "stable".into(),
            timeout: std::time::Duration::from_secs(1),
            shadows: Vec::new(),
            ..Default::default()
        };
        flip(&mut spec, "stable", "green").expect("flip");
        assert_eq!((spec.versions[0].weight, spec.versions[1].weight), (0, 100));
        assert!(matches!(
            flip(&mut spec, "stable", "green"),
            Err(ChangeError::Conflict(_))
        ));
    }
}
