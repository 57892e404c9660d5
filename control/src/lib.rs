//! switchyard's control plane: the config file, the process that runs the
//! data plane from it, and (as they land) the admin API, reload and health
//! decisions. It builds routing tables and hands them to the data plane
//! through `switchyard_proxy::TableHandle`.

pub mod config;
pub mod demo;
pub mod run;

pub use config::{Config, ConfigErrors};
pub use run::{start, Running, StartError};

/// Errors reported to a person as text (CLI, demo).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
