//! `switchyard ctl`: the admin API from a shell. Human-readable by default,
//! the API's JSON with `--json`. `set-weights` reads the revision first and
//! sends it as If-Match, so two tools never overwrite each other blindly.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::BoxError;

mod render;

use render::{
    render_change, render_demo, render_fleet, render_history, render_object, render_rollout,
    render_routes, weights_line,
};

/// One ctl command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// The live routing table.
    Routes,
    /// Set weights: `set-weights web stable=75 canary=25`.
    SetWeights {
        route: String,
        #[arg(required = true, value_name = "VERSION=WEIGHT")]
        weights: Vec<String>,
        /// Versions not named go to 0.
        #[arg(long)]
        exact: bool,
    },
    /// Send all of a route's traffic to one version.
    Promote { route: String, version: String },
    /// Send all of a route's traffic back to its baseline version.
    Rollback { route: String },
    /// Blue-green: move FROM's share to TO in one swap.
    Flip {
        route: String,
        from: String,
        to: String,
    },
    /// Recent changes (who, what, when).
    History,
    /// Process status, revision, last reload.
    Status,
    /// Reload the config file now.
    Reload,
    /// Shadow targets: copies, drops, compare results, last mismatches.
    Shadows,
    /// Per-version requests, error rate and latency percentiles.
    Stats {
        /// How far back: `60s`, `5m`, … (capped by what is kept).
        #[arg(long, default_value = "60s")]
        window: String,
        /// Every replica's figures added up (`[cluster]`), over the window
        /// each one publishes.
        #[arg(long, conflicts_with = "window")]
        fleet: bool,
    },
    /// A/B experiments: units, conversions per goal with 95 % intervals
    /// and p-values, and which variant wins in words.
    Experiment {
        /// Only this route's experiment.
        route: Option<String>,
        /// End the route's experiment: VARIANT takes all of the traffic
        /// (recorded in the history with the figures).
        #[arg(long, value_name = "VARIANT", requires = "route")]
        conclude: Option<String>,
    },
    /// Feature flags: state, requests and errors per state, guard.
    Flags,
    /// Change a flag: `flag new-checkout 25` (percent), `--off` (the kill
    /// switch), `--on`.
    Flag {
        name: String,
        /// The share of units that get it, 0 to 100.
        percent: Option<f64>,
        #[arg(long, conflicts_with = "off")]
        on: bool,
        #[arg(long)]
        off: bool,
    },
    /// The fleet's replicas and the revision each serves (`[cluster]`).
    Fleet,
    /// Push a config file's route weights (to the fleet, in cluster mode),
    /// one guarded change per route.
    Apply { file: std::path::PathBuf },
    /// A route's progressive rollout: show it, or start|pause|resume|abort.
    Rollout {
        route: String,
        #[arg(value_parser = ["status", "start", "pause", "resume", "abort"], default_value = "status")]
        action: String,
    },
    /// `switchyard demo` only: show its backends, make one bad
    /// (`demo canary --error-rate 0.2 --latency 80ms`) or good (`--reset`).
    Demo {
        /// stable, canary or green; all of them when left out.
        backend: Option<String>,
        /// Share of requests answered 503, from 0 to 1.
        #[arg(long, value_name = "0..1", requires = "backend")]
        error_rate: Option<String>,
        /// Latency added to every answer: 80ms, 1s, 0.
        #[arg(long, value_name = "DURATION", requires = "backend")]
        latency: Option<String>,
        /// No errors, no added latency.
        #[arg(long, requires = "backend", conflicts_with_all = ["error_rate", "latency"])]
        reset: bool,
    },
}

pub struct Ctl {
    base: String,
    token: Option<String>,
    json: bool,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A reply: status, ETag and JSON body.
struct Reply {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

impl Ctl {
    pub fn new(admin: &str, token: Option<String>, json: bool) -> Ctl {
        let base = if admin.contains("://") {
            admin.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", admin.trim_end_matches('/'))
        };
        Ctl {
            base,
            token,
            json,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> Result<Reply, BoxError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(revision) = if_match {
            request = request.header(header::IF_MATCH, revision);
        }
        let body = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&value)?)
            }
            None => Bytes::new(),
        };
        let response = self
            .client
            .request(request.body(Full::new(body))?)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the admin API at {}: {}",
                    self.base,
                    switchyard_proxy::error::error_chain(&e)
                )
            })?;
        let status = response.status();
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Reply { status, etag, body })
    }

    /// The live routes as Gateway API HTTPRoutes (`switchyard export`).
    pub async fn export_gateway_api(&self, route: Option<&str>) -> Result<String, BoxError> {
        let mut path = "/api/v1/export?format=gateway-api".to_owned();
        if let Some(route) = route {
            path.push_str("&route=");
            path.push_str(&query_value(route));
        }
        let reply = ok(self.call(Method::GET, &path, None, None).await?)?;
        Ok(match reply.body {
            Value::String(text) => text,
            other => other.to_string(),
        })
    }

    /// Runs a command; the text to print, or an error to report.
    pub async fn run(&self, command: CtlCommand) -> Result<String, BoxError> {
        let reply = match &command {
            CtlCommand::Routes => self.call(Method::GET, "/api/v1/routes", None, None).await?,
            CtlCommand::SetWeights {
                route,
                weights,
                exact,
            } => return self.set_weights(route, weights, *exact).await,
            CtlCommand::Apply { file } => return self.apply(file).await,
            CtlCommand::Fleet => self.call(Method::GET, "/api/v1/fleet", None, None).await?,
            CtlCommand::Flags => self.call(Method::GET, "/api/v1/flags", None, None).await?,
            CtlCommand::Flag {
                name,
                percent,
                on,
                off,
            } => {
                let mut edit = serde_json::Map::new();
                if let Some(percent) = percent {
                    edit.insert("percent".into(), json!(percent));
                }
                if *on || *off {
                    edit.insert("enabled".into(), json!(*on));
                }
                let current = ok(self.call(Method::GET, "/api/v1/flags", None, None).await?)?;
                let revision = format!("\"{}\"", current.body["revision"]);
                self.call(
                    Method::PUT,
                    &format!("/api/v1/flags/{}", query_value(name)),
                    Some(&revision),
                    Some(Value::Object(edit)),
                )
                .await?
            }
            CtlCommand::Experiment {
                route: Some(route),
                conclude: Some(winner),
            } => self.conclude(route, winner).await?,
            CtlCommand::Experiment { route, .. } => {
                let query = route
                    .as_deref()
                    .map_or_else(String::new, |r| format!("?route={}", query_value(r)));
                let path = format!("/api/v1/experiments{query}");
                let reply = ok(self.call(Method::GET, &path, None, None).await?)?;
                if let (Some(route), Some([])) = (
                    route,
                    reply.body["experiments"].as_array().map(Vec::as_slice),
                ) {
                    return Err(format!("route '{route}' has no experiment").into());
                }
                reply
            }
            CtlCommand::Promote { route, version } => {
                self.call(
                    Method::POST,
                    &format!("/api/v1/routes/{route}/promote"),
                    None,
                    Some(json!({ "version": version })),
                )
                .await?
            }
            CtlCommand::Rollback { route } => {
                self.call(
                    Method::POST,
                    &format!("/api/v1/routes/{route}/rollback"),
                    None,
                    None,
                )
                .await?
            }
            CtlCommand::Flip { route, from, to } => {
                self.call(
                    Method::POST,
                    &format!("/api/v1/routes/{route}/flip"),
                    None,
                    Some(json!({ "from": from, "to": to })),
                )
                .await?
            }
            CtlCommand::History => {
                self.call(Method::GET, "/api/v1/history", None, None)
                    .await?
            }
            CtlCommand::Status => self.call(Method::GET, "/api/v1/status", None, None).await?,
            CtlCommand::Reload => {
                self.call(Method::POST, "/api/v1/reload", None, None)
                    .await?
            }
            CtlCommand::Shadows => {
                self.call(Method::GET, "/api/v1/shadows", None, None)
                    .await?
            }
            CtlCommand::Rollout { route, action } => {
                let path = format!("/api/v1/routes/{route}/rollout");
                match action.as_str() {
                    "status" => self.call(Method::GET, &path, None, None).await?,
                    action => {
                        self.call(Method::POST, &format!("{path}/{action}"), None, None)
                            .await?
                    }
                }
            }
            CtlCommand::Stats { window, fleet } => {
                let path = if *fleet {
                    "/api/v1/stats?scope=fleet".to_owned()
                } else {
                    format!("/api/v1/stats?window={}", window.replace(' ', ""))
                };
                self.call(Method::GET, &path, None, None).await?
            }
            CtlCommand::Demo {
                backend,
                error_rate,
                latency,
                reset,
            } => {
                let (method, path) = demo_request(
                    backend.as_deref(),
                    error_rate.as_deref(),
                    latency.as_deref(),
                    *reset,
                );
                let reply = self.call(method, &path, None, None).await?;
                if reply.status == StatusCode::NOT_FOUND
                    && reply.body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("no admin endpoint"))
                {
                    return Err(format!(
                        "{} is not a `switchyard demo`: only the demo has demo backends",
                        self.base
                    )
                    .into());
                }
                reply
            }
        };
        let reply = ok(reply)?;
        if self.json {
            return Ok(serde_json::to_string_pretty(&reply.body)?);
        }
        Ok(match command {
            CtlCommand::Routes => render_routes(&reply.body),
            CtlCommand::History => render_history(&reply.body),
            CtlCommand::Status => render_object(&reply.body),
            CtlCommand::Reload => render_object(&reply.body),
            CtlCommand::Shadows => crate::shadows::render(&reply.body),
            CtlCommand::Stats { .. } => crate::stats::render(&reply.body),
            CtlCommand::Rollout { .. } => render_rollout(&reply.body),
            CtlCommand::Fleet => render_fleet(&reply.body),
            CtlCommand::Flags => crate::flags::render(&reply.body),
            CtlCommand::Flag { name, .. } => format!(
                "flag {name}: {} (revision {})\n",
                reply.body["state"].as_str().unwrap_or("?"),
                reply.body["revision"]
            ),
            CtlCommand::Experiment { conclude: None, .. } => {
                crate::experiments::render(&reply.body)
            }
            CtlCommand::Demo { .. } => render_demo(&reply.body),
            _ => render_change(&reply.body),
        })
    }

    /// Concludes the route's running experiment with `winner`.
    async fn conclude(&self, route: &str, winner: &str) -> Result<Reply, BoxError> {
        let path = format!("/api/v1/experiments?route={}", query_value(route));
        let reply = ok(self.call(Method::GET, &path, None, None).await?)?;
        let Some(name) = reply.body["experiments"][0]["name"].as_str() else {
            return Err(format!("route '{route}' has no experiment to conclude").into());
        };
        self.call(
            Method::POST,
            &format!("/api/v1/routes/{route}/experiments/{name}/conclude"),
            None,
            Some(json!({ "winner": winner })),
        )
        .await
    }

    async fn set_weights(
        &self,
        route: &str,
        pairs: &[String],
        exact: bool,
    ) -> Result<String, BoxError> {
        let mut weights = BTreeMap::new();
        for pair in pairs {
            let (version, weight) = pair
                .split_once('=')
                .ok_or_else(|| format!("'{pair}' is not VERSION=WEIGHT, e.g. canary=25"))?;
            let weight: i64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("'{weight}' in '{pair}' is not a whole number"))?;
            weights.insert(version.trim().to_owned(), weight);
        }
        let current = ok(self.call(Method::GET, "/api/v1/routes", None, None).await?)?;
        let etag = current
            .etag
            .ok_or("the admin API sent no ETag with the routes; cannot make a safe change")?;
        let path = format!(
            "/api/v1/routes/{route}/weights{}",
            if exact { "?exact=true" } else { "" }
        );
        let reply = self
            .call(Method::PUT, &path, Some(&etag), Some(json!(weights)))
            .await?;
        if reply.status == StatusCode::PRECONDITION_FAILED {
            let now = ok(self.call(Method::GET, "/api/v1/routes", None, None).await?)?;
            let mut text = format!("another change won (the table moved on from revision {etag}); nothing was changed. Now:\n");
            text.push_str(&render_routes(&now.body));
            return Err(text.into());
        }
        let reply = ok(reply)?;
        Ok(if self.json {
            serde_json::to_string_pretty(&reply.body)?
        } else {
            render_change(&reply.body)
        })
    }
}

impl Ctl {
    /// Each route's weights from `file`, as `PUT …/weights?exact=true`
    /// guarded by the revision the previous step left: a change made by
    /// someone else meanwhile stops the push with what was applied so far.
    async fn apply(&self, file: &std::path::Path) -> Result<String, BoxError> {
        let config = crate::gateway_api::load(file).map_err(|e| e.to_string())?;
        let current = ok(self.call(Method::GET, "/api/v1/routes", None, None).await?)?;
        let mut etag = current
            .etag
            .ok_or("the admin API sent no ETag with the routes; cannot make a safe change")?;
        let mut text = String::new();
        for route in &config.table_spec().routes {
            let weights: BTreeMap<&str, u32> = route
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.weight))
                .collect();
            let path = format!("/api/v1/routes/{}/weights?exact=true", route.name);
            let reply = self
                .call(Method::PUT, &path, Some(&etag), Some(json!(weights)))
                .await?;
            if reply.status == StatusCode::PRECONDITION_FAILED {
                return Err(format!("{text}another change came first (the table moved on from revision {etag}); stopped before route '{}': run apply again", route.name).into());
            }
            let reply = ok(reply).map_err(|e| format!("{text}route '{}': {e}", route.name))?;
            etag = reply.etag.unwrap_or(etag);
            let _ = writeln!(
                text,
                "{:<16} {} (revision {})",
                route.name,
                weights_line(&reply.body["route"]["versions"]),
                etag.trim_matches('"')
            );
        }
        Ok(text)
    }
}

/// Turns an error reply into an error carrying the API's message.
fn ok(reply: Reply) -> Result<Reply, BoxError> {
    if reply.status.is_success() {
        return Ok(reply);
    }
    let message = reply.body["error"]
        .as_str()
        .map_or_else(|| reply.body.to_string(), str::to_owned);
    let detail = match &reply.body["detail"] {
        Value::Null => String::new(),
        Value::String(text) => format!("\n{text}"),
        other => format!(" ({other})"),
    };
    Err(format!("{}: {message}{detail}", reply.status).into())
}

/// The demo endpoint's method and path (query included) for `ctl demo`.
fn demo_request(
    backend: Option<&str>,
    error_rate: Option<&str>,
    latency: Option<&str>,
    reset: bool,
) -> (Method, String) {
    let Some(backend) = backend else {
        return (Method::GET, "/api/v1/demo/backends".to_owned());
    };
    let mut query = Vec::new();
    if let Some(rate) = error_rate {
        query.push(format!("error_rate={}", query_value(rate)));
    }
    if let Some(latency) = latency {
        query.push(format!("latency={}", query_value(latency)));
    }
    if reset {
        query.push("reset=true".to_owned());
    }
    let path = format!("/api/v1/demo/backends/{}", query_value(backend));
    if query.is_empty() {
        (Method::GET, path)
    } else {
        (Method::POST, format!("{path}?{}", query.join("&")))
    }
}

/// `value` for a URL: spaces dropped (`80 ms` is `80ms`), anything but
/// unreserved characters percent-encoded so it reaches the API as one value
/// (which then says what is wrong with it).
fn query_value(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes().filter(|b| !b.is_ascii_whitespace()) {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_routes_and_changes() {
        let body = json!({"revision": 3, "routes": [{"name": "web", "host": "*", "path_prefix": "/", "baseline": "stable",
            "versions": [{"name": "stable", "weight": 75, "endpoints": ["127.0.0.1:1"]}, {"name": "canary", "weight": 25, "endpoints": []}]}]});
        let text = render_routes(&body);
        assert!(text.contains("revision 3"));
        assert!(text.contains("stable") && text.contains("75"));
        let change = json!({"revision": 4, "route": body["routes"][0]});
        assert_eq!(
            render_change(&change),
            "ok: revision 4; web now stable=75 canary=25"
        );
    }

    #[test]
    fn demo_requests_and_text() {
        assert_eq!(
            demo_request(None, None, None, false),
            (Method::GET, "/api/v1/demo/backends".to_owned())
        );
        assert_eq!(
            demo_request(Some("canary"), Some("0.2"), Some("80 ms"), false),
            (
                Method::POST,
                "/api/v1/demo/backends/canary?error_rate=0.2&latency=80ms".to_owned()
            )
        );
        assert_eq!(
            demo_request(Some("canary"), None, None, true).1,
            "/api/v1/demo/backends/canary?reset=true"
        );
        assert_eq!(query_value("1&x=2"), "1%26x%3D2");
        let text = render_demo(&json!({"backends": [
            {"name": "stable", "address": "127.0.0.1:1", "error_rate": 0.0, "latency_ms": 0.0, "requests": 5},
            {"name": "canary", "address": "127.0.0.1:2", "error_rate": 0.2, "latency_ms": 80.0, "requests": 7}]}));
        assert!(
            text.contains("stable") && text.contains("healthy"),
            "{text}"
        );
        assert!(text.contains("error rate 20%, latency +80 ms"), "{text}");
    }

    #[test]
    fn error_replies_carry_the_message() {
        let reply = Reply {
            status: StatusCode::NOT_FOUND,
            etag: None,
            body: json!({"error": "route 'x' does not exist", "detail": null}),
        };
        let error = ok(reply).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("404") && error.contains("route 'x'"),
            "{error}"
        );
    }
}
