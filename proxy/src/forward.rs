//! Forwarding to an upstream: the pooled keep-alive clients (the shared
//! plain HTTP/1.1 one, and one per TLS / HTTP/2 transport a version asks
//! for), the rewrite of a downstream request into an upstream one (URI,
//! hop-by-hop headers, X-Forwarded-*), and the clean-up of the upstream's
//! response headers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, Version};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::client_idle::{IdleWatch, InFlight};
use crate::pool::{Pool, PoolError, PoolSettings, UpstreamBody};
use crate::tls::{self, TlsError};

/// Settings of the upstream connection pool, fixed for the process lifetime.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// What relative `ca_file` paths are relative to (the config file's
    /// directory); `None`: the working directory.
    pub files_dir: Option<PathBuf>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            files_dir: None,
        }
    }
}

/// How a version's endpoints are spoken to. The default, plain HTTP/1.1,
/// goes through the shared pool at no extra cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Transport {
    /// `Some`: HTTPS to the endpoints.
    pub tls: Option<UpstreamTls>,
    /// HTTP/2: negotiated by ALPN over TLS, prior knowledge (h2c) without.
    pub http2: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// PEM file of the CAs to trust; `None`: the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must be valid for, instead of the
    /// endpoint's host (for endpoints given as IP addresses).
    pub server_name: Option<String>,
}

impl Transport {
    #[inline]
    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && !self.http2
    }
}

/// Why an upstream exchange failed before its response headers arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("no response headers within {0:?}")]
    Timeout(Duration),
}

impl UpstreamError {
    /// Nothing reached the upstream: the request may go elsewhere.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Pool(error) => error.is_connect(),
            UpstreamError::Client(error) => error.is_connect(),
            UpstreamError::Tls(_) => true,
            UpstreamError::Timeout(_) => false,
        }
    }

    /// The response headers did not arrive in time (connecting included).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout(_) | UpstreamError::Pool(PoolError::Timeout(_))
        )
    }

    /// The failure itself, for walking its causes (`transparent` would
    /// skip it).
    pub fn cause(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            UpstreamError::Pool(PoolError::Http(error)) => error,
            UpstreamError::Pool(error) => error,
            UpstreamError::Client(error) => error,
            UpstreamError::Tls(error) => error,
            UpstreamError::Timeout(_) => self,
        }
    }
}

/// The client of a TLS or HTTP/2 transport (hyper-util's pooled client).
#[derive(Clone)]
enum TransportClient {
    Plain(Client<HttpConnector, ProxyBody>),
    Tls(Client<HttpsConnector<HttpConnector>, ProxyBody>),
}

impl TransportClient {
    async fn request(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let response = match self {
            TransportClient::Plain(client) => client.request(req).await,
            TransportClient::Tls(client) => client.request(req).await,
        }?;
        Ok(response.map(UpstreamBody::from))
    }
}

/// The pooled clients for one kind of upstream traffic (primary requests;
/// shadows get their own so they never take primary connections).
#[derive(Clone)]
pub struct Upstream {
    /// Plain HTTP/1.1, what nearly every upstream speaks.
    pool: Pool,
    settings: UpstreamSettings,
    /// Clients of non-plain transports, built on first use and kept, so
    /// their pools outlive table swaps.
    others: Arc<RwLock<HashMap<Transport, TransportClient>>>,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Upstream {
        Upstream {
            pool: Pool::new(PoolSettings {
                connect_timeout: settings.connect_timeout,
                idle_timeout: settings.pool_idle_timeout,
                max_idle_per_host: settings.pool_max_idle_per_host,
            }),
            settings: settings.clone(),
            others: Arc::default(),
        }
    }

    /// Sends `req` (absolute URI) over `transport` (for TLS, as an `https`
    /// URI) and waits up to `timeout` for the response headers.
    pub async fn send(
        &self,
        transport: &Transport,
        mut req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if transport.is_plain() {
            return Ok(self.pool.send(req, timeout).await?);
        }
        let client = self.transport_client(transport)?;
        if transport.tls.is_some() {
            set_scheme(&mut req, Scheme::HTTPS);
        }
        // Boxed: rarer than plain HTTP/1.1, and it would otherwise make
        // every request's future larger.
        Box::pin(tokio::time::timeout(timeout, client.request(req)))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }

    fn transport_client(&self, transport: &Transport) -> Result<TransportClient, TlsError> {
        let known = self.others.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = known.get(transport) {
            return Ok(client.clone());
        }
        drop(known);
        let client = self.build_transport(transport)?;
        let mut known = self.others.write().unwrap_or_else(PoisonError::into_inner);
        Ok(known.entry(transport.clone()).or_insert(client).clone())
    }

    fn build_transport(&self, transport: &Transport) -> Result<TransportClient, TlsError> {
        let mut builder = client_builder(&self.settings);
        builder.http2_only(transport.http2);
        let mut http = http_connector(&self.settings);
        let Some(upstream_tls) = &transport.tls else {
            return Ok(TransportClient::Plain(builder.build(http)));
        };
        http.enforce_http(false);
        let ca_file = upstream_tls
            .ca_file
            .as_ref()
            .map(|path| match &self.settings.files_dir {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.clone(),
            });
        let config = tls::client_config(ca_file.as_deref())?;
        let mut https = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        if let Some(name) = &upstream_tls.server_name {
            https = https
                .with_server_name_resolver(FixedServerNameResolver::new(tls::server_name(name)?));
        }
        let connector = if transport.http2 {
            https.enable_http2().wrap_connector(http)
        } else {
            https.enable_http1().wrap_connector(http)
        };
        Ok(TransportClient::Tls(builder.build(connector)))
    }

    /// Re-reads the CA files of `transports` (those with TLS): builds their
    /// clients anew and swaps them in, all or none, so a reload picks up a
    /// rotated CA. New requests use new pools; open connections finish on
    /// the old ones. Returns how many clients were replaced.
    pub fn reload_tls<'a>(
        &self,
        transports: impl IntoIterator<Item = &'a Transport>,
    ) -> Result<usize, TlsError> {
        let mut fresh = HashMap::new();
        for transport in transports {
            if transport.tls.is_some() && !fresh.contains_key(transport) {
                fresh.insert(transport.clone(), self.build_transport(transport)?);
            }
        }
        let replaced = fresh.len();
        self.others
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(fresh);
        Ok(replaced)
    }

    /// Clients with the same settings and pools of their own.
    pub fn separate_pool(&self) -> Upstream {
        Upstream::new(&self.settings)
    }

    /// Idle plain HTTP/1.1 connections kept for `authority`.
    pub fn idle_connections(&self, authority: &str) -> usize {
        self.pool.idle_count(authority)
    }
}

fn http_connector(settings: &UpstreamSettings) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector
}

fn client_builder(settings: &UpstreamSettings) -> Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host);
    builder
}

fn set_scheme(req: &mut Request<ProxyBody>, scheme: Scheme) {
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// and must not be forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including every header the Connection header
/// names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (standard names
    // compare by tag) is cheaper than a hashed removal per candidate.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The client of one downstream connection. Its address is rendered for
/// X-Forwarded-For once per connection: formatting an IP costs more than
/// the rest of the request rewrite.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub addr: SocketAddr,
    forwarded_ip: HeaderValue,
    /// The connection's idle timer, told about each request.
    idle: Option<Arc<IdleWatch>>,
}

impl Downstream {
    pub fn new(addr: SocketAddr) -> Downstream {
        let forwarded_ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Downstream {
            addr,
            forwarded_ip,
            idle: None,
        }
    }

    pub fn with_idle_watch(mut self, watch: Arc<IdleWatch>) -> Downstream {
        self.idle = Some(watch);
        self
    }

    /// Marks a request of this client in flight until the guard drops.
    pub fn request_started(&self, version: Version) -> Option<InFlight> {
        self.idle
            .as_ref()
            .map(|watch| watch.request_started(version))
    }

    /// The connection became a tunnel: no longer an HTTP connection to time.
    pub fn upgraded(&self) {
        if let Some(watch) = &self.idle {
            watch.exempt();
        }
    }
}

/// Turns the downstream request into the one sent to `endpoint`: absolute
/// URI, HTTP/1.1, original Host kept, hop-by-hop headers dropped,
/// X-Forwarded-For appended and X-Forwarded-Proto/Host set.
pub fn upstream_request(
    req: Request<ProxyBody>,
    endpoint: &Authority,
    client: &Downstream,
    scheme: &'static str,
) -> Result<Request<ProxyBody>, http::Error> {
    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in the URI only: the upstream (HTTP/1.1)
    // needs it as a header.
    let missing_host = match parts.headers.contains_key(header::HOST) {
        true => None,
        false => parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok()),
    };
    let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
    uri_parts.scheme = Some(Scheme::HTTP);
    uri_parts.authority = Some(endpoint.clone());
    if uri_parts.path_and_query.is_none() {
        uri_parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri_parts)?;
    parts.version = Version::HTTP_11;

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    append_forwarded_for(headers, client);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    if let Some(host) = missing_host {
        headers.insert(header::HOST, host);
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    Ok(Request::from_parts(parts, body))
}

fn append_forwarded_for(headers: &mut HeaderMap, client: &Downstream) {
    let appended = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => {
            let ip = client.forwarded_ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{existing}, {ip}")).ok()
        }
        _ => None,
    };
    headers.insert(
        X_FORWARDED_FOR,
        appended.unwrap_or_else(|| client.forwarded_ip.clone()),
    );
}

/// Points an already rewritten upstream request at another endpoint.
pub fn retarget(
    req: Request<ProxyBody>,
    endpoint: &Authority,
) -> Result<Request<ProxyBody>, http::Error> {
    let (mut parts, body) = req.into_parts();
    let mut uri_parts = std::mem::take(&mut parts.uri).into_parts();
    uri_parts.authority = Some(endpoint.clone());
    parts.uri = Uri::from_parts(uri_parts)?;
    Ok(Request::from_parts(parts, body))
}

/// Cleans the upstream's response for the downstream connection.
pub fn downstream_response(response: &mut Response<ProxyBody>) {
    strip_hop_by_hop(response.headers_mut());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;

    #[test]
    fn strips_hop_by_hop_and_listed_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn rewrites_uri_and_adds_forwarded_headers() {
        let req = Request::builder()
            .uri("/path?q=1")
            .header(header::HOST, "app.example.com")
            .header("x-forwarded-for", "10.0.0.1")
            .body(empty())
            .expect("request");
        let endpoint: Authority = "127.0.0.1:9001".parse().expect("authority");
        let client: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        let up =
            upstream_request(req, &endpoint, &Downstream::new(client), "http").expect("rewrite");
        assert_eq!(up.uri(), "http://127.0.0.1:9001/path?q=1");
        let h = up.headers();
        assert_eq!(h["host"], "app.example.com");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
    }

    #[test]
    fn h2_authority_becomes_host() {
        let req = Request::builder()
            .uri("http://app.example.com/x")
            .version(Version::HTTP_2)
            .body(empty())
            .expect("request");
        let endpoint: Authority = "127.0.0.1:9001".parse().expect("authority");
        let client: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let up =
            upstream_request(req, &endpoint, &Downstream::new(client), "http").expect("rewrite");
        assert_eq!(up.version(), Version::HTTP_11);
        assert_eq!(up.headers()["host"], "app.example.com");
    }
}
