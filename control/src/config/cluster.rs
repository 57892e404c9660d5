//! `[cluster]`: the etcd fleet this process joins. Absent: a single process
//! run from its file, as always. The connection itself is `crate::cluster`'s.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::values::{secs, Dur};

/// `[cluster]`: etcd endpoints, the fleet's key prefix and this replica's
/// name. The password never sits in the file: it comes from the
/// environment variable `SWITCHYARD_ETCD_PASSWORD`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `http://host:port` or `https://host:port` (with `[cluster.tls]`).
    pub etcd: Spanned<Vec<String>>,
    /// One fleet per prefix: every key of the fleet lives under it.
    #[serde(default = "default_prefix")]
    pub prefix: Spanned<String>,
    /// This replica in `GET /api/v1/fleet`; default: hostname and data port.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// etcd user (the password: `SWITCHYARD_ETCD_PASSWORD`).
    #[serde(default)]
    pub username: Option<String>,
    /// How long a replica that stopped heartbeating stays listed.
    #[serde(default = "secs::<5>")]
    pub lease_ttl: Dur,
    /// How often this replica publishes its figures for the fleet's rollout
    /// judge and `stats?scope=fleet` (one small etcd write each time).
    #[serde(default = "secs::<1>")]
    pub publish_interval: Dur,
    #[serde(default)]
    pub tls: Option<ClusterTls>,
}

/// `[cluster.tls]`: trust for etcd's certificate and, optionally, this
/// replica's client certificate. Paths are relative to the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// PEM CA that signed etcd's server certificate.
    pub ca: PathBuf,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "/switchyard/default".to_owned())
}

impl ClusterConfig {
    pub fn validate(&self, error: &mut impl FnMut(String, Range<usize>, String)) {
        let endpoints = self.etcd.get_ref();
        if endpoints.is_empty() {
            error(
                "cluster.etcd".into(),
                self.etcd.span(),
                "no etcd endpoints: list at least one, e.g. [\"http://127.0.0.1:2379\"]".into(),
            );
        }
        for endpoint in endpoints {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            if !scheme_ok {
                error(
                    "cluster.etcd".into(),
                    self.etcd.span(),
                    format!("etcd endpoint '{endpoint}' needs a scheme: write http://{endpoint} or https://{endpoint}"),
                );
            } else if endpoint.starts_with("https://") && self.tls.is_none() {
                error(
                    "cluster.etcd".into(),
                    self.etcd.span(),
                    format!("etcd endpoint '{endpoint}' is https: add [cluster.tls] with the CA that signed etcd's certificate"),
                );
            }
        }
        let prefix = self.prefix.get_ref();
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            error(
                "cluster.prefix".into(),
                self.prefix.span(),
                format!("prefix '{prefix}' must start with '/', name something and not end with '/', e.g. \"/switchyard/shop\""),
            );
        }
        if let Some(name) = &self.name {
            let text = name.get_ref();
            if text.is_empty() || text.contains('/') {
                error(
                    "cluster.name".into(),
                    name.span(),
                    format!("name '{text}' must be non-empty and contain no '/'"),
                );
            }
        }
        if self.lease_ttl.0 < std::time::Duration::from_secs(2) {
            error(
                "cluster.lease_ttl".into(),
                0..0,
                "lease_ttl must be at least \"2s\" (etcd leases count whole seconds)".into(),
            );
        }
        if self.publish_interval.0 < std::time::Duration::from_millis(100) {
            error(
                "cluster.publish_interval".into(),
                0..0,
                "publish_interval must be at least \"100ms\" (each publication is an etcd write)"
                    .into(),
            );
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                error(
                    "cluster.tls".into(),
                    0..0,
                    "a client certificate needs both cert and key (or neither)".into(),
                );
            }
        }
    }

    /// This replica's name: the configured one, else hostname and data port.
    pub fn replica_name(&self, data_port: u16) -> String {
        if let Some(name) = &self.name {
            return name.get_ref().clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "switchyard".into());
        format!("{host}-{data_port}")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ROUTES: &str = "[[routes]]\nname = \"web\"\n[[routes.versions]]\nname = \"stable\"\nweight = 1\nendpoints = [\"127.0.0.1:9001\"]\n";

    fn errors(cluster: &str) -> String {
        match Config::parse(&format!("{cluster}\n{ROUTES}"), "t") {
            Ok(_) => String::new(),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn a_good_section_parses_and_absent_means_single_process() {
        let config = Config::parse(ROUTES, "t").expect("valid");
        assert!(config.cluster.is_none());
        let text = format!("[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/switchyard/shop\"\nname = \"pod-7\"\n{ROUTES}");
        let config = Config::parse(&text, "t").expect("valid");
        let cluster = config.cluster.expect("cluster");
        assert_eq!(cluster.prefix.get_ref(), "/switchyard/shop");
        assert_eq!(cluster.replica_name(8080), "pod-7");
    }

    #[test]
    fn bad_values_are_named_with_what_to_write() {
        let e = errors("[cluster]\netcd = []");
        assert!(
            e.contains("cluster.etcd") && e.contains("at least one"),
            "{e}"
        );
        let e = errors("[cluster]\netcd = [\"127.0.0.1:2379\"]");
        assert!(e.contains("http://127.0.0.1:2379"), "{e}");
        let e = errors("[cluster]\netcd = [\"https://e:2379\"]");
        assert!(e.contains("[cluster.tls]"), "{e}");
        let e = errors("[cluster]\netcd = [\"http://e:2379\"]\nprefix = \"shop/\"");
        assert!(e.contains("cluster.prefix"), "{e}");
        let e = errors("[cluster]\netcd = [\"http://e:2379\"]\nname = \"a/b\"");
        assert!(e.contains("cluster.name"), "{e}");
        let e = errors("[cluster]\netcd = [\"http://e:2379\"]\nlease_ttl = \"1s\"");
        assert!(e.contains("lease_ttl"), "{e}");
        let e = errors("[cluster]\netcd = [\"https://e:2379\"]\n[cluster.tls]\nca = \"ca.pem\"\ncert = \"c.pem\"");
        assert!(e.contains("both cert and key"), "{e}");
        let e = errors("[cluster]\netcd = [\"http://e:2379\"]\nbogus = 1");
        assert!(e.contains("bogus"), "{e}");
    }
}
