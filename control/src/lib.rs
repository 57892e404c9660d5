//! switchyard's control plane: the config file, the process that runs the
//! data plane from it, and (as they land) the admin API, reload and health
//! decisions. It builds routing tables and hands them to the data plane
//! through `switchyard_proxy::TableHandle`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod ctl;
pub mod dashboard;
pub mod demo;
pub mod health;
pub mod history;
pub mod plane;
pub mod reload;
pub mod rollout;
pub mod run;
pub mod shadows;
pub mod stats;
pub mod tls_reload;

pub use config::{Config, ConfigErrors};
pub use run::{start, start_with, Running, StartError, StartOptions};

/// Errors reported to a person as text (CLI, demo).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
