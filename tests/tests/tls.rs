//! TLS end to end, with a CA and certificates made in the test (rcgen):
//! HTTP/1.1 and h2 chosen by ALPN, the certificate chosen by SNI, a rotated
//! certificate file served to new connections while an open one goes on
//! (and re-read on a config reload when files are not watched), upstream
//! CA files re-read on a reload,
//! HTTPS and HTTP/2 to upstream versions, and the errors `check` and start
//! give for unusable files.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use switchyard_tests::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA in a directory of its own, removed on drop.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and key written as PEM files.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-tls-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test CA");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let pki = Pki { dir, ca, ca_key };
        std::fs::write(pki.ca_file(), pki.ca.pem()).expect("write CA");
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        roots
    }

    /// A certificate for `names` (and 127.0.0.1) signed by the CA, written
    /// to `stem.pem` / `stem.key` by rename, as a rotation tool would.
    fn leaf(&self, stem: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("signed leaf");
        let leaf = Leaf {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
            der: cert.der().to_vec(),
        };
        for (path, text) in [(&leaf.key, key.serialize_pem()), (&leaf.cert, cert.pem())] {
            let staged = path.with_extension("tmp");
            std::fs::write(&staged, text).expect("write staged");
            std::fs::rename(&staged, path).expect("rename into place");
        }
        leaf
    }

    fn server_config(&self, leaf: &Leaf, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let chain = vec![CertificateDer::from(leaf.der.clone())];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listener_tls(leaves: &[&Leaf]) -> String {
    leaves
        .iter()
        .map(|l| {
            format!(
                "[[listen.tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
                l.cert.display().to_string(),
                l.key.display().to_string()
            )
        })
        .collect()
}

/// Connects with TLS, sending `sni` (an IP address sends no SNI).
async fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    sni: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    bounded(
        Duration::from_secs(10),
        "TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake with the proxy")
}

fn peer_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .to_vec()
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn get_request(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", "a.test")
        .body(empty())
        .expect("request")
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// An HTTP/1.1 connection over `stream`.
async fn h1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

async fn h1_get(
    sender: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    path: &str,
) -> Reply {
    sender.ready().await.expect("connection ready");
    let response = bounded(
        REQUEST_TIMEOUT,
        path,
        sender.send_request(get_request(path)),
    )
    .await
    .expect("HTTP/1.1 request");
    collect(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_http1_or_h2_and_sni_picks_the_certificate() {
    let pki = Pki::new("alpn");
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test", "*.b.test"]);
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&format!(
        "{}\n{}",
        listener_tls(&[&a, &b]),
        route("web").backend("stable", 1, &stable).build()
    )))
    .await;
    let addr = proxy.running.data_addr;

    let stream = tls_connect(addr, &pki, "a.test", &[b"http/1.1"]).await;
    assert_eq!(alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_cert(&stream), a.der);
    let mut sender = h1(stream).await;
    let reply = h1_get(&mut sender, "/headers").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_11);
    assert_eq!(reply.json()["headers"]["x-forwarded-proto"][0], "https");

    let stream = tls_connect(addr, &pki, "a.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    for _ in 0..3 {
        let req = Request::get("https://a.test/headers")
            .body(empty())
            .expect("request");
        let reply = collect(sender.send_request(req).await.expect("h2 request")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.version, Version::HTTP_2);
        assert_eq!(reply.json()["headers"]["x-forwarded-proto"][0], "https");
    }

    let stream = tls_connect(addr, &pki, "b.test", &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&stream), b.der);
    let stream = tls_connect(addr, &pki, "www.b.test", &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&stream), b.der);
    // No SNI (an IP address): the first certificate.
    let stream = tls_connect(addr, &pki, "127.0.0.1", &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&stream), a.der);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections() {
    let pki = Pki::new("rotate");
    let old = pki.leaf("site", &["a.test"]);
    let stable = backend("stable").start().await;
    let proxy = start_proxy(&config(&format!(
        "[listen.tls]\ncert = {:?}\nkey = {:?}\n\n{}",
        old.cert.display().to_string(),
        old.key.display().to_string(),
        route("web").backend("stable", 1, &stable).build()
    )))
    .await;
    let addr = proxy.running.data_addr;
    let open = tls_connect(addr, &pki, "a.test", &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&open), old.der);
    let mut open = h1(open).await;
    assert_eq!(h1_get(&mut open, "/").await.status, StatusCode::OK);

    let new = pki.leaf("site", &["a.test"]);
    assert_ne!(new.der, old.der);
    bounded(Duration::from_secs(15), "the rotated certificate", async {
        loop {
            let stream = tls_connect(addr, &pki, "a.test", &[b"http/1.1"]).await;
            if peer_cert(&stream) == new.der {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The connection opened before the rotation goes on.
    for _ in 0..3 {
        assert_eq!(h1_get(&mut open, "/").await.status, StatusCode::OK);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_watching_a_config_reload_rotates_the_certificate() {
    let pki = Pki::new("reload");
    let old = pki.leaf("site", &["a.test"]);
    let stable = backend("stable").start().await;
    let text = config(&format!(
        "[listen.tls]\ncert = {:?}\nkey = {:?}\n\n{}",
        old.cert.display().to_string(),
        old.key.display().to_string(),
        route("web").backend("stable", 1, &stable).build()
    ));
    let parsed = switchyard_control::Config::parse(&text, "switchyard.toml").expect("config");
    let options = switchyard_control::StartOptions {
        config_path: Some(write_config(&pki.dir, &text)),
        config_text: Some(text.clone()),
        admin_token: None,
        watch: false, // `switchyard run --no-watch`
    };
    let running = switchyard_control::start_with(&parsed, options)
        .await
        .expect("start");
    let served = |addr| {
        let pki = &pki;
        async move { peer_cert(&tls_connect(addr, pki, "a.test", &[b"http/1.1"]).await) }
    };
    assert_eq!(served(running.data_addr).await, old.der);

    let new = pki.leaf("site", &["a.test"]);
    // Not watched: new files alone change nothing…
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served(running.data_addr).await, old.der);
    // …what SIGHUP and POST /api/v1/reload do (an unchanged config) does.
    running
        .plane
        .reload(switchyard_control::history::Source::Signal)
        .expect("reload");
    assert_eq!(served(running.data_addr).await, new.der);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_rereads_the_upstream_ca_file() {
    // The internal CA rotates: a new backend has a certificate from the new
    // CA, written over the same `ca_file`.
    let old_ca = Pki::new("trust-old");
    let new_ca = Pki::new("trust-new");
    let (old_backend, _a) = protocol_backend(
        "old",
        Some(old_ca.server_config(&old_ca.leaf("backend", &["backend.test"]), &[b"http/1.1"])),
    )
    .await;
    let (new_backend, _b) = protocol_backend(
        "new",
        Some(new_ca.server_config(&new_ca.leaf("backend", &["backend.test"]), &[b"http/1.1"])),
    )
    .await;
    let ca_file = old_ca.dir.join("trusted-ca.pem");
    std::fs::copy(old_ca.ca_file(), &ca_file).expect("copy CA");
    let text_for = |backend| {
        let keys = format!(
            "  tls = true\n  ca_file = {:?}\n  server_name = \"backend.test\"\n",
            ca_file.display().to_string()
        );
        config(&format!(
            "[[routes]]\nname = \"web\"\npath_prefix = \"/\"\n{}",
            version_toml("v", backend, &keys)
        ))
    };
    let text = text_for(old_backend);
    let path = write_config(&old_ca.dir, &text);
    let parsed = switchyard_control::Config::parse(&text, "switchyard.toml").expect("config");
    let options = switchyard_control::StartOptions {
        config_path: Some(path.clone()),
        config_text: Some(text),
        admin_token: None,
        watch: false,
    };
    let running = switchyard_control::start_with(&parsed, options)
        .await
        .expect("start");
    let client = client();
    let url = format!("http://{}/", running.data_addr);
    assert_eq!(get(&client, &url).await.text(), "old HTTP/1.1");

    std::fs::copy(new_ca.ca_file(), &ca_file).expect("rotate CA");
    std::fs::write(&path, text_for(new_backend)).expect("new endpoint");
    running
        .plane
        .reload(switchyard_control::history::Source::Signal)
        .expect("reload");
    let reply = get(&client, &url).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "new HTTP/1.1");

    // An unusable CA file fails the reload and keeps what works.
    std::fs::write(&ca_file, "not a certificate").expect("break CA");
    std::fs::write(&path, text_for(old_backend)).expect("old endpoint");
    assert!(running
        .plane
        .reload(switchyard_control::history::Source::Signal)
        .is_err());
    assert_eq!(get(&client, &url).await.text(), "new HTTP/1.1");
    running.shutdown().await;
}

/// A backend answering `NAME HTTP/x` (the protocol it was spoken to in),
/// over TLS when `tls` is given.
async fn protocol_backend(
    name: &'static str,
    tls: Option<Arc<ServerConfig>>,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("address");
    let acceptor = tls.map(TlsAcceptor::from);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let text = format!("{name} {:?}", req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(full(text)))
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                        Err(_) => Ok(()),
                    },
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
            });
        }
    });
    (addr, task)
}

fn version_toml(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!("\n  [[routes.versions]]\n  name = \"{name}\"\n  weight = 1\n  endpoints = [\"{addr}\"]\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_reach_their_endpoints_over_tls_and_http2() {
    let pki = Pki::new("upstream");
    let leaf = pki.leaf("backend", &["backend.test"]);
    let (h1_tls, _a) =
        protocol_backend("h1-tls", Some(pki.server_config(&leaf, &[b"http/1.1"]))).await;
    let (h2_tls, _b) = protocol_backend(
        "h2-tls",
        Some(pki.server_config(&leaf, &[b"h2", b"http/1.1"])),
    )
    .await;
    let (h2c, _c) = protocol_backend("h2c", None).await;
    let ca = format!("{:?}", pki.ca_file().display().to_string());
    let tls_keys = format!("  tls = true\n  ca_file = {ca}\n  server_name = \"backend.test\"\n");
    let routes = [
        ("h1tls", version_toml("v", h1_tls, &tls_keys)),
        (
            "h2tls",
            version_toml("v", h2_tls, &format!("{tls_keys}  http2 = true\n")),
        ),
        ("h2c", version_toml("v", h2c, "  http2 = true\n")),
        // No CA file: the public roots, which do not know the test CA.
        (
            "untrusted",
            version_toml(
                "v",
                h1_tls,
                "  tls = true\n  server_name = \"backend.test\"\n",
            ),
        ),
        // The certificate is for backend.test, not for a wrong name.
        (
            "wrongname",
            version_toml(
                "v",
                h1_tls,
                &format!("  tls = true\n  ca_file = {ca}\n  server_name = \"other.test\"\n"),
            ),
        ),
    ];
    let text: String = routes
        .iter()
        .map(|(name, version)| {
            format!("[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\n{version}\n")
        })
        .collect();
    let proxy = start_proxy(&config(&text)).await;
    for (path, want) in [
        ("/h1tls", "h1-tls HTTP/1.1"),
        ("/h2tls", "h2-tls HTTP/2.0"),
        ("/h2c", "h2c HTTP/2.0"),
    ] {
        for _ in 0..3 {
            let reply = proxy.get(path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
            assert_eq!(reply.text(), want, "{path}");
        }
    }
    for path in ["/untrusted", "/wrongname"] {
        let reply = proxy.get(path).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{path}: {}",
            reply.text()
        );
        assert!(
            reply.text().contains("certificate"),
            "{path}: {}",
            reply.text()
        );
    }
    proxy.shutdown().await;
}

/// Whether `GET /api/v1/routes` shows `version` of the first route down.
fn version_down(routes: &serde_json::Value, version: &str) -> bool {
    routes["routes"][0]["versions"]
        .as_array()
        .and_then(|versions| versions.iter().find(|v| v["name"] == version))
        .map(|v| v["down"] == true)
        .unwrap_or_else(|| panic!("no version {version}: {routes}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_probe_tls_versions_over_their_own_transport() {
    // Checks go over each version's transport: HTTPS with its CA and
    // server name, HTTP/2 where it says so. A probe in clear text (or one
    // that ignored the server name) would take the healthy versions down.
    let pki = Pki::new("probe");
    let leaf = pki.leaf("backend", &["backend.test"]);
    let (h1_tls, _a) =
        protocol_backend("h1-tls", Some(pki.server_config(&leaf, &[b"http/1.1"]))).await;
    let (h2_tls, _b) = protocol_backend("h2-tls", Some(pki.server_config(&leaf, &[b"h2"]))).await;
    let (misnamed, _c) =
        protocol_backend("misnamed", Some(pki.server_config(&leaf, &[b"http/1.1"]))).await;
    let ca = format!("{:?}", pki.ca_file().display().to_string());
    let tls_keys =
        |name: &str| format!("  tls = true\n  ca_file = {ca}\n  server_name = \"{name}\"\n");
    let text = format!(
        "[[routes]]\nname = \"web\"\npath_prefix = \"/\"\n  [routes.health_check]\n  path = \"/healthz\"\n  interval = \"100ms\"\n  timeout = \"500ms\"\n  healthy_threshold = 2\n  unhealthy_threshold = 2\n{}{}{}",
        version_toml("h1", h1_tls, &tls_keys("backend.test")),
        version_toml("h2", h2_tls, &format!("{}  http2 = true\n", tls_keys("backend.test"))),
        version_toml("misnamed", misnamed, &tls_keys("other.test")).replace("weight = 1", "weight = 0"),
    );
    let proxy = start_proxy(&config(&text)).await;
    let admin = switchyard_tests::admin::AdminClient::new(proxy.running.admin_addr, None);
    // The misnamed version fails its checks: probes verify the certificate.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, routes) = admin.routes().await;
        if version_down(&routes, "misnamed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the misnamed version was never marked down: {routes}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Many check intervals later, the well-configured versions are still up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, routes) = admin.routes().await;
    assert!(!version_down(&routes, "h1"), "{routes}");
    assert!(!version_down(&routes, "h2"), "{routes}");
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let reply = proxy.get("/").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        answers.insert(reply.text());
    }
    let want: std::collections::BTreeSet<String> =
        ["h1-tls HTTP/1.1".to_owned(), "h2-tls HTTP/2.0".to_owned()].into();
    assert_eq!(answers, want);
    proxy.shutdown().await;
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Why the proxy refuses to start from `text` (valid TOML).
async fn start_error(text: &str) -> String {
    let parsed = switchyard_control::Config::parse(text, "t.toml").expect("syntax is fine");
    match switchyard_control::start(&parsed).await {
        Ok(running) => {
            running.shutdown().await;
            panic!("started with unusable files:\n{text}");
        }
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_start_report_unusable_certificates() {
    let pki = Pki::new("errors");
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    let routes = route("web")
        .version("stable", 1, &["127.0.0.1:9".into()])
        .build();

    // Relative paths are relative to the config file.
    let good = write_config(
        &pki.dir,
        &config(&format!(
            "[listen.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n\n{routes}"
        )),
    );
    switchyard_control::Config::load(&good).expect("usable certificate");

    let crossed = config(&format!(
        "{}[[listen.tls.certificates]]\ncert = \"b.pem\"\nkey = \"a.key\"\n\n{routes}",
        listener_tls(&[&a])
    ));
    let errors = switchyard_control::Config::load(&write_config(&pki.dir, &crossed))
        .expect_err("mismatched key")
        .to_string();
    assert!(
        errors.contains("listen.tls.certificates[1]")
            && errors.contains("does not belong to the certificate")
            && errors.contains("line 9"),
        "{errors}"
    );

    let missing = config(&format!(
        "[listen.tls]\ncert = \"nope.pem\"\nkey = \"a.key\"\n\n{routes}"
    ));
    let errors = switchyard_control::Config::load(&write_config(&pki.dir, &missing))
        .expect_err("missing file")
        .to_string();
    assert!(
        errors.contains("cannot read the certificate file") && errors.contains("nope.pem"),
        "{errors}"
    );

    let half = config(&format!("[listen.tls]\ncert = \"a.pem\"\n\n{routes}"));
    let errors = switchyard_control::Config::parse(&half, "t.toml")
        .expect_err("no key")
        .to_string();
    assert!(
        errors.contains("listen.tls") && errors.contains("both cert and key"),
        "{errors}"
    );

    let bad_ca = route("web")
        .version("stable", 1, &["127.0.0.1:9".into()])
        .build()
        .replace(
            "endpoints",
            "tls = true\n  ca_file = \"a.key\"\n  endpoints",
        );
    let errors = switchyard_control::Config::load(&write_config(&pki.dir, &config(&bad_ca)))
        .expect_err("a key is no CA")
        .to_string();
    assert!(
        errors.contains("routes[0].versions[0].ca_file") && errors.contains("no PEM certificate"),
        "{errors}"
    );

    // Start refuses the same mismatch with the key named.
    let absolute = config(&format!(
        "[listen.tls]\ncert = {:?}\nkey = {:?}\n\n{routes}",
        b.cert.display().to_string(),
        a.key.display().to_string()
    ));
    let error = start_error(&absolute).await;
    assert!(
        error.contains("listen.tls") && error.contains("does not belong"),
        "{error}"
    );

    // And an upstream CA file that holds no certificate.
    let bad_ca = bad_ca.replace("\"a.key\"", &format!("{:?}", a.key.display().to_string()));
    let error = start_error(&config(&bad_ca)).await;
    assert!(
        error.contains("routes[0].versions[0].ca_file") && error.contains("no PEM certificate"),
        "{error}"
    );
}
