//! Forwarding to an upstream: the pooled keep-alive client, the rewrite of a
//! downstream request into an upstream one (URI, hop-by-hop headers,
//! X-Forwarded-*), and the clean-up of the upstream's response headers.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;

/// Settings of the upstream connection pool, fixed for the process lifetime.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// The pooled HTTP/1.1 client for one kind of upstream traffic (primary
/// requests; shadows get their own so they never take primary connections).
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    settings: UpstreamSettings,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(connector);
        Upstream {
            client,
            settings: settings.clone(),
        }
    }

    /// A client with the same settings and a pool of its own.
    pub fn separate_pool(&self) -> Upstream {
        Upstream::new(&self.settings)
    }

    pub fn client(&self) -> &Client<HttpConnector, ProxyBody> {
        &self.client
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

/// Turns the downstream request into the one sent to `endpoint`: absolute
/// URI, HTTP/1.1, original Host kept, hop-by-hop headers dropped,
/// X-Forwarded-For appended and X-Forwarded-Proto/Host set.
pub fn upstream_request(
    req: Request<ProxyBody>,
    endpoint: &Authority,
    client: SocketAddr,
    scheme: &'static str,
) -> Result<Request<ProxyBody>, http::Error> {
    let (mut parts, body) = req.into_parts();
    let original_host = match parts.headers.get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => parts
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
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST, host.clone());
        headers.insert(header::HOST, host);
    }
    Ok(Request::from_parts(parts, body))
}

fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    let ip = client.ip().to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
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
        let up = upstream_request(req, &endpoint, client, "http").expect("rewrite");
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
        let up = upstream_request(req, &endpoint, client, "http").expect("rewrite");
        assert_eq!(up.version(), Version::HTTP_11);
        assert_eq!(up.headers()["host"], "app.example.com");
    }
}
