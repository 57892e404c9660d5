//! switchyard's control plane: the config file, the process that runs the
//! data plane from it, the admin API, reloads, and the automated decisions
//! (health, rollouts). It builds routing tables and hands them to the data
//! plane through `switchyard_proxy::TableHandle`.
//!
//! The modules, in the order data flows through them:
//! [`config`] (the file: one schema per section, errors with line and
//! column; the rules of routes are the table build's; [`gateway_api`]
//! reads Kubernetes HTTPRoute YAML into it and prints the table back) →
//! [`run`] (start: listeners, the first table, the tasks below) →
//! [`plane`] (the only way the live table changes: each change checked,
//! built, swapped, recorded in [`history`] and told to observers; the
//! traffic operations set weights, promote, rollback and flip) →
//! `switchyard_proxy::TableHandle`, which the data plane reads.
//!
//! Changes reach the plane from [`admin`] (the HTTP API: auth, router, JSON
//! views; [`admin::api`] is the vocabulary other modules' endpoints use),
//! [`reload`] (the file, on change or SIGHUP; [`tls_reload`] for
//! certificates), [`health`] (active checks), [`rollout`] (progressive
//! rollouts judged on metrics) and [`cluster`] (a fleet's shared table on
//! etcd, applied through the plane). Read-only views, as admin endpoints:
//! [`stats`], [`shadows`], [`experiments`] (the A/B [`readout`] over
//! [`statistics`]), [`dashboard`]. Clients of the admin API:
//! [`ctl`] (`switchyard ctl`) and [`demo`].

#![forbid(unsafe_code)]

pub mod admin;
#[cfg(feature = "fleet")]
pub mod cluster;
pub mod columns;
pub mod config;
pub mod ctl;
pub mod dashboard;
pub mod demo;
pub mod experiments;
pub mod flags;
pub mod gateway_api;
pub mod health;
pub mod history;
#[cfg(test)]
#[path = "../../proxy/src/layering.rs"]
mod layering;
pub mod load;
pub mod ofrep;
pub mod plane;
pub mod readout;
pub mod reload;
pub mod rollout;
pub mod run;
pub mod shadows;
pub mod statistics;
pub mod stats;
pub mod tls_reload;

pub use config::{Config, ConfigErrors};
pub use run::{start, start_with, Running, StartError, StartOptions};

/// Errors reported to a person as text (CLI, demo).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
