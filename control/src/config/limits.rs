//! `[limits]`: what a client may send (header size and count, body size)
//! and how many connections and HTTP/2 streams it may hold. Per-route body
//! limits (`max_request_body_bytes`) and per-version circuit breaking
//! (`max_requests`, `max_pending`) are keys of [`super::route`]; the data
//! plane's side is `switchyard_proxy::limits` and `::breaker`.

use std::num::{NonZeroU32, NonZeroUsize};

use serde::Deserialize;
use switchyard_proxy::ClientLimits;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Request line plus headers; more is answered 431 (Envoy: 60 KiB,
    /// nginx: 4 × 8 KiB buffers).
    #[serde(default = "default_header_bytes")]
    pub max_request_header_bytes: NonZeroUsize,
    /// Header fields per request; more is answered 431 (Envoy: 100).
    #[serde(default = "default_headers")]
    pub max_request_headers: NonZeroUsize,
    /// Request body bytes for routes that set no `max_request_body_bytes`
    /// of their own; unset: unlimited (Envoy's and nginx's 1 MiB refuses
    /// ordinary uploads).
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// Open client connections; beyond it new ones are closed at once and
    /// counted in `switchyard_connections_rejected_total`.
    #[serde(default = "default_connections")]
    pub max_connections: NonZeroUsize,
    /// Concurrent HTTP/2 streams per client connection (nginx: 128).
    #[serde(default = "default_streams")]
    pub max_concurrent_streams: NonZeroU32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: default_header_bytes(),
            max_request_headers: default_headers(),
            max_request_body_bytes: None,
            max_connections: default_connections(),
            max_concurrent_streams: default_streams(),
        }
    }
}

impl Limits {
    /// The data listener's limits.
    pub fn client(&self) -> ClientLimits {
        ClientLimits {
            max_request_header_bytes: self.max_request_header_bytes.get(),
            max_request_headers: self.max_request_headers.get(),
            max_connections: self.max_connections.get(),
            max_concurrent_streams: self.max_concurrent_streams.get(),
        }
    }
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

fn default_header_bytes() -> NonZeroUsize {
    nonzero(ClientLimits::default().max_request_header_bytes)
}

fn default_headers() -> NonZeroUsize {
    nonzero(ClientLimits::default().max_request_headers)
}

fn default_connections() -> NonZeroUsize {
    nonzero(ClientLimits::default().max_connections)
}

fn default_streams() -> NonZeroU32 {
    NonZeroU32::new(ClientLimits::default().max_concurrent_streams).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ROUTE: &str = r#"
[[routes]]
name = "web"
[[routes.versions]]
name = "stable"
weight = 1
endpoints = ["127.0.0.1:9001"]
"#;

    #[test]
    fn defaults_are_envoy_like_and_keys_override_them() {
        let config = Config::parse(ROUTE, "t").expect("valid");
        let client = config.limits.client();
        assert_eq!(client.max_request_header_bytes, 64 * 1024);
        assert_eq!(client.max_request_headers, 100);
        assert_eq!(client.max_connections, 50_000);
        let text = format!("[limits]\nmax_request_headers = 7\nmax_connections = 3\n{ROUTE}");
        let client = Config::parse(&text, "t").expect("valid").limits.client();
        assert_eq!((client.max_request_headers, client.max_connections), (7, 3));
    }

    #[test]
    fn zero_limits_are_refused_with_their_key() {
        let text = format!("[limits]\nmax_connections = 0\n{ROUTE}");
        let error = Config::parse(&text, "t")
            .expect_err("0 connections")
            .to_string();
        assert!(error.contains("max_connections"), "{error}");
        let text = ROUTE.replace("weight = 1", "weight = 1\nmax_requests = 0");
        let error = Config::parse(&text, "t")
            .expect_err("0 requests")
            .to_string();
        assert!(error.contains("max_requests"), "{error}");
    }

    #[test]
    fn a_route_body_limit_overrides_the_default() {
        let text = format!(
            "[limits]\nmax_request_body_bytes = 100\n{ROUTE}\n[[routes]]\nname = \"up\"\npath_prefix = \"/up\"\nmax_request_body_bytes = 5\n[[routes.versions]]\nname = \"stable\"\nweight = 1\nendpoints = [\"127.0.0.1:9001\"]\nmax_requests = 2\nmax_pending = 1\n"
        );
        let spec = Config::parse(&text, "t").expect("valid").table_spec();
        assert_eq!(spec.routes[0].max_request_body_bytes, Some(100));
        assert_eq!(spec.routes[1].max_request_body_bytes, Some(5));
        let breaker = spec.routes[1].versions[0].breaker;
        assert_eq!(
            (breaker.max_requests, breaker.max_pending),
            (Some(2), Some(1))
        );
    }
}
