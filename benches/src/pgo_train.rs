//! `pgo-train BIN [--scale F]` (src/bin/pgo-train.rs runs [`run`]): the
//! training run of a profile-guided build (benches/pgo-build.sh). Starts three loopback backends and runs BIN (an
//! instrumented `switchyard`) in front of them three times, each stopped
//! with SIGTERM so it writes its profile on the way out:
//! - one worker: HTTP/1.1 keep-alive GETs through a plain route, a weighted
//!   split and a mirrored route, HTTP/2 (h2c) streams, streamed POST bodies;
//! - the default multi-threaded runtime (two workers): GETs and h2c;
//! - one worker behind TLS: HTTP/1.1 and HTTP/2 chosen by ALPN.
//!
//! Code no run reaches is compiled as cold, so each way of serving that
//! users deploy gets some traffic; the proportions follow what the
//! benchmark and a typical ingress see.
//!
//! Every reply must be a 200 with the bytes expected: a training run that
//! exercised error paths instead would teach the compiler the wrong thing,
//! so any other outcome fails the run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, hyper::Error>;

/// The size of a POST body: several reads and writes per request.
const POST_BYTES: usize = 64 * 1024;

/// The command: `args` are its arguments (without the program name).
pub fn run(mut args: impl Iterator<Item = String>) -> ExitCode {
    let Some(bin) = args.next() else {
        eprintln!("usage: pgo-train SWITCHYARD_BIN [--scale FACTOR]");
        return ExitCode::from(2);
    };
    let scale = match (args.next().as_deref(), args.next()) {
        (None, _) => 1.0,
        (Some("--scale"), Some(factor)) => match factor.parse::<f64>() {
            Ok(factor) if factor > 0.0 => factor,
            _ => {
                eprintln!("pgo-train: --scale wants a positive number, got {factor:?}");
                return ExitCode::from(2);
            }
        },
        (Some(other), _) => {
            eprintln!("pgo-train: unknown argument {other:?} (usage: pgo-train SWITCHYARD_BIN [--scale FACTOR])");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pgo-train: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    match runtime.block_on(train(&bin, scale)) {
        Ok(total) => {
            println!(
                "pgo-train: {total} requests in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pgo-train: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Trains `bin` with `scale` times the full run's requests; returns how
/// many requests it made, every one answered as expected.
pub async fn train(bin: &str, scale: f64) -> Result<usize, BoxError> {
    let backends = Backends {
        stable: start_backend("stable").await?,
        canary: start_backend("canary").await?,
        shadow: start_backend("shadow").await?,
    };
    let dir = std::env::temp_dir().join(format!("switchyard-pgo-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = train_in(bin, scale, &backends, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn train_in(
    bin: &str,
    scale: f64,
    backends: &Backends,
    dir: &Path,
) -> Result<usize, BoxError> {
    let count = |n: f64| ((n * scale).ceil() as usize).max(1);
    let mut total = 0;

    let (data, config) = write_config(dir, "one-worker", backends, "")?;
    total += serve(bin, &config, "1", data, |data| async move {
        let dial = Dial::Plain;
        let mut n = h1_load(data, &dial, "/", 32, count(2_000.0), None).await?;
        n += h1_load(data, &dial, "/split/a", 16, count(1_000.0), None).await?;
        n += h1_load(data, &dial, "/mirror/a", 16, count(500.0), None).await?;
        n += h2_load(data, &dial, "/", 4, 16, count(500.0)).await?;
        n += h1_load(data, &dial, "/upload", 8, count(50.0), Some(POST_BYTES)).await?;
        Ok(n)
    })
    .await?;

    let (data, config) = write_config(dir, "two-workers", backends, "")?;
    total += serve(bin, &config, "2", data, |data| async move {
        let dial = Dial::Plain;
        let mut n = h1_load(data, &dial, "/", 16, count(500.0), None).await?;
        n += h2_load(data, &dial, "/", 2, 8, count(200.0)).await?;
        Ok(n)
    })
    .await?;

    let tls = self_signed(dir)?;
    let (data, config) = write_config(dir, "tls", backends, &tls.listener)?;
    total += serve(bin, &config, "1", data, |data| async move {
        let mut n = h1_load(data, &tls.dial, "/", 16, count(300.0), None).await?;
        n += h2_load(data, &tls.dial, "/", 4, 8, count(100.0)).await?;
        Ok(n)
    })
    .await?;

    Ok(total)
}

struct Backends {
    stable: SocketAddr,
    canary: SocketAddr,
    shadow: SocketAddr,
}

/// Runs BIN with `config` and `workers` while `load` drives it; returns
/// how many requests `load` made.
async fn serve<F, Fut>(
    bin: &str,
    config: &Path,
    workers: &str,
    data: SocketAddr,
    load: F,
) -> Result<usize, BoxError>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<usize, BoxError>>,
{
    let mut proxy = Proxy(
        Command::new(bin)
            .args(["run", "--workers", workers, "--config"])
            .arg(config)
            .env("SWITCHYARD_LOG", "warn")
            // Only to keep the no-token warning out of the build's output:
            // the admin listener is on an ephemeral loopback port.
            .env("SWITCHYARD_ADMIN_TOKEN", "pgo-train")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start {bin}: {error}"))?,
    );
    wait_listening(&mut proxy, data).await?;
    let requests = load(data).await?;
    proxy.stop()?;
    Ok(requests)
}

/// Writes the training config (with `listener_extra` under `[listen]`) as
/// `name.toml`; returns the data address it listens on.
fn write_config(
    dir: &Path,
    name: &str,
    backends: &Backends,
    listener_extra: &str,
) -> Result<(SocketAddr, std::path::PathBuf), BoxError> {
    let data = free_port()?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, training_config(data, backends, listener_extra))?;
    Ok((data, path))
}

fn training_config(data: SocketAddr, backends: &Backends, listener_extra: &str) -> String {
    let Backends {
        stable,
        canary,
        shadow,
    } = backends;
    format!(
        r#"[listen]
data = "{data}"
admin = "127.0.0.1:0"
{listener_extra}

[[routes]]
name = "plain"
path_prefix = "/"
  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["{stable}"]

[[routes]]
name = "split"
path_prefix = "/split"
  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["{stable}"]
  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["{canary}"]

[[routes]]
name = "mirror"
path_prefix = "/mirror"
  [[routes.versions]]
  name = "stable"
  weight = 100
  endpoints = ["{stable}"]
  [[routes.shadows]]
  name = "shadow"
  percent = 100
  endpoints = ["{shadow}"]
"#
    )
}

/// The proxy process; killed if the run fails before it is stopped.
struct Proxy(Child);

impl Proxy {
    /// SIGTERM, then wait: the profile is written when the process exits.
    fn stop(&mut self) -> Result<(), BoxError> {
        let pid = libc::pid_t::try_from(self.0.id())?;
        // SAFETY: kill(2) on our own child's pid, which we have not waited for.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "cannot signal the proxy: {}",
                std::io::Error::last_os_error()
            )
            .into());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait()? {
                return match status.success() {
                    true => Ok(()),
                    false => Err(format!("the proxy exited with {status}").into()),
                };
            }
            if Instant::now() > deadline {
                return Err("the proxy did not exit within 30 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_listening(proxy: &mut Proxy, data: SocketAddr) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proxy.0.try_wait()? {
            return Err(format!("the proxy exited at start-up with {status}").into());
        }
        if TcpStream::connect(data).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the proxy did not listen on {data} within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// How the load connects: plain TCP, or TLS with ALPN "http/1.1" or "h2".
enum Dial {
    Plain,
    Tls { h1: TlsConnector, h2: TlsConnector },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Dial {
    async fn connect(&self, data: SocketAddr, http2: bool) -> Result<Box<dyn Io>, BoxError> {
        let stream = TcpStream::connect(data).await?;
        stream.set_nodelay(true)?;
        Ok(match self {
            Dial::Plain => Box::new(stream),
            Dial::Tls { h1, h2 } => {
                let connector = if http2 { h2 } else { h1 };
                let name = ServerName::try_from("localhost")?;
                Box::new(connector.connect(name, stream).await?)
            }
        })
    }
}

/// A self-signed certificate for "localhost": the `[listen.tls]` lines
/// that serve it and the clients that trust it.
struct Tls {
    listener: String,
    dial: Dial,
}

fn self_signed(dir: &Path) -> Result<Tls, BoxError> {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key_pair.serialize_pem())?;
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let connector = |alpn: &[u8]| -> Result<TlsConnector, BoxError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(TlsConnector::from(Arc::new(config)))
    };
    Ok(Tls {
        listener: format!(
            "[[listen.tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
            cert_file.display().to_string(),
            key_file.display().to_string()
        ),
        dial: Dial::Tls {
            h1: connector(b"http/1.1")?,
            h2: connector(b"h2")?,
        },
    })
}

/// A backend answering GETs with its name and echoing request bodies.
async fn start_backend(name: &'static str) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let body: Body = match *req.method() {
                        Method::POST => req.into_body().boxed(),
                        _ => fixed(Bytes::from_static(name.as_bytes())),
                    };
                    let mut response = Response::new(body);
                    response
                        .headers_mut()
                        .insert("x-backend", http::HeaderValue::from_static(name));
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn fixed(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// `connections` keep-alive HTTP/1.1 connections, each sending `each`
/// requests one after another; with `post`, each request uploads that many
/// bytes, which the backend echoes.
async fn h1_load(
    data: SocketAddr,
    dial: &Dial,
    path: &'static str,
    connections: usize,
    each: usize,
    post: Option<usize>,
) -> Result<usize, BoxError> {
    // One upload body, shared (reference-counted) by every request.
    let upload = post.map(|len| Bytes::from(vec![b'x'; len]));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let stream = dial.connect(data, false).await?;
        let upload = upload.clone();
        clients.spawn(async move {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let method = match upload {
                Some(_) => Method::POST,
                None => Method::GET,
            };
            for _ in 0..each {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header(http::header::HOST, "train.example")
                    .body(fixed(upload.clone().unwrap_or_default()))?;
                sender.ready().await?;
                check(sender.send_request(req).await?, upload.as_ref()).await?;
            }
            Ok::<_, BoxError>(each)
        });
    }
    join_all(clients).await
}

/// `connections` HTTP/2 connections with `streams` concurrent streams each,
/// every stream sending `each` requests.
async fn h2_load(
    data: SocketAddr,
    dial: &Dial,
    path: &'static str,
    connections: usize,
    streams: usize,
    each: usize,
) -> Result<usize, BoxError> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let stream = dial.connect(data, true).await?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(connection);
        for _ in 0..streams {
            let mut sender = sender.clone();
            clients.spawn(async move {
                for _ in 0..each {
                    let req = Request::builder()
                        .uri(format!("http://train.example{path}"))
                        .body(fixed(Bytes::new()))?;
                    sender.ready().await?;
                    check(sender.send_request(req).await?, None).await?;
                }
                Ok::<_, BoxError>(each)
            });
        }
    }
    join_all(clients).await
}

async fn join_all(
    mut clients: tokio::task::JoinSet<Result<usize, BoxError>>,
) -> Result<usize, BoxError> {
    let mut total = 0;
    while let Some(done) = clients.join_next().await {
        total += done??;
    }
    Ok(total)
}

/// A 200 from a backend, with the echoed body when one was sent.
async fn check(response: Response<Incoming>, echoed: Option<&Bytes>) -> Result<(), BoxError> {
    let status = response.status();
    let backend = response.headers().contains_key("x-backend");
    let body = response.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK || !backend {
        return Err(format!(
            "expected a 200 from a backend, got {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    if let Some(sent) = echoed {
        if body != sent {
            return Err(format!(
                "echo of {} bytes came back as {} bytes",
                sent.len(),
                body.len()
            )
            .into());
        }
    }
    Ok(())
}
