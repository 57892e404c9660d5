//! The config file: its TOML schema, one file per section, and the checks
//! that report every problem with line, column and key path.
//!
//! What is checked where: serde (TOML syntax, unknown keys, types,
//! durations), each section's file-only rules (listen addresses, metrics,
//! the override header, TLS keys, rollout policies), and then the table
//! build (`switchyard_proxy::RoutingTable::check`), the one place the rules
//! of routes, versions, endpoints and shadows live: its problems come keyed
//! by config path and are mapped back to the file here
//! ([`Config::span_of`]). Files the config names are read last
//! ([`Config::check_files`]).
//!
//! Sections: [`listen`], [`timeouts`], [`proxy`], [`admin`], [`metrics`],
//! [`route`] (routes and versions, and the conversion into the data plane's
//! `TableSpec`), [`routing`] (match headers, sticky, override), [`tls`],
//! [`shadow`], [`health`], [`rollout`], [`limits`], [`cluster`],
//! [`gateway_api`].

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use switchyard_proxy::{ListenerSettings, MetricsSettings, RoutingTable, UpstreamSettings};

pub mod admin;
pub mod cluster;
pub mod errors;
pub mod experiment;
pub mod flags;
pub mod gateway_api;
pub mod health;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod proxy;
pub mod rollout;
pub mod route;
pub mod routing;
pub mod shadow;
#[cfg(test)]
pub(crate) mod tests;
pub mod timeouts;
pub mod tls;
pub mod values;

pub use admin::{AdminConfig, NamedToken};
pub use cluster::{ClusterConfig, ClusterTls};
pub use errors::{line_column, ConfigError, ConfigErrors};
pub use health::{HealthCheckConfig, OutlierConfig};
pub use limits::Limits;
pub use listen::Listen;
pub use metrics::MetricsConfig;
pub use proxy::ProxyOptions;
pub use rollout::{
    Judge, JudgeKind, OnSuccess, RolloutConfig, RolloutPolicy, StatisticalPolicy, Tolerance,
};
pub use route::{RouteConfig, VersionConfig};
pub use shadow::ShadowConfig;
pub use timeouts::Timeouts;
pub use values::Dur;

/// The whole file. Unknown keys anywhere are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub proxy: ProxyOptions,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub flags: Vec<flags::FlagConfig>,
    /// Absent: a single process run from this file.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Routes from Kubernetes Gateway API HTTPRoute files.
    #[serde(default)]
    pub gateway_api: Option<gateway_api::GatewayApiConfig>,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::parse_checked(&Config::read(path)?, path)
    }

    /// The text of a config file, or why it cannot be read.
    pub fn read(path: &Path) -> Result<String, ConfigErrors> {
        std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source_name: path.display().to_string(),
            errors: vec![ConfigError {
                path: String::new(),
                position: None,
                message: format!("cannot read the file: {e}"),
            }],
        })
    }

    /// Parses and validates the text of the file at `path`, including that
    /// every certificate, key and CA file it names can be used. TOML only:
    /// `crate::gateway_api::parse_checked` also reads HTTPRoute YAML and
    /// the files `[gateway_api]` names.
    pub fn parse_checked(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let source_name = path.display().to_string();
        let config = Config::parse(text, &source_name)?;
        let errors = config.check_files(Some(text), path.parent());
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors {
                source_name,
                errors,
            })
        }
    }

    /// Parses and validates TOML text; `source_name` prefixes each error.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source_name: source_name.to_owned(),
            errors,
        };
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // Spanned<T> shows up as a private map key in the path.
            let path = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            fail(vec![ConfigError {
                path: if path == "." { String::new() } else { path },
                position: inner.span().map(|span| line_column(text, span.start)),
                message: inner.message().trim().to_owned(),
            }])
        })?;
        let errors = config.validate(text);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(fail(errors))
        }
    }

    /// The sections' own rules, then the table build's, each problem with
    /// its position in `text`.
    fn validate(&self, text: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut error = |path: String, span: Range<usize>, message: String| {
            errors.push(ConfigError {
                path,
                position: (span.end > 0).then(|| line_column(text, span.start)),
                message,
            })
        };
        self.listen.validate(&mut error);
        routing::validate_proxy(&self.proxy, &mut error);
        self.metrics.validate(&mut error);
        if let Some(cluster) = &self.cluster {
            cluster.validate(&mut error);
            if !cfg!(feature = "fleet") {
                error(
                    "cluster".into(),
                    cluster.etcd.span(),
                    "this switchyard was built without fleet support: build it with \
                     `cargo build --release --features fleet` (needs protoc: Debian's \
                     protobuf-compiler and libprotobuf-dev), or remove [cluster]"
                        .into(),
                );
            }
        }
        let imports_routes = self
            .gateway_api
            .as_ref()
            .is_some_and(|g| !g.files.is_empty());
        if self.routes.is_empty() && !imports_routes {
            error(
                "routes".into(),
                0..0,
                "no routes: add at least one [[routes]] (or name HTTPRoute files in [gateway_api] files)".into(),
            );
        }
        for (r, route) in self.routes.iter().enumerate() {
            for (v, version) in route.versions.get_ref().iter().enumerate() {
                tls::validate_version(
                    version,
                    &|key| format!("routes[{r}].versions[{v}].{key}"),
                    &mut error,
                );
            }
            if let Some(rollout) = &route.rollout {
                rollout.validate(route, r, &mut error);
            }
            if let (Some(path), false) = (&route.path, route.path_prefix.span().is_empty()) {
                error(
                    format!("routes[{r}].path"),
                    path.span(),
                    "set path (an exact path) or path_prefix, not both".into(),
                );
            }
        }
        for (f, flag) in self.flags.iter().enumerate() {
            flag.validate(f, &mut error);
        }
        for problem in RoutingTable::check(&self.table_spec()) {
            let span = self.span_of(&problem.path);
            error(problem.path, span, problem.error.to_string());
        }
        errors
    }

    pub fn data_addr(&self) -> std::net::SocketAddr {
        self.listen.data_addr()
    }

    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.listen.admin_addr()
    }

    pub fn upstream_settings(&self) -> UpstreamSettings {
        UpstreamSettings {
            connect_timeout: self.timeouts.connect.0,
            pool_idle_timeout: self.timeouts.upstream_idle.0,
            pool_max_idle_per_host: self.proxy.max_idle_per_endpoint,
            files_dir: None,
        }
    }

    /// The guarded flags' policies, by flag name.
    pub fn flag_guards(&self) -> std::collections::BTreeMap<String, flags::GuardPolicy> {
        flags::guards(&self.flags)
    }

    pub fn metrics_settings(&self) -> MetricsSettings {
        self.metrics.settings()
    }

    pub fn listener_settings(&self) -> ListenerSettings {
        ListenerSettings {
            client_idle_timeout: self.timeouts.client_idle.0,
            drain_timeout: self.timeouts.drain.0,
            tls: None,
            limits: self.limits.client(),
            connections_rejected: Default::default(),
        }
    }
}
