//! The rewrite of a downstream request into an upstream one (URI,
//! hop-by-hop headers, X-Forwarded-*), and the clean-up of the upstream's
//! response headers. The upstream client itself is [`crate::upstream`].

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, Version};

use crate::body::ProxyBody;
use crate::connection::ClientConnection;

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
    strip_connection_headers(headers, Hop::Strip);
}

/// What a message keeps of its connection-specific headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// None of them.
    Strip,
    /// It switches protocols: `Upgrade` stays, as it is, and `Connection`
    /// says `upgrade` (its other options concern this hop only).
    Upgrade,
}

fn strip_connection_headers(headers: &mut HeaderMap, hop: Hop) {
    let keep = |name: &HeaderName| hop == Hop::Upgrade && name == header::UPGRADE;
    // Most messages carry none: one pass over the names (standard names
    // compare by tag) is cheaper than a hashed removal per candidate.
    if hop == Hop::Strip && !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .filter(|name| !keep(name))
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP.iter().filter(|name| !keep(name)) {
        headers.remove(name);
    }
    if hop == Hop::Upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Turns the downstream request into the one sent to `endpoint`: absolute
/// URI, HTTP/1.1, original Host kept, hop-by-hop headers dropped (but those
/// of a protocol upgrade, with [`Hop::Upgrade`]), X-Forwarded-For appended
/// and X-Forwarded-Proto/Host set.
pub fn upstream_request(
    req: Request<ProxyBody>,
    endpoint: &Authority,
    client: &ClientConnection,
    scheme: &'static str,
    hop: Hop,
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
    strip_connection_headers(headers, hop);
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

fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientConnection) {
    let ip = client.forwarded_ip();
    let appended = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => {
            let ip = ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{existing}, {ip}")).ok()
        }
        _ => None,
    };
    headers.insert(X_FORWARDED_FOR, appended.unwrap_or_else(|| ip.clone()));
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

/// A copy of `req` to send again when nothing of its answer came back: an
/// idempotent method (RFC 9110 §9.2.2) without a body (a body is streamed
/// once and gone). `None` when sending it twice is impossible or unsafe.
pub fn replayable_copy(req: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    if !idempotent || !http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Cleans the upstream's response for the downstream connection. One that
/// switched to `switched` (the protocol the tunnel speaks) keeps its
/// `Upgrade` header, or gets that protocol when it sent none.
pub fn downstream_response(response: &mut Response<ProxyBody>, switched: Option<HeaderValue>) {
    let headers = response.headers_mut();
    let Some(protocol) = switched else {
        return strip_hop_by_hop(headers);
    };
    strip_connection_headers(headers, Hop::Upgrade);
    if !headers.contains_key(header::UPGRADE) {
        headers.insert(header::UPGRADE, protocol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use std::net::SocketAddr;

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

    /// `req` from `client` as endpoint 127.0.0.1:9001 gets it.
    fn rewrite(req: Request<ProxyBody>, client: &str) -> Request<ProxyBody> {
        let endpoint: Authority = "127.0.0.1:9001".parse().expect("authority");
        let client: SocketAddr = client.parse().expect("addr");
        let client = ClientConnection::new(client);
        upstream_request(req, &endpoint, &client, "http", Hop::Strip).expect("rewrite")
    }

    #[test]
    fn rewrites_uri_and_adds_forwarded_headers() {
        let req = Request::builder()
            .uri("/path?q=1")
            .header(header::HOST, "app.example.com")
            .header("x-forwarded-for", "10.0.0.1")
            .body(empty())
            .expect("request");
        let up = rewrite(req, "192.0.2.7:5000");
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
        let up = rewrite(req, "127.0.0.1:5000");
        assert_eq!(up.version(), Version::HTTP_11);
        assert_eq!(up.headers()["host"], "app.example.com");
    }
}
