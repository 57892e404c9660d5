//! `[gateway_api]`: Kubernetes Gateway API HTTPRoute files whose routes
//! join the file's own, and how their backends are reached. The files are
//! read by `crate::gateway_api`, which depends on this module and not the
//! other way round.
//!
//! ```toml
//! [gateway_api]
//! files = ["routes.yaml"]                     # relative to this file
//! service_address = "127.0.0.1:{port}"        # default: the Service's cluster DNS name
//! ```

use serde::Deserialize;

/// The default `service_address`: a Service's cluster DNS name.
pub const DEFAULT_SERVICE_ADDRESS: &str = "{name}.{namespace}.svc.cluster.local:{port}";

/// `[gateway_api]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayApiConfig {
    /// YAML files of HTTPRoutes, relative to the TOML file; their routes
    /// follow the TOML file's own `[[routes]]`.
    #[serde(default)]
    pub files: Vec<String>,
    /// Where a backendRef is reached: `{name}`, `{namespace}` and `{port}`
    /// are the backendRef's.
    #[serde(default = "default_service_address")]
    pub service_address: String,
    /// The text of each file read, so a reload sees a change in them.
    #[serde(skip)]
    pub loaded: Vec<String>,
}

impl Default for GatewayApiConfig {
    fn default() -> Self {
        GatewayApiConfig {
            files: Vec::new(),
            service_address: default_service_address(),
            loaded: Vec::new(),
        }
    }
}

fn default_service_address() -> String {
    DEFAULT_SERVICE_ADDRESS.to_owned()
}
