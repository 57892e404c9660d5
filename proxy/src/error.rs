//! What can go wrong on the request path, where it came from, and the
//! response (status and plain-text body) a client sees for it.

use std::time::Duration;

use http::{header, Response, StatusCode};

use crate::body::{full, ProxyBody};

/// How an upstream call failed; also the `kind` label of the error metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// No connection could be made (refused, unreachable, DNS).
    Connect,
    /// Connect or response headers took longer than allowed.
    Timeout,
    /// The connection was closed or reset mid-exchange.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 4] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for host '{host}' and path '{path}'")]
    NoRoute { host: String, path: String },
    #[error("route '{route}' has no version with weight above 0 to serve this request")]
    NoVersion { route: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request's headers exceed {key} ({allowed}); send fewer or smaller headers, or raise [limits] {key}")]
    HeadersTooLarge { key: &'static str, allowed: usize },
    #[error(
        "the request body is larger than the route's max_request_body_bytes ({allowed} bytes)"
    )]
    BodyTooLarge { allowed: u64 },
    /// The client's body broke off or was malformed: the client's fault,
    /// counted as a client abort, never as the version's upstream error.
    #[error("{0}")]
    ClientBody(String),
    #[error("version '{version}' is at its {key} ({allowed}); try again later")]
    Overflow {
        version: String,
        key: &'static str,
        allowed: u32,
    },
    #[error("{}", upstream_message(*.kind, version, endpoint, detail))]
    Upstream {
        kind: UpstreamErrorKind,
        version: String,
        endpoint: String,
        detail: String,
    },
}

fn upstream_message(
    kind: UpstreamErrorKind,
    version: &str,
    endpoint: &str,
    detail: &str,
) -> String {
    match kind {
        UpstreamErrorKind::Connect => {
            format!("cannot connect to version '{version}' endpoint {endpoint}: {detail}")
        }
        UpstreamErrorKind::Timeout => {
            format!("version '{version}' endpoint {endpoint} timed out: {detail}")
        }
        UpstreamErrorKind::Reset => {
            format!("version '{version}' endpoint {endpoint} closed the connection: {detail}")
        }
        UpstreamErrorKind::Protocol => {
            format!("version '{version}' endpoint {endpoint} sent an invalid response: {detail}")
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoVersion { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { kind, .. } => match kind {
                UpstreamErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
        }
    }

    /// Classifies a failed upstream call.
    pub fn upstream(
        error: &crate::upstream::UpstreamError,
        version: &str,
        endpoint: &str,
    ) -> ProxyError {
        let kind = classify(error);
        ProxyError::Upstream {
            kind,
            version: version.into(),
            endpoint: endpoint.into(),
            detail: error_chain(error),
        }
    }

    /// The client went away or broke its request (counted as aborted).
    pub fn is_client_abort(&self) -> bool {
        matches!(self, ProxyError::ClientBody(_))
    }

    pub fn timeout(version: &str, endpoint: &str, after: Duration) -> ProxyError {
        ProxyError::Upstream {
            kind: UpstreamErrorKind::Timeout,
            version: version.into(),
            endpoint: endpoint.into(),
            detail: format!("no response headers within {after:?}"),
        }
    }

    pub fn upstream_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            ProxyError::Upstream { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The plain-text response a client sees.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let mut response = Response::new(full(format!("switchyard: {self}\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

fn classify(error: &crate::upstream::UpstreamError) -> UpstreamErrorKind {
    match kind_in_chain(Some(error.cause()), error.is_connect()) {
        Some(kind) => kind,
        None if error.is_connect() => UpstreamErrorKind::Connect,
        None => UpstreamErrorKind::Protocol,
    }
}

/// Classifies a failure while reading an upstream response body (the
/// headers had arrived, so the connection broke or the framing was bad).
pub fn body_error_kind(error: &(dyn std::error::Error + 'static)) -> UpstreamErrorKind {
    kind_in_chain(Some(error), false).unwrap_or(UpstreamErrorKind::Reset)
}

/// The kind named by the first recognised cause in an error chain.
fn kind_in_chain(
    mut source: Option<&(dyn std::error::Error + 'static)>,
    is_connect: bool,
) -> Option<UpstreamErrorKind> {
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return Some(UpstreamErrorKind::Timeout),
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
                    if !is_connect =>
                {
                    return Some(UpstreamErrorKind::Reset)
                }
                _ => {}
            }
        }
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() || hyper_error.is_canceled() {
                return Some(UpstreamErrorKind::Reset);
            }
            if hyper_error.is_parse() || hyper_error.is_parse_status() {
                return Some(UpstreamErrorKind::Protocol);
            }
        }
        source = cause.source();
    }
    None
}

/// "a: b: c" from an error and its sources, for a message a person reads.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_failure() {
        let no_route = ProxyError::NoRoute {
            host: "h".into(),
            path: "/p".into(),
        };
        assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
        assert!(no_route.to_string().contains("'h'"));
        let timeout = ProxyError::timeout("canary", "127.0.0.1:1", Duration::from_millis(5));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(timeout.to_string().contains("canary"));
    }
}
