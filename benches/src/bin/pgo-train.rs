//! `pgo-train BIN [--scale F]`: the training run of a profile-guided build
//! (benches/pgo-build.sh). Starts three loopback backends, runs BIN (an
//! instrumented `switchyard`) in front of them with one worker, drives the
//! traffic a deployment sees most — HTTP/1.1 keep-alive GETs through a
//! plain route, a weighted split and a mirrored route, HTTP/2 (h2c)
//! streams, streamed POST bodies — then stops it with SIGTERM so it writes
//! its profile on the way out.
//!
//! Every reply must be a 200 with the bytes expected: a training run that
//! exercised error paths instead would teach the compiler the wrong thing,
//! so any other outcome fails the run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, hyper::Error>;

/// The size of a POST body: several reads and writes per request.
const POST_BYTES: usize = 64 * 1024;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
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
    match runtime.block_on(train(&bin, scale)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgo-train: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn train(bin: &str, scale: f64) -> Result<(), BoxError> {
    let stable = start_backend("stable").await?;
    let canary = start_backend("canary").await?;
    let shadow = start_backend("shadow").await?;
    let dir = std::env::temp_dir().join(format!("switchyard-pgo-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data = free_port()?;
    let config = dir.join("train.toml");
    std::fs::write(&config, training_config(data, stable, canary, shadow))?;

    let mut proxy = Proxy(
        Command::new(bin)
            .args(["run", "--workers", "1", "--config"])
            .arg(&config)
            .env("SWITCHYARD_LOG", "warn")
            // Only to keep the no-token warning out of the build's output:
            // the admin listener is on an ephemeral loopback port.
            .env("SWITCHYARD_ADMIN_TOKEN", "pgo-train")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start {bin}: {error}"))?,
    );
    let outcome = drive(&mut proxy, data, scale).await;
    let stopped = proxy.stop();
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    stopped
}

/// The phases, in the proportions the benchmark and a typical ingress see.
async fn drive(proxy: &mut Proxy, data: SocketAddr, scale: f64) -> Result<(), BoxError> {
    wait_listening(proxy, data).await?;
    let count = |n: f64| ((n * scale).ceil() as usize).max(1);
    let started = Instant::now();
    let mut total = 0;
    total += h1_load(data, "/", 32, count(2_000.0), None).await?;
    total += h1_load(data, "/split/a", 16, count(1_000.0), None).await?;
    total += h1_load(data, "/mirror/a", 16, count(500.0), None).await?;
    total += h2_load(data, "/", 4, 16, count(500.0)).await?;
    total += h1_load(data, "/upload", 8, count(50.0), Some(POST_BYTES)).await?;
    println!(
        "pgo-train: {total} requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn training_config(
    data: SocketAddr,
    stable: SocketAddr,
    canary: SocketAddr,
    shadow: SocketAddr,
) -> String {
    format!(
        r#"[listen]
data = "{data}"
admin = "127.0.0.1:0"

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
    path: &'static str,
    connections: usize,
    each: usize,
    post: Option<usize>,
) -> Result<usize, BoxError> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        clients.spawn(async move {
            let stream = TcpStream::connect(data).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            for _ in 0..each {
                let (method, body, expect) = match post {
                    Some(len) => {
                        let bytes = Bytes::from(vec![b'x'; len]);
                        (Method::POST, fixed(bytes.clone()), Some(bytes))
                    }
                    None => (Method::GET, fixed(Bytes::new()), None),
                };
                let req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(http::header::HOST, "train.example")
                    .body(body)?;
                sender.ready().await?;
                check(sender.send_request(req).await?, expect.as_ref()).await?;
            }
            Ok::<_, BoxError>(each)
        });
    }
    join_all(clients).await
}

/// `connections` h2c connections with `streams` concurrent streams each,
/// every stream sending `each` requests.
async fn h2_load(
    data: SocketAddr,
    path: &'static str,
    connections: usize,
    streams: usize,
    each: usize,
) -> Result<usize, BoxError> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let stream = TcpStream::connect(data).await?;
        stream.set_nodelay(true)?;
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
