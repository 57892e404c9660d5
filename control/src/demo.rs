//! `switchyard demo`: three demo backends (stable, canary, green) in this
//! process, the proxy in front of them at 90/10/0, and curl lines to try.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::Config;

/// Starts one demo backend on an ephemeral loopback port: it answers every
/// request with its name after 1–5 ms of jitter.
pub async fn backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let jitter = 1 + rand::random::<u64>() % 5;
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    let text = format!(
                        "hello from {name} ({} {})\n",
                        req.method(),
                        req.uri().path()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config: one route splitting 90/10/0 over the three backends.
pub fn config(data: SocketAddr, admin: SocketAddr, backends: [SocketAddr; 3]) -> String {
    let [stable, canary, green] = backends;
    format!(
        r#"[listen]
data = "{data}"
admin = "{admin}"

[[routes]]
name = "web"
path_prefix = "/"

  [[routes.versions]]
  name = "stable"
  weight = 90
  endpoints = ["{stable}"]

  [[routes.versions]]
  name = "canary"
  weight = 10
  endpoints = ["{canary}"]

  [[routes.versions]]
  name = "green"
  weight = 0
  endpoints = ["{green}"]
"#
    )
}

/// Runs the demo until Ctrl-C.
pub async fn run(data: SocketAddr, admin: SocketAddr) -> Result<(), crate::BoxError> {
    let backends = [
        backend("stable").await?,
        backend("canary").await?,
        backend("green").await?,
    ];
    let text = config(data, admin, backends);
    let config = Config::parse(&text, "demo").map_err(|e| e.to_string())?;
    let running = crate::run::start(&config)
        .await
        .map_err(|e| e.to_string())?;
    let data = running.data_addr;
    // Under `cargo run` the binary is not on PATH: print the one running.
    let exe = std::env::current_exe()
        .map_or_else(|_| "switchyard".to_owned(), |p| p.display().to_string());
    println!(
        "switchyard demo: proxy on http://{data}, backends stable={} canary={} green={}\n\
         \n  curl -si http://{data}/                      # 90% stable, 10% canary (see x-switchyard-version)\n  \
         for i in $(seq 20); do curl -s http://{data}/; done | sort | uniq -c\n\
         \nChange the split (admin API on {admin}):\n  \
         curl -s http://{admin}/api/v1/routes\n  \
         {exe} ctl --admin {admin} set-weights web stable=50 canary=50\n  \
         {exe} ctl --admin {admin} flip web stable green   # blue-green\n  \
         {exe} ctl --admin {admin} rollback web\n  \
         {exe} ctl --admin {admin} history\n\
         \nLive dashboard: {}\n\
         \nPress Ctrl-C to stop.",
        backends[0],
        backends[1],
        backends[2],
        crate::dashboard::url(running.admin_addr),
        admin = running.admin_addr,
        exe = exe,
    );
    let _ = tokio::signal::ctrl_c().await;
    running.shutdown().await;
    Ok(())
}
