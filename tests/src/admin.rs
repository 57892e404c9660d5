//! Calling the admin API from tests: JSON in and out, optional token.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request};
use serde_json::Value;

use crate::body::full;
use crate::client::{client, send, Reply, TestClient};

pub struct AdminClient {
    pub base: String,
    pub token: Option<String>,
    client: TestClient,
}

impl AdminClient {
    pub fn new(addr: std::net::SocketAddr, token: Option<&str>) -> AdminClient {
        AdminClient {
            base: format!("http://{addr}"),
            token: token.map(str::to_owned),
            client: client(),
        }
    }

    /// Sends a request; `if_match` is the raw header value.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        if_match: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(value) = if_match {
            req = req.header(header::IF_MATCH, value);
        }
        let body = Bytes::from(body.unwrap_or("").to_owned());
        let req = req.body(full(body)).expect("admin request");
        send(&self.client, req)
            .await
            .unwrap_or_else(|e| panic!("admin call {path} failed: {e}"))
    }

    pub async fn routes(&self) -> (u64, Value) {
        let reply = self.call(Method::GET, "/api/v1/routes", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let etag = reply
            .header("etag")
            .expect("ETag on routes")
            .trim_matches('"')
            .to_owned();
        let body = reply.json();
        let revision = etag.parse().expect("numeric ETag");
        assert_eq!(body["revision"], revision);
        (revision, body)
    }

    pub async fn set_weights(&self, route: &str, revision: u64, body: &str) -> Reply {
        let path = format!("/api/v1/routes/{route}/weights");
        self.call(
            Method::PUT,
            &path,
            Some(&format!("\"{revision}\"")),
            Some(body),
        )
        .await
    }

    /// Polls the routes until `version` of `route` has weight `expected`
    /// (10 s at most); returns them.
    pub async fn wait_for_weight(&self, route: &str, version: &str, expected: u64) -> Value {
        self.wait_for_routes(
            &format!("{route}/{version} at weight {expected}"),
            |routes| weight(routes, route, version) == expected,
        )
        .await
    }

    /// Polls the routes until `done` holds for them (10 s at most); returns
    /// them. The failure shows the last routes seen.
    pub async fn wait_for_routes(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, routes) = self.routes().await;
            if done(&routes) {
                return routes;
            }
            assert!(Instant::now() < deadline, "never saw {what}: {routes}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The change history, oldest first.
    pub async fn changes(&self) -> Vec<Value> {
        let reply = self.call(Method::GET, "/api/v1/history", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        body["changes"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no changes in the history: {body}"))
    }

    /// The newest change of the history.
    pub async fn last_change(&self) -> Value {
        let changes = self.changes().await;
        changes.last().cloned().expect("a change in the history")
    }

    /// `GET /api/v1/routes/{route}/rollout`.
    pub async fn rollout_status(&self, route: &str) -> Value {
        let path = format!("/api/v1/routes/{route}/rollout");
        let reply = self.call(Method::GET, &path, None, None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply.json()
    }
}

/// A version's weight in a `GET /api/v1/routes` body.
pub fn weight(routes: &Value, route: &str, version: &str) -> u64 {
    routes["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == route))
        .and_then(|r| r["versions"].as_array())
        .and_then(|versions| versions.iter().find(|v| v["name"] == version))
        .and_then(|v| v["weight"].as_u64())
        .unwrap_or_else(|| panic!("no weight for {route}/{version} in {routes}"))
}
