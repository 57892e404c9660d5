//! Test backends: real hyper servers on 127.0.0.1:0 that answer by name,
//! echo, describe the request or stream a pattern; raw TCP backends for
//! what no well-behaved server does (never answer, reset, close a
//! keep-alive connection as it is reused); and loopback ports that are free
//! or that refuse connections.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::body::{full, Pattern, TestBody};
use crate::BoxError;

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

/// A backend speaking raw TCP on 127.0.0.1:0: `serve` gets each accepted
/// connection and the index of its connection (0, 1, ...). Stops accepting
/// when dropped.
pub struct RawBackend {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

pub async fn raw_backend<F, Fut>(serve: F) -> RawBackend
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a raw backend on 127.0.0.1:0");
    let addr = listener.local_addr().expect("raw backend address");
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let index = accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, index));
        }
    });
    RawBackend {
        addr,
        connections,
        accept,
    }
}

impl RawBackend {
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// `host:port`, as a config's `endpoints` lists it.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Reads one HTTP/1.1 request head from `stream` (up to the blank line),
/// then as many body bytes as its `Content-Length` says; `None` if the
/// connection ended first. For raw backends: no chunked bodies.
pub async fn read_raw_request(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = bytes.len() - head_end;
    while body < length {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => body += n,
            _ => return None,
        }
    }
    Some(head)
}

/// A free address on 127.0.0.1 for a listener to bind (bound, then
/// released: another test could take it meanwhile, so only for addresses
/// something binds at once; [`reserve_port`] keeps it instead).
pub async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a probe listener");
    listener.local_addr().expect("probe address")
}

/// A port on 127.0.0.1 kept for a process this test starts and that binds
/// it itself (etcd), for as long as this lives: a socket bound to it with
/// `SO_REUSEADDR` but not listening. Another bind to port 0 (a backend or a
/// proxy of a test running alongside) never gets it, while a listener that
/// sets `SO_REUSEADDR` too (Go's do, tokio's and switchyard's do) can bind
/// it, also again after a restart. Unlike [`free_port`], whose port is
/// free for anyone from the moment it returns.
pub struct ReservedPort {
    pub addr: SocketAddr,
    _held: tokio::net::TcpSocket,
}

pub fn reserve_port() -> ReservedPort {
    reserve(SocketAddr::from(([127, 0, 0, 1], 0))).expect("reserve a port on 127.0.0.1")
}

/// Keeps `addr` (port 0: a free one) as [`ReservedPort`] does.
pub fn reserve(addr: SocketAddr) -> std::io::Result<ReservedPort> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let addr = socket.local_addr()?;
    Ok(ReservedPort {
        addr,
        _held: socket,
    })
}

impl std::fmt::Display for ReservedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
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
