//! Route matching: which route of the table answers a (host, path) pair.
//!
//! Routes are ordered once, when the table is built, so a request walks a
//! short list and takes the first match: exact hosts before wildcard hosts
//! (longer suffix first) before any-host routes, and within each, the longest
//! path prefix first. That is the order nginx (server_name, then location) and
//! Envoy (virtual host, then route) resolve in, except that a request whose
//! exact host has no matching prefix falls through to wildcard and any-host
//! routes instead of answering 404.

use std::cmp::Ordering;

/// The host part of a route's match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `*` or no host given: every host.
    Any,
    /// `api.example.com`: that host only (compared without port, lowercase).
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; matches any subdomain.
    Suffix(String),
}

impl HostMatch {
    /// Parses the config form (`*`, `*.example.com`, `example.com`).
    pub fn parse(host: Option<&str>) -> Result<HostMatch, String> {
        let Some(host) = host else {
            return Ok(HostMatch::Any);
        };
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty() || host == "*" {
            return Ok(HostMatch::Any);
        }
        if let Some(rest) = host.strip_prefix("*.") {
            check_host_chars(rest)?;
            return Ok(HostMatch::Suffix(format!(".{rest}")));
        }
        check_host_chars(&host)?;
        Ok(HostMatch::Exact(host))
    }

    #[inline]
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(exact) => exact == host,
            HostMatch::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }

    /// Higher is more specific.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(_) => (2, 0),
            HostMatch::Suffix(suffix) => (1, suffix.len()),
            HostMatch::Any => (0, 0),
        }
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Any => f.write_str("*"),
            HostMatch::Exact(host) => f.write_str(host),
            HostMatch::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

fn check_host_chars(host: &str) -> Result<(), String> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{host}' is not a host name: use an exact host, '*.example.com' or '*'"
        ))
    }
}

/// Order in which routes are tried: most specific first.
pub fn match_order(a: (&HostMatch, &str), b: (&HostMatch, &str)) -> Ordering {
    b.0.rank()
        .cmp(&a.0.rank())
        .then_with(|| b.1.len().cmp(&a.1.len()))
}

/// The request's host, lowercase and without port, from the Host header or
/// (HTTP/2) the URI authority.
pub fn request_host<B>(req: &http::Request<B>) -> Option<String> {
    let raw = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())?;
    Some(strip_port(raw).to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows them.
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_forms() {
        assert_eq!(HostMatch::parse(None), Ok(HostMatch::Any));
        assert_eq!(HostMatch::parse(Some("*")), Ok(HostMatch::Any));
        assert_eq!(
            HostMatch::parse(Some("*.Example.com")),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        assert_eq!(
            HostMatch::parse(Some("api.example.com")),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert!(HostMatch::parse(Some("a b")).is_err());
        assert!(HostMatch::parse(Some("*.")).is_err());
    }

    #[test]
    fn wildcard_needs_a_subdomain() {
        let m = HostMatch::parse(Some("*.example.com")).expect("valid");
        assert!(m.matches("a.example.com"));
        assert!(!m.matches("example.com"));
        assert!(!m.matches("badexample.com"));
    }

    #[test]
    fn host_header_is_normalised() {
        let req = http::Request::builder()
            .header("host", "API.example.com:8080")
            .body(())
            .expect("request");
        assert_eq!(request_host(&req).as_deref(), Some("api.example.com"));
        let req = http::Request::builder()
            .uri("http://[::1]:80/x")
            .body(())
            .expect("request");
        assert_eq!(request_host(&req).as_deref(), Some("[::1]"));
    }

    #[test]
    fn order_prefers_specific_host_then_long_prefix() {
        let any = HostMatch::Any;
        let exact = HostMatch::Exact("a".into());
        assert_eq!(match_order((&exact, "/"), (&any, "/long")), Ordering::Less);
        assert_eq!(match_order((&any, "/long"), (&any, "/")), Ordering::Less);
    }
}
