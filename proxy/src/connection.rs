//! One downstream client connection as the request path sees it: the
//! client's address (rendered once for X-Forwarded-For) and the
//! connection's idle timer, told when a request starts and when the
//! connection becomes a tunnel.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::Version;

use crate::client_idle::{IdleWatch, InFlight};

/// A client connection. Its address is rendered for X-Forwarded-For once per
/// connection: formatting an IP costs more than the rest of the request
/// rewrite.
#[derive(Debug, Clone)]
pub struct ClientConnection {
    pub addr: SocketAddr,
    forwarded_ip: HeaderValue,
    /// The connection's idle timer, told about each request.
    idle: Option<Arc<IdleWatch>>,
}

impl ClientConnection {
    pub fn new(addr: SocketAddr) -> ClientConnection {
        let forwarded_ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientConnection {
            addr,
            forwarded_ip,
            idle: None,
        }
    }

    pub fn with_idle_watch(mut self, watch: Arc<IdleWatch>) -> ClientConnection {
        self.idle = Some(watch);
        self
    }

    /// The client's IP address as an X-Forwarded-For entry.
    pub fn forwarded_ip(&self) -> &HeaderValue {
        &self.forwarded_ip
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
