//! switchyard's data plane: an HTTP proxy that splits each route's traffic
//! between versions by weight, reading one lock-free, hot-swappable routing
//! table. The control plane (`switchyard-control`) builds tables and hands
//! them over through [`TableHandle`]; nothing here depends on it.
//!
//! The request path, in the order a request meets it:
//! [`listener`] (accept, HTTP/1.1 + h2c) → [`handler`] (load table, route,
//! pick) → [`shadow`] (copies to shadow targets, never awaited) → [`forward`]
//! (rewrite, pooled upstream call) → back through
//! [`handler`] (response headers). [`error`] turns failures into responses.

pub mod body;
pub mod error;
pub mod forward;
pub mod handler;
pub mod listener;
pub mod metrics;
pub mod route;
pub mod shadow;
pub mod split;
pub mod table;
pub mod tee;

pub use error::{ProxyError, UpstreamErrorKind};
pub use forward::{Upstream, UpstreamSettings};
pub use handler::Proxy;
pub use listener::{bind, serve, ListenerSettings};
pub use metrics::{Metrics, MetricsSettings};
pub use shadow::{ShadowResult, ShadowSpec};
pub use table::{
    RouteSpec, RoutingTable, Settings, TableError, TableHandle, TableSpec, VersionSpec,
};
