//! TLS keys of the config file: `[listen.tls]` (the listener's certificates)
//! and each version's `tls`, `ca_file`, `server_name` and `http2`; their
//! validation, the check that the files are usable (`switchyard check` and
//! start), and their data-plane form.
//!
//! ```toml
//! [listen]
//! data = "0.0.0.0:8443"
//! tls = { cert = "certs/site.pem", key = "certs/site.key" }
//!
//! # or several certificates, chosen by SNI (the first is the default):
//! [[listen.tls.certificates]]
//! cert = "certs/a.pem"
//! key = "certs/a.key"
//!
//! [[routes.versions]]
//! name = "canary"
//! endpoints = ["10.0.0.7:443"]
//! tls = true                      # HTTPS to the endpoints
//! ca_file = "certs/internal-ca.pem"   # default: the Mozilla roots
//! server_name = "canary.internal" # default: the endpoint's host
//! http2 = true                    # h2 (ALPN over TLS, h2c without)
//! ```
//!
//! Relative paths are relative to the config file's directory.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_proxy::tls::{self, CertFiles, ServerTls, TlsError};
use switchyard_proxy::{Transport, UpstreamTls};
use toml::Spanned;

use super::{line_column, Config, ConfigError, VersionConfig};

/// `[listen.tls]`: a certificate given directly (`cert`, `key`) comes
/// first, then `[[listen.tls.certificates]]` in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub certificates: Vec<CertConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// A certificate or CA file that cannot be used, with the key naming it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct TlsConfigError {
    pub key: String,
    pub source: TlsError,
}

/// One configured certificate: its key path, position and files.
struct Pair {
    key: String,
    span: Range<usize>,
    files: CertFiles,
}

fn resolve(dir: Option<&Path>, path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    match dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

impl ListenTls {
    fn pairs(&self, dir: Option<&Path>) -> Vec<Pair> {
        let direct = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(("listen.tls".to_owned(), cert, key)),
            _ => None,
        };
        let listed = self
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("listen.tls.certificates[{i}]"), &c.cert, &c.key));
        direct
            .into_iter()
            .chain(listed)
            .map(|(key, cert, key_file)| Pair {
                key,
                span: cert.span(),
                files: CertFiles {
                    cert: resolve(dir, cert.get_ref()),
                    key: resolve(dir, key_file.get_ref()),
                },
            })
            .collect()
    }
}

/// The syntactic checks of `[listen.tls]`.
pub fn validate_listen(tls: &ListenTls, error: &mut impl FnMut(String, Range<usize>, String)) {
    match (&tls.cert, &tls.key) {
        (Some(given), None) | (None, Some(given)) => error(
            "listen.tls".into(),
            given.span(),
            "give both cert and key (PEM files), or neither".into(),
        ),
        (None, None) if tls.certificates.is_empty() => error(
            "listen.tls".into(),
            0..0,
            "no certificate: set cert and key, or add [[listen.tls.certificates]]".into(),
        ),
        _ => {}
    }
}

/// The syntactic checks of a version's transport keys.
pub fn validate_version(
    version: &VersionConfig,
    at: &dyn Fn(&str) -> String,
    error: &mut impl FnMut(String, Range<usize>, String),
) {
    for (key, value) in [
        ("ca_file", &version.ca_file),
        ("server_name", &version.server_name),
    ] {
        if let (Some(value), false) = (value, version.tls) {
            error(at(key), value.span(), format!("{key} needs tls = true"));
        }
    }
    if let Some(name) = &version.server_name {
        if let Err(e) = tls::server_name(name.get_ref()) {
            error(at("server_name"), name.span(), e.to_string());
        }
    }
}

/// How the data plane talks to a version's endpoints.
pub fn transport(version: &VersionConfig) -> Transport {
    Transport {
        tls: version.tls.then(|| UpstreamTls {
            ca_file: version.ca_file.as_ref().map(|f| PathBuf::from(f.get_ref())),
            server_name: version.server_name.as_ref().map(|n| n.get_ref().clone()),
        }),
        http2: version.http2,
    }
}

impl Config {
    /// Loads every certificate, key and CA file the config names, relative
    /// to `dir`, and reports each one that cannot be used (with line and
    /// column when the config's `text` is given).
    pub fn check_files(&self, text: Option<&str>, dir: Option<&Path>) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut report = |path: String, span: Range<usize>, source: TlsError| {
            errors.push(ConfigError {
                path,
                position: text
                    .filter(|_| span.end > 0)
                    .map(|text| line_column(text, span.start)),
                message: source.to_string(),
            });
        };
        if let Some(listen_tls) = &self.listen.tls {
            let provider = tls::provider();
            for pair in listen_tls.pairs(dir) {
                if let Err(e) = tls::load_cert(&pair.files, &provider) {
                    report(pair.key, pair.span, e);
                }
            }
        }
        for (r, route) in self.routes.iter().enumerate() {
            for (v, version) in route.versions.get_ref().iter().enumerate() {
                let Some(ca_file) = version.ca_file.as_ref().filter(|_| version.tls) else {
                    continue;
                };
                let path = resolve(dir, ca_file.get_ref());
                if let Err(e) = tls::load_roots(Some(&path)) {
                    report(
                        format!("routes[{r}].versions[{v}].ca_file"),
                        ca_file.span(),
                        e,
                    );
                }
            }
        }
        errors
    }

    /// The listener's TLS, if `[listen.tls]` is set; relative paths are
    /// relative to `dir`. Run [`Config::check_files`] first for errors that
    /// name the key of each unusable file.
    pub fn server_tls(&self, dir: Option<&Path>) -> Result<Option<ServerTls>, TlsConfigError> {
        let Some(listen_tls) = &self.listen.tls else {
            return Ok(None);
        };
        let pairs = listen_tls.pairs(dir);
        ServerTls::new(pairs.into_iter().map(|p| p.files).collect())
            .map(Some)
            .map_err(|source| TlsConfigError {
                key: "listen.tls".into(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use crate::config::routing::tests::ROUTE;

    #[test]
    fn transport_keys_are_checked_and_converted() {
        let text = ROUTE.replace("weight = 90", "weight = 90\n  ca_file = \"ca.pem\"");
        let errors = Config::parse(&text, "t.toml").expect_err("no tls").errors;
        assert_eq!(errors[0].path, "routes[0].versions[0].ca_file");
        assert!(errors[0].message.contains("needs tls = true"));
        assert_eq!(errors[0].position.map(|p| p.0), Some(7));

        let text = ROUTE.replace(
            "weight = 90",
            "weight = 90\n  tls = true\n  server_name = \"not a name\"",
        );
        let errors = Config::parse(&text, "t.toml").expect_err("bad name").errors;
        assert_eq!(errors[0].path, "routes[0].versions[0].server_name");

        let text = ROUTE.replace(
            "weight = 90",
            "weight = 90\n  tls = true\n  ca_file = \"ca.pem\"\n  http2 = true",
        );
        let spec = Config::parse(&text, "t.toml").expect("valid").table_spec();
        let transport = &spec.routes[0].versions[0].transport;
        assert!(transport.http2);
        let tls = transport.tls.as_ref().expect("tls");
        assert_eq!(tls.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
    }

    #[test]
    fn listen_tls_needs_a_whole_certificate() {
        let text = format!("[listen]\ntls = {{ key = \"k.pem\" }}\n{ROUTE}");
        let errors = Config::parse(&text, "t.toml").expect_err("no cert").errors;
        assert_eq!(errors[0].path, "listen.tls");
        assert_eq!(errors[0].position.map(|p| p.0), Some(2));
        let text = format!("[listen.tls]\n{ROUTE}");
        let errors = Config::parse(&text, "t.toml").expect_err("empty").errors;
        assert!(errors[0].message.contains("no certificate"));
        let text = format!("[listen]\ntls = {{ cert = \"c.pem\", key = \"k.pem\" }}\n{ROUTE}");
        let config = Config::parse(&text, "t.toml").expect("syntax is fine");
        let errors = config.check_files(Some(&text), Some(std::path::Path::new("/nonexistent")));
        assert_eq!(errors[0].path, "listen.tls");
        assert!(
            errors[0].message.contains("/nonexistent/c.pem"),
            "{}",
            errors[0].message
        );
    }
}
