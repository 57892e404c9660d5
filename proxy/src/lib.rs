//! switchyard's data plane: an HTTP proxy that splits each route's traffic
//! between versions by weight, reading one lock-free, hot-swappable routing
//! table. The control plane (`switchyard-control`) builds tables and hands
//! them over through [`TableHandle`]; nothing here depends on it.
//!
//! What the control plane hands over: a [`TableSpec`] (plain data) →
//! [`table`] (the build, where every rule of a spec is checked and each
//! problem keyed by its config path; [`names`] holds the rules for names and
//! endpoints) → the live [`RoutingTable`] behind the [`TableHandle`].
//!
//! The request path, in the order a request meets it:
//! [`listener`] (accept, HTTP/1.1 + h2c, or [`tls`] with ALPN h2; the
//! [`client_idle`] timeout; each client a [`connection`], served by
//! [`idle_park`], which frees an idle HTTP/1.1 connection's buffers, with
//! [`rewind`] putting read bytes back) →
//! [`handler`] (named phases over one per-request exchange: [`route`] →
//! the unit's [`flags`] named in a request header → pick the version by [`select`]: override, [`sticky`] key or [`split`]
//! weight, skipping endpoints [`health`] marks out → [`forward`] rewrites
//! the request → [`shadow`] copies it, never awaited → [`upstream`] sends it
//! over the version's transport through its [`pool`] → the response, whose
//! outcome feeds [`health`]'s outlier accounting and a route's A/B
//! [`experiment`] counts; a 101 becomes an [`upgrade`] tunnel) → [`metrics`]
//! (the request recorded when its response body ends; [`latency`] sizes its
//! histograms and the flags'). [`body`] and [`tee`] are the body types that stream between
//! them; [`error`] turns failures into responses; [`coalesce`] sends small
//! vectored writes, both ways, as one write.

#![forbid(unsafe_code)]

pub mod body;
pub mod breaker;
pub mod client_idle;
pub mod coalesce;
pub mod connection;
pub mod error;
pub mod experiment;
pub mod flags;
pub mod forward;
pub mod handler;
pub mod health;
pub mod idle_park;
pub mod latency;
#[cfg(test)]
mod layering;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod pool;
pub mod rewind;
pub mod route;
pub mod select;
pub mod shadow;
pub mod split;
pub mod sticky;
pub mod table;
pub mod tee;
pub mod tls;
pub mod upgrade;
pub mod upstream;

pub use breaker::BreakerLimits;
pub use error::{ProxyError, UpstreamErrorKind};
pub use experiment::{ExperimentSpec, GoalSpec, VariantSnapshot};
pub use flags::FlagSpec;
pub use handler::Proxy;
pub use limits::ClientLimits;
pub use listener::{bind, serve, serve_stream, ListenerSettings};
pub use metrics::{Metrics, MetricsSettings};
pub use shadow::{ShadowResult, ShadowSpec};
pub use sticky::StickySpec;
pub use table::{
    RouteSpec, RoutingTable, Settings, TableError, TableHandle, TableProblem, TableSpec,
    VersionOverride, VersionSpec,
};
pub use upstream::{Transport, Upstream, UpstreamSettings, UpstreamTls};

#[cfg(test)]
mod in_memory_tests;
