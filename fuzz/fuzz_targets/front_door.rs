//! Arbitrary bytes into the proxy's front door: one client connection served
//! by the real connection handling (`serve_stream`: hyper's auto builder
//! with the proxy's limits, idle timer and handler) over an in-memory duplex
//! stream, with in-memory hyper upstreams behind the real pool. Nothing may
//! panic; no client request may reach the upstreams twice (upstream
//! requests never outnumber the requests the connection carried, retries
//! included: one endpoint of `stable` refuses connections, so half its
//! requests are retried on the other); and once the client goes away the
//! connection ends.
//!
//! Runs on a paused clock: timeouts (idle, upstream, waits below) pass as
//! soon as nothing else can run.
#![no_main]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use switchyard_control::Config;
use switchyard_proxy::pool::MemoryConnect;
use switchyard_proxy::{serve_stream, ListenerSettings, Proxy, TableHandle, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[timeouts]
client_idle = "10s"
upstream_response = "5s"

[limits]
max_request_header_bytes = 8192

[[routes]]
name = "web"
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["down.test:80", "stable.test:80"]
  [[routes.versions]]
  name = "canary"
  weight = 1
  endpoints = ["canary.test:80"]

[[routes]]
name = "small"
path_prefix = "/small/"
max_request_body_bytes = 16
  [[routes.versions]]
  name = "stable"
  weight = 1
  endpoints = ["stable.test:80"]
"#;

/// Longer than every timeout above: when it passes, the proxy is idle.
const QUIET: Duration = Duration::from_secs(60);
/// Output kept from the proxy (the rest is read and dropped).
const MAX_OUTPUT: usize = 1 << 20;

fn config() -> &'static Config {
    static CONFIG_PARSED: OnceLock<Config> = OnceLock::new();
    CONFIG_PARSED
        .get_or_init(|| Config::parse(CONFIG, "fuzz.toml").expect("the fixed config is valid"))
}

/// An upstream per connection: a hyper server on the other end of a
/// duplex stream, answering every request at once and counting them.
fn upstreams(requests: Arc<AtomicU64>) -> MemoryConnect {
    MemoryConnect::new(move |authority| {
        if authority.host() == "down.test" {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "down"));
        }
        let (proxy_end, upstream_end) = tokio::io::duplex(64 * 1024);
        let requests = Arc::clone(&requests);
        let service = service_fn(move |_req: Request<Incoming>| {
            requests.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n")))) }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(upstream_end), service),
        );
        Ok(proxy_end)
    })
}

async fn exchange(input: Vec<u8>) -> (u64, u64, Vec<u8>) {
    let config = config();
    let upstream_requests = Arc::new(AtomicU64::new(0));
    let table = TableHandle::new(config.table_spec()).expect("the fixed config builds");
    let upstream = Upstream::in_memory(
        &config.upstream_settings(),
        upstreams(Arc::clone(&upstream_requests)),
    );
    let proxy = Proxy::new(table, upstream, "http").with_limits(config.limits.client());
    let settings = ListenerSettings {
        client_idle_timeout: Duration::from_secs(10),
        limits: config.limits.client(),
        ..ListenerSettings::default()
    };
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "192.0.2.1:40000".parse().expect("address");
    let served =
        tokio::spawn(async move { serve_stream(server_end, proxy, &settings, peer).await });

    let (mut from_proxy, mut to_proxy) = tokio::io::split(client);
    // Written while the answers are read: the proxy may answer (and wait
    // for the answer to be read) before it reads everything. The write
    // half stays open: a client that half-closes mid-request loses it.
    let writer = tokio::spawn(async move {
        let _ = to_proxy.write_all(&input).await;
        to_proxy
    });
    let mut output = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(QUIET, from_proxy.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let room = MAX_OUTPUT.saturating_sub(output.len());
                output.extend_from_slice(&buf[..n.min(room)]);
            }
            // Closed by the proxy, or nothing more to say.
            _ => break,
        }
    }
    // The client goes away (a write the proxy never read is abandoned):
    // the connection must end.
    writer.abort();
    drop((writer.await, from_proxy));
    let requests = match tokio::time::timeout(QUIET, served).await {
        Ok(Ok(requests)) => requests,
        Ok(Err(panicked)) => std::panic::resume_unwind(panicked.into_panic()),
        Err(_) => panic!("the connection outlived its client"),
    };
    (requests, upstream_requests.load(Ordering::SeqCst), output)
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let (requests, upstream_requests, output) = runtime.block_on(exchange(data.to_vec()));
    assert!(
        upstream_requests <= requests,
        "{upstream_requests} upstream requests for {requests} client requests; answers:\n{}",
        String::from_utf8_lossy(&output)
    );
});
