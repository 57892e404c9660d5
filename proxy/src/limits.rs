//! The limits on what a client controls: the size and count of a request's
//! headers, its body (per route), and the data listener's connections and
//! HTTP/2 streams. This module owns the settings, the request-head check
//! that answers 431 with a body naming the limit, and the request body
//! wrapper that cuts a body crossing its route's limit and tags every
//! failure to read it as the client's (400/413, never the upstream's 502).
//!
//! hyper enforces the same header limits as a backstop at twice the
//! configured values (`http1::Builder::max_buf_size`/`max_headers`, h2's
//! SETTINGS_MAX_HEADER_LIST_SIZE, see [`crate::listener`]): between the
//! limit and the backstop the client gets switchyard's plain-text 431
//! naming the key; beyond it, hyper's own (empty-bodied) 431.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::error::{error_chain, ProxyError};

/// The limits of the data listener and of every request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Request line (or pseudo-headers) plus every header's name and value.
    pub max_request_header_bytes: usize,
    /// Header fields in one request.
    pub max_request_headers: usize,
    /// Open client connections; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
}

impl Default for ClientLimits {
    /// Envoy's and nginx's orders of magnitude: 64 KiB / 100 headers
    /// (Envoy: 60 KiB / 100), 50,000 connections, 100 streams (nginx: 128).
    fn default() -> Self {
        ClientLimits {
            max_request_header_bytes: 64 * 1024,
            max_request_headers: 100,
            max_connections: 50_000,
            max_concurrent_streams: 100,
        }
    }
}

/// Which limit a request crossed: the `limit` label of
/// `switchyard_requests_rejected_total` and the config key in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    HeaderBytes,
    HeaderCount,
    BodyBytes,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::HeaderBytes, Limit::HeaderCount, Limit::BodyBytes];

    /// The config key (in `[limits]`, or a route's for the body).
    pub fn key(self) -> &'static str {
        match self {
            Limit::HeaderBytes => "max_request_header_bytes",
            Limit::HeaderCount => "max_request_headers",
            Limit::BodyBytes => "max_request_body_bytes",
        }
    }
}

impl ClientLimits {
    /// hyper's own head buffer: the backstop (see the module comment);
    /// hyper refuses less than 8 KiB.
    pub fn hyper_max_buf_size(&self) -> usize {
        self.max_request_header_bytes.saturating_mul(2).max(8192)
    }

    /// hyper's own header count: the backstop.
    pub fn hyper_max_headers(&self) -> usize {
        self.max_request_headers.saturating_mul(2).max(1)
    }

    /// h2's SETTINGS_MAX_HEADER_LIST_SIZE (it counts 32 bytes per field
    /// beyond name and value, RFC 7541 §4.1): the backstop.
    pub fn h2_max_header_list_size(&self) -> u32 {
        let bytes = self
            .max_request_header_bytes
            .saturating_add(32 * self.max_request_headers)
            .saturating_mul(2);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// The request head within the limits, or the 431 naming the one it
    /// crossed.
    pub fn check_head<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        let headers = req.headers();
        if headers.len() > self.max_request_headers {
            return Err(ProxyError::HeadersTooLarge {
                key: Limit::HeaderCount.key(),
                allowed: self.max_request_headers,
            });
        }
        if head_bytes(req.method().as_str(), req.uri(), headers) > self.max_request_header_bytes {
            return Err(ProxyError::HeadersTooLarge {
                key: Limit::HeaderBytes.key(),
                allowed: self.max_request_header_bytes,
            });
        }
        Ok(())
    }
}

/// The size of a request head as a client sent it: method, target, and
/// `name: value\r\n` for each field.
fn head_bytes(method: &str, uri: &http::Uri, headers: &HeaderMap) -> usize {
    let target = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    method.len() + target + fields
}

/// A declared `Content-Length` above `limit`: answered 413 before the
/// upstream is contacted.
pub fn check_declared_length(headers: &HeaderMap, limit: Option<u64>) -> Result<(), ProxyError> {
    let Some(limit) = limit else { return Ok(()) };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(ProxyError::BodyTooLarge { allowed: limit }),
        _ => Ok(()),
    }
}

/// A downstream request body, ready to forward, cut at `limit` bytes, and
/// the flag its failure sets. Most requests (GET, HEAD) have none: they get
/// [`body::empty`], which needs no allocation, and no flag.
pub fn request_body(body: Incoming, limit: Option<u64>) -> (ProxyBody, Option<ClientBodyFailed>) {
    if body.is_end_stream() {
        return (body::empty(), None);
    }
    let failed = ClientBodyFailed::default();
    let body = ClientBody::new(body, limit).watched_by(failed.clone());
    (body::boxed(body), Some(failed))
}

/// Set when a client's request body failed (cut off, malformed, or over
/// its limit). Once the upstream has answered, that failure tears the
/// upstream connection down and the response body breaks with a bare
/// "connection error" (hyper keeps the cause from it): this flag is how
/// the measurement knows the break was the client's, an abort, and not
/// the version's error.
#[derive(Debug, Clone, Default)]
pub struct ClientBodyFailed(Arc<AtomicBool>);

impl ClientBodyFailed {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Why a client's request body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error(
        "the request body is larger than the route's max_request_body_bytes ({allowed} bytes)"
    )]
    TooLarge { allowed: u64 },
    #[error("the request body could not be read from the client: {0}")]
    Read(#[source] hyper::Error),
}

impl ClientBodyError {
    /// The first client body failure among `error`'s causes: an upstream
    /// call that failed because of it is the client's fault.
    pub fn in_chain<'e>(
        error: &'e (dyn std::error::Error + 'static),
    ) -> Option<&'e ClientBodyError> {
        let mut source = Some(error);
        while let Some(cause) = source {
            if let Some(found) = cause.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            source = cause.source();
        }
        None
    }

    /// What the client is answered when an upstream call failed because
    /// of its body (too large, malformed, or cut off): its own error.
    pub fn to_proxy_error(&self) -> ProxyError {
        match self {
            ClientBodyError::TooLarge { allowed } => ProxyError::BodyTooLarge { allowed: *allowed },
            ClientBodyError::Read(_) => ProxyError::ClientBody(error_chain(self)),
        }
    }
}

/// A client's request body on its way upstream: counted against the
/// route's limit, and every failure tagged as the client's. Crossing the
/// limit is an error of the body stream, so the upstream connection is
/// aborted mid-body: the upstream never sees a complete, short request.
pub struct ClientBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    failed: Option<ClientBodyFailed>,
}

impl ClientBody {
    pub fn new(inner: Incoming, limit: Option<u64>) -> ClientBody {
        ClientBody {
            inner,
            limit,
            seen: 0,
            failed: None,
        }
    }

    /// Sets `failed` when the body fails.
    pub fn watched_by(mut self, failed: ClientBodyFailed) -> ClientBody {
        self.failed = Some(failed);
        self
    }

    fn fail(&self, error: ClientBodyError) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if let Some(failed) = &self.failed {
            failed.set();
        }
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return this.fail(ClientBodyError::Read(error)),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let (Some(data), Some(limit)) = (frame.data_ref(), this.limit) {
            this.seen = this.seen.saturating_add(data.len() as u64);
            if this.seen > limit {
                return this.fail(ClientBodyError::TooLarge { allowed: limit });
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: usize, value: &str) -> Request<()> {
        let mut builder = Request::get("/path");
        for i in 0..headers {
            builder = builder.header(format!("x-h{i}"), value);
        }
        builder.body(()).expect("valid request")
    }

    #[test]
    fn header_count_and_bytes_are_checked_against_their_keys() {
        let limits = ClientLimits {
            max_request_header_bytes: 1000,
            max_request_headers: 5,
            ..ClientLimits::default()
        };
        assert!(limits.check_head(&request(5, "v")).is_ok());
        let count = limits.check_head(&request(6, "v")).expect_err("6 > 5");
        assert_eq!(
            count.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert!(count.to_string().contains("max_request_headers"));
        let bytes = limits
            .check_head(&request(1, &"a".repeat(1000)))
            .expect_err("over 1000 bytes");
        assert!(bytes.to_string().contains("max_request_header_bytes"));
    }

    #[test]
    fn a_declared_length_over_the_limit_is_413() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, "11".parse().expect("valid"));
        assert!(check_declared_length(&headers, None).is_ok());
        assert!(check_declared_length(&headers, Some(11)).is_ok());
        let error = check_declared_length(&headers, Some(10)).expect_err("11 > 10");
        assert_eq!(error.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn backstops_stay_above_the_limits() {
        let limits = ClientLimits::default();
        assert!(limits.hyper_max_buf_size() > limits.max_request_header_bytes);
        assert!(limits.hyper_max_headers() > limits.max_request_headers);
        assert!(limits.h2_max_header_list_size() as usize > limits.max_request_header_bytes);
    }
}
