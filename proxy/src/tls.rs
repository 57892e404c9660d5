//! TLS with rustls (ring provider): the listener's server side —
//! certificates chosen by SNI, ALPN h2 and http/1.1, certificates swapped in
//! place when their files change — and the client configs of versions whose
//! endpoints speak HTTPS.
//!
//! A certificate serves the DNS names of its subjectAltName extension
//! (`*.example.com` covers one label); a client that sends no SNI, or a name
//! no certificate covers, gets the first certificate. A reload re-reads
//! every file and swaps the whole set at once: new handshakes see the new
//! set, established connections keep theirs.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// One certificate chain and its key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate, key or CA file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} file '{}': {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("'{}' holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("'{}' is not valid PEM: {detail}", path.display())]
    BadPem { path: PathBuf, detail: String },
    #[error("'{}' holds no private key (a -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block)", path.display())]
    NoKey { path: PathBuf },
    #[error("the private key in '{}' cannot be used: {detail}", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("the key in '{}' does not belong to the certificate in '{}': give the key the certificate was issued for", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in '{}' cannot be parsed: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("the CA file '{}' cannot be used: {detail}", path.display())]
    BadCa { path: PathBuf, detail: String },
    #[error("no certificate is configured")]
    NoCertificates,
    #[error("'{0}' is not a DNS name or IP address")]
    BadServerName(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every config here uses (not the process default, so
/// nothing depends on which provider another crate installs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate ready to serve, with the names it covers.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// subjectAltName DNS names, lowercase (`*.example.com` kept as is).
    pub names: Vec<String>,
}

/// Reads a certificate chain and its key, and checks they belong together.
pub fn load_cert(files: &CertFiles, provider: &CryptoProvider) -> Result<LoadedCert, TlsError> {
    let chain = read_certs(&files.cert, "certificate")?;
    let key_pem = read(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key.clone(),
        },
        other => TlsError::BadPem {
            path: files.key.clone(),
            detail: other.to_string(),
        },
    })?;
    let names = dns_names(&chain[0]).map_err(|detail| TlsError::BadCertificate {
        path: files.cert.clone(),
        detail,
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        other => TlsError::BadKey {
            path: files.key.clone(),
            detail: other.to_string(),
        },
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        names,
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    Ok(parsed
        .valid_dns_names()
        .map(str::to_ascii_lowercase)
        .collect())
}

/// The certificates of one listener, looked up by SNI name.
#[derive(Debug)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertSet {
    fn new(certs: Vec<LoadedCert>) -> Result<CertSet, TlsError> {
        let default = certs
            .first()
            .map(|c| Arc::clone(&c.key))
            .ok_or(TlsError::NoCertificates)?;
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        // The first certificate listed for a name wins.
        for cert in &certs {
            for name in &cert.names {
                let (map, name) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                map.entry(name.to_owned())
                    .or_insert_with(|| Arc::clone(&cert.key));
            }
        }
        Ok(CertSet {
            exact,
            wildcard,
            default,
        })
    }

    fn lookup(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }

    fn same_as(&self, other: &CertSet) -> bool {
        fn chains(set: &CertSet) -> Vec<Vec<&[u8]>> {
            let mut all: Vec<Vec<&[u8]>> = set
                .exact
                .values()
                .chain(set.wildcard.values())
                .chain(std::iter::once(&set.default))
                .map(|key| key.cert.iter().map(|c| c.as_ref()).collect())
                .collect();
            all.sort();
            all
        }
        chains(self) == chains(other)
    }
}

#[derive(Debug)]
struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.set.load().lookup(hello.server_name())))
    }
}

/// A listener's TLS: the acceptor and the files it reloads from.
pub struct ServerTls {
    files: Vec<CertFiles>,
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads every certificate (the first is the default) and builds the
    /// server config: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
    pub fn new(files: Vec<CertFiles>) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let set = load_set(&files, &provider)?;
        let resolver = Arc::new(SniResolver {
            set: ArcSwap::from_pointee(set),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            files,
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The certificate and key files, for the watcher.
    pub fn files(&self) -> &[CertFiles] {
        &self.files
    }

    /// Re-reads every file; on success new handshakes use the new
    /// certificates (`Ok(true)`), `Ok(false)` if nothing changed. On error
    /// the current certificates stay.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let set = load_set(&self.files, &self.provider)?;
        if set.same_as(&self.resolver.set.load()) {
            return Ok(false);
        }
        self.resolver.set.store(Arc::new(set));
        Ok(true)
    }

    /// The TLS handshake, bounded by `timeout`.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> io::Result<TlsStream<TcpStream>> {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

fn load_set(files: &[CertFiles], provider: &CryptoProvider) -> Result<CertSet, TlsError> {
    let certs = files
        .iter()
        .map(|f| load_cert(f, provider))
        .collect::<Result<Vec<_>, _>>()?;
    CertSet::new(certs)
}

/// The roots a TLS upstream is verified against: the CA file's
/// certificates, or the Mozilla roots (webpki-roots) without one.
pub fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let Some(path) = ca_file else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA")? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A client config verifying against `ca_file` (or the Mozilla roots).
/// ALPN is left to the connector.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(ca_file)?)
        .with_no_client_auth())
}

/// Checks an upstream `server_name` override.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::BadServerName(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("switchyard-tls-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Files { dir }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A self-signed certificate for `names` and its key, as PEM files.
    fn self_signed(files: &Files, tag: &str, names: &[&str]) -> CertFiles {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        CertFiles {
            cert: files.write(&format!("{tag}.pem"), &cert.pem()),
            key: files.write(&format!("{tag}.key"), &key.serialize_pem()),
        }
    }

    fn served(tls: &ServerTls, name: Option<&str>) -> Vec<u8> {
        tls.resolver.set.load().lookup(name).cert[0].to_vec()
    }

    fn cert_der(files: &CertFiles) -> Vec<u8> {
        read_certs(&files.cert, "certificate").expect("readable")[0].to_vec()
    }

    #[test]
    fn sni_picks_by_subject_alt_name_and_reload_swaps() {
        let files = Files::new("sni");
        let a = self_signed(&files, "a", &["a.example.com"]);
        let b = self_signed(&files, "b", &["*.b.example.com", "b.example.com"]);
        let tls = ServerTls::new(vec![a.clone(), b.clone()]).expect("valid");
        assert_eq!(served(&tls, Some("a.example.com")), cert_der(&a));
        assert_eq!(served(&tls, Some("X.B.example.com")), cert_der(&b));
        assert_eq!(served(&tls, Some("b.example.com")), cert_der(&b));
        assert_eq!(served(&tls, Some("other.org")), cert_der(&a));
        assert_eq!(served(&tls, None), cert_der(&a));
        assert!(!tls.reload().expect("unchanged"));

        let rotated = self_signed(&files, "a", &["a.example.com"]);
        assert!(tls.reload().expect("reloaded"));
        assert_eq!(served(&tls, Some("a.example.com")), cert_der(&rotated));

        // A broken rotation keeps what is served.
        files.write("a.key", "");
        assert!(tls.reload().is_err());
        assert_eq!(served(&tls, Some("a.example.com")), cert_der(&rotated));
    }

    #[test]
    fn mismatched_key_is_reported() {
        let files = Files::new("mismatch");
        let a = self_signed(&files, "a", &["a.example.com"]);
        let b = self_signed(&files, "b", &["b.example.com"]);
        let crossed = CertFiles {
            cert: a.cert,
            key: b.key,
        };
        let error = load_cert(&crossed, &provider()).expect_err("mismatch");
        assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
        assert!(error.to_string().contains("does not belong"), "{error}");
    }

    #[test]
    fn unreadable_and_empty_files_are_named() {
        let files = Files::new("errors");
        let missing = CertFiles {
            cert: files.dir.join("missing.pem"),
            key: files.dir.join("missing.key"),
        };
        let error = load_cert(&missing, &provider()).expect_err("missing");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let empty = CertFiles {
            cert: files.write("empty.pem", "not pem\n"),
            key: files.write("empty.key", ""),
        };
        let error = load_cert(&empty, &provider()).expect_err("empty");
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        assert!(matches!(
            load_roots(Some(&files.write("ca.pem", "nothing"))),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(load_roots(None).is_ok_and(|roots| !roots.is_empty()));
        assert!(server_name("backend.internal").is_ok());
        assert!(server_name("not a name").is_err());
    }
}
