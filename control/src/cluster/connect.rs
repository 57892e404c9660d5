//! The etcd client from `[cluster]`: endpoints, TLS (rustls through tonic:
//! the CA that signed etcd's certificate, optionally a client certificate),
//! user and password (`SWITCHYARD_ETCD_PASSWORD`), and short timeouts so an
//! admin write fails fast with 503 when etcd is unreachable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::config::ClusterConfig;

/// The environment variable holding the etcd user's password.
pub const PASSWORD_ENV: &str = "SWITCHYARD_ETCD_PASSWORD";

/// Per request: an admin write waits at most this long for etcd.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings notice a dead etcd while the watch is idle.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("[cluster] username is set but {PASSWORD_ENV} is not: export the etcd user's password in it")]
    NoPassword,
    #[error("[cluster.tls] {which} '{path}' cannot be read: {source}; fix the path (relative to the config file)")]
    File {
        which: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything needed to (re)connect, read once at start.
#[derive(Clone)]
pub struct Options {
    pub endpoints: Vec<String>,
    user: Option<(String, String)>,
    tls: Option<TlsOptions>,
}

impl Options {
    pub fn from_config(
        config: &ClusterConfig,
        base_dir: Option<&Path>,
    ) -> Result<Options, ConnectError> {
        let user = match &config.username {
            Some(name) => {
                let password = std::env::var(PASSWORD_ENV).map_err(|_| ConnectError::NoPassword)?;
                Some((name.clone(), password))
            }
            None => None,
        };
        let tls = match &config.tls {
            Some(tls) => {
                let read = |which, path: &Path| {
                    let path = base_dir.map_or_else(|| path.to_path_buf(), |dir| dir.join(path));
                    std::fs::read(&path).map_err(|source| ConnectError::File {
                        which,
                        path,
                        source,
                    })
                };
                let mut options =
                    TlsOptions::new().ca_certificate(Certificate::from_pem(read("ca", &tls.ca)?));
                if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                    options = options
                        .identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
                }
                Some(options)
            }
            None => None,
        };
        Ok(Options {
            endpoints: config.etcd.get_ref().clone(),
            user,
            tls,
        })
    }

    /// The endpoints as one string, for errors and status.
    pub fn endpoint_list(&self) -> String {
        self.endpoints.join(", ")
    }

    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        let mut options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
            .with_keep_alive_while_idle(true);
        if let Some((name, password)) = &self.user {
            options = options.with_user(name.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        Client::connect(&self.endpoints, Some(options)).await
    }
}
