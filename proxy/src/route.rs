//! Route matching: which route of the table answers a request, by host,
//! path (a prefix, or exactly), and optionally method and header values
//! (exact, or a regular expression).
//!
//! Routes are ordered once, when the table is built, so a request walks a
//! short list and takes the first match: exact hosts before wildcard hosts
//! (longer suffix first) before any-host routes, and within each, the longest
//! path first (an exact path before a prefix of the same length), then
//! routes that require a method, then those that require header values
//! (more first) before those that do not: the Gateway API's HTTPRoute
//! precedence.
//! That is the order nginx (server_name, then location) and Envoy (virtual
//! host, then route) resolve in, except that a request whose exact host has
//! no matching prefix falls through to wildcard and any-host routes instead
//! of answering 404.

use std::cmp::Ordering;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use regex::bytes::Regex;

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
    if crate::names::is_name_text(host) {
        Ok(())
    } else {
        Err(format!(
            "'{host}' is not a host name: use an exact host, '*.example.com' or '*'"
        ))
    }
}

/// Header values a route requires (`match_headers`, `match_headers_regex`):
/// every listed header must be present with exactly that value, or a value
/// the expression matches whole. Empty for most routes, which then pay one
/// length check.
#[derive(Debug, Clone, Default)]
pub struct HeaderMatch {
    /// Sorted, so two routes requiring the same set compare equal.
    required: Box<[(HeaderName, HeaderValue)]>,
    /// Sorted by name and expression.
    patterns: Box<[(HeaderName, Regex)]>,
}

impl PartialEq for HeaderMatch {
    fn eq(&self, other: &Self) -> bool {
        self.required == other.required
            && self.patterns.len() == other.patterns.len()
            && self
                .patterns
                .iter()
                .zip(other.patterns.iter())
                .all(|((a, x), (b, y))| a == b && x.as_str() == y.as_str())
    }
}

impl Eq for HeaderMatch {}

impl HeaderMatch {
    /// Parses the config form (name → value); names are case-insensitive.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HeaderMatch, String> {
        let mut required = Vec::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("'{name}' is not a valid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("header '{name}': '{value}' is not a valid header value"))?;
            required.push((name, value));
        }
        required
            .sort_by(|a, b| (a.0.as_str(), a.1.as_bytes()).cmp(&(b.0.as_str(), b.1.as_bytes())));
        Ok(HeaderMatch {
            required: required.into_boxed_slice(),
            patterns: Box::default(),
        })
    }

    /// Adds the config form of `match_headers_regex` (name → expression,
    /// matched against the whole value, as Envoy's safe_regex is).
    pub fn with_patterns<'a>(
        mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HeaderMatch, String> {
        let mut patterns = Vec::new();
        for (name, pattern) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("'{name}' is not a valid header name"))?;
            let regex = regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    format!("header '{name}': '{pattern}' is not a regular expression: {e}")
                })?;
            patterns.push((name, regex));
        }
        patterns.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        self.patterns = patterns.into_boxed_slice();
        Ok(self)
    }

    #[inline]
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        (self.required.is_empty()
            || self
                .required
                .iter()
                .all(|(name, value)| headers.get_all(name).iter().any(|v| v == value)))
            && (self.patterns.is_empty()
                || self.patterns.iter().all(|(name, regex)| {
                    headers
                        .get_all(name)
                        .iter()
                        .any(|v| regex.is_match(v.as_bytes()))
                }))
    }

    pub fn len(&self) -> usize {
        self.required.len() + self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.required.is_empty() && self.patterns.is_empty()
    }
}

impl std::fmt::Display for HeaderMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, value)) in self.required.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(
                f,
                "{sep}{name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            )?;
        }
        for (i, (name, regex)) in self.patterns.iter().enumerate() {
            let sep = if i == 0 && self.required.is_empty() {
                ""
            } else {
                ", "
            };
            // Shown as written, without the anchors added to it.
            let pattern = regex.as_str();
            let pattern = pattern
                .strip_prefix("^(?:")
                .and_then(|p| p.strip_suffix(")$"))
                .unwrap_or(pattern);
            write!(f, "{sep}{name} ~ {pattern}")?;
        }
        Ok(())
    }
}

/// What a route's place in the match order depends on.
pub struct Rank<'a> {
    pub host: &'a HostMatch,
    pub path: &'a str,
    pub path_exact: bool,
    pub method: bool,
    pub headers: usize,
}

/// Order in which routes are tried: most specific first.
pub fn match_order(a: Rank<'_>, b: Rank<'_>) -> Ordering {
    b.host
        .rank()
        .cmp(&a.host.rank())
        .then_with(|| b.path.len().cmp(&a.path.len()))
        .then_with(|| b.path_exact.cmp(&a.path_exact))
        .then_with(|| b.method.cmp(&a.method))
        .then_with(|| b.headers.cmp(&a.headers))
}

/// The request's host, lowercase and without port, from the Host header or
/// (HTTP/2) the URI authority.
pub fn request_host<B>(req: &http::Request<B>) -> Option<std::borrow::Cow<'_, str>> {
    let raw = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())?;
    let host = strip_port(raw);
    // Hosts are almost always lowercase already: no allocation then.
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    })
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

    fn rank<'a>(
        host: &'a HostMatch,
        path: &'a str,
        exact: bool,
        method: bool,
        headers: usize,
    ) -> Rank<'a> {
        Rank {
            host,
            path,
            path_exact: exact,
            method,
            headers,
        }
    }

    #[test]
    fn order_prefers_specific_host_then_long_path_then_exact_method_headers() {
        let any = HostMatch::Any;
        let exact = HostMatch::Exact("a".into());
        assert_eq!(
            match_order(
                rank(&exact, "/", false, false, 0),
                rank(&any, "/long", false, false, 0)
            ),
            Ordering::Less
        );
        assert_eq!(
            match_order(
                rank(&any, "/long", false, false, 0),
                rank(&any, "/", false, false, 0)
            ),
            Ordering::Less
        );
        assert_eq!(
            match_order(
                rank(&any, "/", false, false, 1),
                rank(&any, "/", false, false, 0)
            ),
            Ordering::Less
        );
        assert_eq!(
            match_order(
                rank(&any, "/", false, false, 1),
                rank(&any, "/x", false, false, 0)
            ),
            Ordering::Greater
        );
        // The Gateway API's precedence: exact path, then method, then headers.
        assert_eq!(
            match_order(
                rank(&any, "/x", true, false, 0),
                rank(&any, "/x", false, true, 3)
            ),
            Ordering::Less
        );
        assert_eq!(
            match_order(
                rank(&any, "/x", false, true, 0),
                rank(&any, "/x", false, false, 3)
            ),
            Ordering::Less
        );
    }

    #[test]
    fn header_patterns_match_whole_values() {
        let m = HeaderMatch::parse([])
            .and_then(|m| m.with_patterns([("x-user", "beta-[0-9]+")]))
            .expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("beta-42"));
        assert!(m.matches(&headers));
        headers.insert("x-user", HeaderValue::from_static("beta-42x"));
        assert!(!m.matches(&headers), "anchored: the whole value must match");
        assert_eq!(m.to_string(), "x-user ~ beta-[0-9]+");
        assert!(HeaderMatch::parse([])
            .and_then(|m| m.with_patterns([("x", "(")]))
            .is_err());
    }

    #[test]
    fn header_match_requires_every_value() {
        let m = HeaderMatch::parse([("X-Beta", "1"), ("x-team", "qa")]).expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert("x-beta", HeaderValue::from_static("1"));
        assert!(!m.matches(&headers));
        headers.insert("x-team", HeaderValue::from_static("qa"));
        assert!(m.matches(&headers));
        headers.insert("x-beta", HeaderValue::from_static("2"));
        assert!(!m.matches(&headers));
        assert!(HeaderMatch::default().matches(&HeaderMap::new()));
        assert_eq!(
            HeaderMatch::parse([("x-team", "qa"), ("x-beta", "1")]).expect("valid"),
            m
        );
        assert!(HeaderMatch::parse([("bad name", "1")]).is_err());
        assert!(HeaderMatch::parse([("x-beta", "a\nb")]).is_err());
        assert_eq!(m.to_string(), "x-beta: 1, x-team: qa");
    }
}
