//! The demo's own background traffic, so the dashboard moves from the first
//! second: a fixed number of workers on the data port, each with at most
//! one request in flight, paced by its own interval. A slow or stopped
//! proxy only slows them: nothing queues, nothing spins.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Requests per second when nothing else is asked for.
pub const DEFAULT_RATE: u32 = 200;
/// The paths requested, in turn: half the site, half the API.
pub const PATHS: &[&str] = &[
    "/",
    "/api/users",
    "/products",
    "/api/prices",
    "/",
    "/api/orders",
    "/cart",
    "/api/users",
];
const WORKERS: u32 = 8;
/// A request that takes longer is abandoned (and counted as failed).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The running traffic; stops when dropped.
pub struct Traffic {
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    workers: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts `rate` requests per second (at most) to `data`.
    pub fn start(data: SocketAddr, rate: u32) -> Traffic {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let workers = rate.clamp(1, WORKERS);
        let period = Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
        let workers = (0..workers)
            .map(|_| {
                let (client, sent, failed, next) = (
                    client.clone(),
                    Arc::clone(&sent),
                    Arc::clone(&failed),
                    Arc::clone(&next),
                );
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(period);
                    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        let path = PATHS[next.fetch_add(1, Ordering::Relaxed) % PATHS.len()];
                        let ok = tokio::time::timeout(REQUEST_TIMEOUT, one(&client, data, path))
                            .await
                            .unwrap_or(false);
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Traffic {
            sent,
            failed,
            workers,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Of those, the ones that got no answer at all (5xx answers count as
    /// answers: they are the proxy's to measure).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

/// One GET, read to the end so the connection is reused.
async fn one(client: &Client<HttpConnector, Empty<Bytes>>, data: SocketAddr, path: &str) -> bool {
    let Ok(uri) = format!("http://{data}{path}").parse::<http::Uri>() else {
        return false;
    };
    match client.get(uri).await {
        Ok(response) => response.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}
