//! The real proxy started in-process from TOML text (built with
//! [`config`] and [`route`]), and load driven through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::body::empty;
use crate::bounded;
use crate::client::{client, get, send, Reply, TestClient};

/// Config text with both listeners on ephemeral loopback ports, followed by
/// `body` (routes and any other sections).
pub fn config(body: &str) -> String {
    format!("[listen]\ndata = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n{body}")
}

/// Builds one `[[routes]]` block.
pub struct RouteToml {
    text: String,
}

pub fn route(name: &str) -> RouteToml {
    RouteToml {
        text: format!("[[routes]]\nname = \"{name}\"\n"),
    }
}

impl RouteToml {
    pub fn key(mut self, key: &str, value: &str) -> Self {
        self.text.push_str(&format!("{key} = \"{value}\"\n"));
        self
    }

    /// Raw TOML for the route (e.g. a `[routes.rollout]` table), before
    /// its versions.
    pub fn section(mut self, toml: &str) -> Self {
        self.text.push_str(toml);
        self.text.push('\n');
        self
    }

    pub fn version(mut self, name: &str, weight: u32, endpoints: &[String]) -> Self {
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        self.text.push_str(&format!(
            "\n  [[routes.versions]]\n  name = \"{name}\"\n  weight = {weight}\n  endpoints = [{}]\n",
            endpoints.join(", ")
        ));
        self
    }

    /// A version served by one test backend.
    pub fn backend(self, name: &str, weight: u32, backend: &Backend) -> Self {
        self.version(name, weight, &[backend.endpoint()])
    }

    pub fn build(self) -> String {
        self.text + "\n"
    }
}

/// Route `web`: versions `stable` and `canary` (weight `canary_weight` of
/// 100) served by those backends.
pub fn web_split(stable: &Backend, canary: &Backend, canary_weight: u32) -> String {
    route("web")
        .backend("stable", 100 - canary_weight, stable)
        .backend("canary", canary_weight, canary)
        .build()
}

/// A proxy running in this process, with a client pointed at it.
pub struct TestProxy {
    pub running: switchyard_control::Running,
    pub client: TestClient,
}

/// Parses `toml` with the real config code and starts the real proxy.
pub async fn start_proxy(toml: &str) -> TestProxy {
    let config = switchyard_control::Config::parse(toml, "test.toml")
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{toml}"));
    let running = bounded(
        Duration::from_secs(10),
        "starting the proxy",
        switchyard_control::start(&config),
    )
    .await
    .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
    TestProxy {
        running,
        client: client(),
    }
}

impl TestProxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.data_addr)
    }

    pub async fn get(&self, path: &str) -> Reply {
        get(&self.client, &self.url(path)).await
    }

    /// Stops the proxy, failing the test if draining hangs.
    pub async fn shutdown(self) {
        bounded(
            Duration::from_secs(20),
            "proxy shutdown",
            self.running.shutdown(),
        )
        .await;
    }
}

/// Sends `total` GETs for `path` from `clients` concurrent keep-alive
/// clients; returns every reply (order not kept).
pub async fn load(proxy: &TestProxy, path: &str, total: usize, clients: usize) -> Vec<Reply> {
    load_with(proxy, path, total, clients, |req| req).await
}

/// [`load`], each GET built further by `build` (a Host header, …).
pub async fn load_with(
    proxy: &TestProxy,
    path: &str,
    total: usize,
    clients: usize,
    build: impl Fn(http::request::Builder) -> http::request::Builder + Send + Sync + 'static,
) -> Vec<Reply> {
    let url = Arc::new(proxy.url(path));
    let build = Arc::new(build);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let url = Arc::clone(&url);
            let build = Arc::clone(&build);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let client = client();
                let mut replies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let req = build(http::Request::get(url.as_str()))
                        .body(empty())
                        .expect("request");
                    let reply = send(&client, req)
                        .await
                        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
                    replies.push(reply);
                }
                replies
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(total);
    for worker in workers {
        replies.extend(worker.await.expect("load client panicked"));
    }
    replies
}

/// Counts replies by the value of response header `name`.
pub fn count_by(replies: &[Reply], name: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        let key = reply.header(name).unwrap_or("<none>").to_owned();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
