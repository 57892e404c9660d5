//! The demo's own background traffic, so the dashboard moves from the first
//! second: a fixed number of workers on the data port, each with at most
//! one request in flight, paced by its own interval. A slow or stopped
//! proxy only slows them: nothing queues, nothing spins.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Requests per second when nothing else is asked for.
pub const DEFAULT_RATE: u32 = 200;
/// The paths requested, in turn: the site, the API, and shoppers (a new
/// one each visit to [`SHOP`]).
pub const PATHS: &[&str] = &[
    "/",
    "/api/users",
    "/products",
    "/api/prices",
    SHOP,
    "/",
    "/api/orders",
    "/cart",
    "/api/users",
    SHOP,
];
/// A shopper's visit: the products page, then for some a checkout.
pub const SHOP: &str = "/shop/products";
/// Checkouts per 100 shoppers, by the version they were shown: the canary's
/// page converts better, for the experiment to find.
const CHECKOUT_PERCENT: [(&str, u64); 2] = [("canary", 14), ("stable", 10)];
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
        let shoppers = Arc::new(AtomicU64::new(0));
        let workers = rate.clamp(1, WORKERS);
        let period = Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
        let workers = (0..workers)
            .map(|_| {
                let (client, sent, failed, next, shoppers) = (
                    client.clone(),
                    Arc::clone(&sent),
                    Arc::clone(&failed),
                    Arc::clone(&next),
                    Arc::clone(&shoppers),
                );
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(period);
                    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        let path = PATHS[next.fetch_add(1, Ordering::Relaxed) % PATHS.len()];
                        let visit = async {
                            if path == SHOP {
                                let shopper = shoppers.fetch_add(1, Ordering::Relaxed);
                                shop(&client, data, shopper).await
                            } else {
                                one(&client, data, Method::GET, path, None).await.is_some()
                            }
                        };
                        let ok = tokio::time::timeout(REQUEST_TIMEOUT, visit)
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

/// One request, read to the end so the connection is reused: the version
/// that answered (empty when the header is off), or `None` on failure.
async fn one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    data: SocketAddr,
    method: Method,
    path: &str,
    user: Option<&str>,
) -> Option<String> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{data}{path}"));
    if let Some(user) = user {
        request = request.header("x-user-id", user);
    }
    let response = client
        .request(request.body(Empty::new()).ok()?)
        .await
        .ok()?;
    let version = response
        .headers()
        .get("x-switchyard-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    response.into_body().collect().await.ok()?;
    Some(version)
}

/// Shopper `n` looks at the products and, at its version's rate, checks out.
async fn shop(client: &Client<HttpConnector, Empty<Bytes>>, data: SocketAddr, n: u64) -> bool {
    let user = format!("shopper-{n}");
    let Some(version) = one(client, data, Method::GET, SHOP, Some(&user)).await else {
        return false;
    };
    let percent = CHECKOUT_PERCENT
        .iter()
        .find(|(name, _)| *name == version)
        .map_or(0, |(_, percent)| *percent);
    // Spreads each version's shoppers evenly over 0..100.
    if (n * 37) % 100 >= percent {
        return true;
    }
    one(client, data, Method::POST, "/shop/checkout", Some(&user))
        .await
        .is_some()
}
