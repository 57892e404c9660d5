//! `[timeouts]`: how long each wait of the proxy may last.

use serde::Deserialize;

use super::values::{secs, Dur};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect to an upstream endpoint.
    #[serde(default = "secs::<2>")]
    pub connect: Dur,
    /// Upstream response headers; a route's `timeout` overrides it.
    #[serde(default = "secs::<30>")]
    pub upstream_response: Dur,
    /// An HTTP/1.1 client connection with no request in flight that starts
    /// none for this long is closed (idle keep-alive, trickled headers).
    #[serde(default = "secs::<60>")]
    pub client_idle: Dur,
    /// Idle pooled upstream connections are closed after this.
    #[serde(default = "secs::<90>")]
    pub upstream_idle: Dur,
    /// An upgraded (WebSocket) connection with no bytes either way for this
    /// long is closed.
    #[serde(default = "secs::<3600>")]
    pub tunnel_idle: Dur,
    /// Shutdown waits this long for in-flight requests.
    #[serde(default = "secs::<10>")]
    pub drain: Dur,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: secs::<2>(),
            upstream_response: secs::<30>(),
            client_idle: secs::<60>(),
            upstream_idle: secs::<90>(),
            tunnel_idle: secs::<3600>(),
            drain: secs::<10>(),
        }
    }
}
