//! Shared support for the end-to-end tests: real hyper backends on
//! 127.0.0.1:0, the real proxy started in-process from TOML text, a pooled
//! client, and bounded waits so a bug fails a test instead of hanging it.
//!
//! Every test file includes this module (`mod support;`) and uses only part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod admin;
pub mod killable;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// How long one request (headers and whole body) may take before the test
/// fails. Generous: a debug build on a busy 2-core machine is slow, but a
/// hang must not last forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails the test with `what` if `future` takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// Response header every test backend sets to its own name.
pub const BACKEND_HEADER: &str = "x-backend";

/// Builder for a test backend. What it answers depends on the request:
///
/// - `POST`/`PUT`: echoes the request body back, streaming (the response
///   starts before the request body has ended).
/// - `GET /headers`: a JSON object of the request as the backend saw it:
///   `{"method", "uri", "headers": {name: [values]}}`.
/// - `GET /hop`: a small body with hop-by-hop response headers attached.
/// - `GET /bytes/N`: N bytes of [`pattern`], streamed in 64 KiB chunks.
/// - anything else: its name as the body.
///
/// `?delay_ms=N` on any request, or [`BackendBuilder::delay`] for all of
/// them, holds the response headers back that long; `?status=N` answers
/// with that status.
pub struct BackendBuilder {
    name: String,
    delay: Duration,
}

pub fn backend(name: &str) -> BackendBuilder {
    BackendBuilder {
        name: name.to_owned(),
        delay: Duration::ZERO,
    }
}

/// A running test backend. Stops accepting when dropped.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl BackendBuilder {
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub async fn start(self) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend on 127.0.0.1:0");
        let addr = listener.local_addr().expect("backend address");
        let hits = Arc::new(AtomicUsize::new(0));
        let name: Arc<str> = self.name.as_str().into();
        let delay = self.delay;
        let counter = Arc::clone(&hits);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = Arc::clone(&name);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        answer(Arc::clone(&name), delay, req)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: self.name,
            addr,
            hits,
            accept,
        }
    }
}

impl Backend {
    /// Requests this backend has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// `host:port`, as a config's `endpoints` lists it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn answer(
    name: Arc<str>,
    delay: Duration,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let extra = query_value(&req, "delay_ms").map_or(Duration::ZERO, Duration::from_millis);
    let status = query_value(&req, "status").and_then(|s| StatusCode::from_u16(s as u16).ok());
    if !(delay + extra).is_zero() {
        tokio::time::sleep(delay + extra).await;
    }
    let path = req.uri().path().to_owned();
    let mut response = if req.method() == Method::POST || req.method() == Method::PUT {
        Response::new(req.into_body().map_err(BoxError::from).boxed())
    } else if path == "/headers" {
        Response::new(full(describe_request(&req)))
    } else if path == "/hop" {
        let mut response = Response::new(full(name.to_string()));
        for (header, value) in [
            ("connection", "x-private-response"),
            ("x-private-response", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ] {
            response.headers_mut().insert(
                http::HeaderName::from_static(header),
                http::HeaderValue::from_static(value),
            );
        }
        response
    } else if let Some(len) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
        Response::new(Pattern::new(len).boxed())
    } else {
        Response::new(full(name.to_string()))
    };
    response.headers_mut().insert(
        BACKEND_HEADER,
        http::HeaderValue::from_str(&name).expect("backend names are header-safe"),
    );
    if let Some(status) = status {
        *response.status_mut() = status;
    }
    Ok(response)
}

fn query_value<B>(req: &Request<B>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

fn describe_request<B>(req: &Request<B>) -> String {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    })
    .to_string()
}

/// A free address on 127.0.0.1 for a listener to bind (bound, then
/// released: another test could take it meanwhile, so only for addresses
/// something binds at once).
pub async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a probe listener");
    listener.local_addr().expect("probe address")
}

/// An address on 127.0.0.1 that refuses connections for as long as this
/// lives: a socket bound to it but not listening holds the port, so no
/// test running alongside can start listening there.
pub struct RefusingPort {
    pub addr: SocketAddr,
    _held: tokio::net::TcpSocket,
}

pub fn refusing_port() -> RefusingPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind a refusing port");
    let addr = socket.local_addr().expect("refusing port address");
    RefusingPort {
        addr,
        _held: socket,
    }
}

impl std::fmt::Display for RefusingPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

const CHUNK: usize = 64 * 1024;

/// Byte `i` of the deterministic test pattern: not periodic over short
/// spans, so a dropped, repeated or reordered chunk changes the hash.
pub fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 17);
    (x >> 56) as u8
}

/// A streaming body of `len` pattern bytes in 64 KiB chunks, generated as
/// it is read (never held whole in memory).
pub struct Pattern {
    sent: u64,
    len: u64,
}

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        Pattern { sent: 0, len }
    }

    /// The FNV-1a hash of the whole pattern of `len` bytes.
    pub fn hash(len: u64) -> u64 {
        let mut hash = Fnv::default();
        for i in 0..len {
            hash.write(&[pattern_byte(i)]);
        }
        hash.finish()
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let left = self.len - self.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = left.min(CHUNK as u64);
        let chunk: Vec<u8> = (self.sent..self.sent + n).map(pattern_byte).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown length on purpose: the body goes out chunked, as a
        // streaming client's would.
        SizeHint::default()
    }
}

/// A request body fed chunk by chunk from the test through a channel; it
/// ends when the sender is dropped.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx }.boxed())
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// FNV-1a, 64 bit: independent of how the bytes are split into chunks.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Reads a body to its end, hashing as it goes; returns (length, hash).
pub async fn hash_body<B>(mut body: B) -> Result<(u64, u64), B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut hash = Fnv::default();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
            hash.write(&data);
        }
    }
    Ok((len, hash.finish()))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

pub type TestClient = Client<HttpConnector, TestBody>;

/// A pooled HTTP/1.1 keep-alive client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A whole response, collected (tests only: the proxy never collects).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (for the backend's `/headers` answer).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends `req` and collects the response, failing the test after
/// [`REQUEST_TIMEOUT`].
pub async fn send(client: &TestClient, req: Request<TestBody>) -> Result<Reply, BoxError> {
    let what = format!("{} {}", req.method(), req.uri());
    bounded(REQUEST_TIMEOUT, &what, async {
        let response = client.request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    })
    .await
}

/// GET `url`, panicking on a transport error (a status is not an error).
pub async fn get(client: &TestClient, url: &str) -> Reply {
    let req = Request::get(url).body(empty()).expect("request");
    send(client, req)
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

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
    let url = Arc::new(proxy.url(path));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let url = Arc::clone(&url);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let client = client();
                let mut replies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    replies.push(get(&client, &url).await);
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

/// A fresh, empty directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The path of an external tool a test drives (`promtool`, `chromium`).
/// `None` skips that part of the test — unless `SWITCHYARD_REQUIRE_TOOLS`
/// is set (scripts/test.sh installs the tools and sets it): then a missing
/// tool fails the test instead of skipping it.
pub fn tool(command: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(command))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("SWITCHYARD_REQUIRE_TOOLS").is_none(),
            "{command} is not installed but SWITCHYARD_REQUIRE_TOOLS is set: run ./scripts/test.sh, which installs it"
        );
        eprintln!("note: {command} is not installed: skipping the part of this test that needs it");
    }
    found
}

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `switchyard` binary of the same profile as this test, built (or
/// brought up to date) once per test process.
pub fn switchyard_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("switchyard-control", "switchyard"))
        .clone()
}

/// The workspace binary `bin` of `package`, of the same profile as this
/// test, built (or brought up to date) by cargo.
///
/// Cargo only builds a package's binaries for that package's own
/// integration tests, so `cargo test` alone may leave it missing or stale:
/// ask cargo for it (a no-op when it is fresh).
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<this test>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build
        .current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&target_dir);
    if profile != "debug" {
        build.args(["--profile", &profile]);
    }
    // Drop what cargo set for this test crate: build scripts track some
    // of it (ring's reruns on CARGO_MANIFEST_DIR), so inheriting it would
    // make this build and the next plain `cargo build` rebuild each other.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_crate = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref());
        if per_crate {
            build.env_remove(key.as_ref());
        }
    }
    let status = build.status().expect("run cargo build for the binary");
    assert!(status.success(), "cargo build of the {bin} binary failed");
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} missing after cargo build",
        path.display()
    );
    path
}
