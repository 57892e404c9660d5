//! switchyard's data plane: an HTTP proxy that splits each route's traffic
//! between versions by weight, reading one lock-free, hot-swappable routing
//! table. The control plane (`switchyard-control`) builds tables and hands
//! them over through [`TableHandle`]; nothing here depends on it.
//!
//! The request path, in the order a request meets it:
//! [`listener`] (accept, HTTP/1.1 + h2c, or [`tls`] with ALPN h2; the
//! [`client_idle`] timeout) →
//! [`handler`] (load table, [`route`], pick the version by [`select`]:
//! override, [`sticky`] key or [`split`] weight) → [`shadow`] (copies to
//! shadow targets, never awaited) → [`forward`] (rewrite, pooled upstream
//! call, [`pool`]) → back through
//! [`handler`] (response headers; a 101 becomes an [`upgrade`] tunnel) →
//! [`metrics`] (the request recorded when its response body ends).
//! [`error`] turns failures into responses; [`coalesce`] sends small
//! vectored writes, both ways, as one write.

#![forbid(unsafe_code)]

pub mod body;
pub mod client_idle;
pub mod coalesce;
pub mod error;
pub mod forward;
pub mod handler;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod route;
pub mod select;
pub mod shadow;
pub mod split;
pub mod sticky;
pub mod table;
pub mod tee;
pub mod tls;
pub mod upgrade;

pub use error::{ProxyError, UpstreamErrorKind};
pub use forward::{Transport, Upstream, UpstreamSettings, UpstreamTls};
pub use handler::Proxy;
pub use listener::{bind, serve, ListenerSettings};
pub use metrics::{Metrics, MetricsSettings};
pub use select::VersionOverride;
pub use shadow::{ShadowResult, ShadowSpec};
pub use sticky::StickySpec;
pub use table::{
    RouteSpec, RoutingTable, Settings, TableError, TableHandle, TableSpec, VersionSpec,
};
