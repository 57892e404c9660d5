//! HTTP/2 upstreams (`http2 = true`: h2 by ALPN over TLS, prior knowledge
//! in clear text): one multiplexed connection per address, shared by every
//! request to it, opened by the same [`Connect`] the HTTP/1.1 pool uses.
//!
//! Concurrent first requests wait for one connection instead of each
//! opening its own; a connection the upstream closed is replaced by the next
//! request; one that carried nothing for the idle timeout is let go (its
//! open streams finish first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::{connect, every_second, Connect, PoolError, UpstreamBody};
use crate::body::ProxyBody;

/// One shared HTTP/2 connection per upstream address; clones share them.
#[derive(Clone)]
pub struct Multiplexed<C> {
    shared: Arc<Shared>,
    connector: C,
}

struct Shared {
    idle_timeout: Duration,
    started: Instant,
    addresses: Mutex<HashMap<Box<str>, Arc<Slot>>>,
    sweeper_started: AtomicBool,
}

/// The connection to one address, while it has one.
#[derive(Default)]
struct Slot {
    /// Async: requests that find no connection wait for the one being made.
    sender: tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
    /// When a request last used it, in seconds since the pool started.
    used_secs: AtomicU64,
}

impl<C: Connect> Multiplexed<C> {
    pub fn new(idle_timeout: Duration, connector: C) -> Multiplexed<C> {
        Multiplexed {
            connector,
            shared: Arc::new(Shared {
                idle_timeout,
                started: Instant::now(),
                addresses: Mutex::default(),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (absolute URI: its authority picks the connection) and
    /// waits up to `timeout`, connecting included, for the response headers.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let deadline = Instant::now() + timeout;
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(PoolError::NoAuthority);
        };
        let exchange = async {
            let mut sender = self.sender(&authority).await?;
            Ok(sender.send_request(req).await?)
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(response) => response.map(|response| response.map(UpstreamBody::from)),
            Err(_) => Err(PoolError::Timeout(timeout)),
        }
    }

    /// The address's open connection, or a new one.
    async fn sender(&self, authority: &Authority) -> Result<SendRequest<ProxyBody>, PoolError> {
        let slot = self.slot(authority.as_str());
        slot.used_secs
            .store(self.shared.started.elapsed().as_secs(), Ordering::Relaxed);
        let mut current = slot.sender.lock().await;
        if let Some(sender) = current.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok(sender.clone());
        }
        self.start_sweeper();
        let io = connect::open(&self.connector, authority).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
            }
        });
        *current = Some(sender.clone());
        Ok(sender)
    }

    fn slot(&self, authority: &str) -> Arc<Slot> {
        let mut addresses = self
            .shared
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(addresses.entry(authority.into()).or_default())
    }

    /// Lets go of connections (and forgets addresses) unused for the idle
    /// timeout, once a second, for as long as the pool exists.
    fn start_sweeper(&self) {
        if self.shared.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        every_second(Arc::downgrade(&self.shared), |shared| {
            let now = shared.started.elapsed().as_secs();
            let max_age = shared.idle_timeout.as_secs().max(1);
            shared
                .addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, slot| {
                    let idle = now.saturating_sub(slot.used_secs.load(Ordering::Relaxed));
                    // Busy connecting: in use.
                    idle < max_age || slot.sender.try_lock().is_err()
                });
        });
    }

    /// Whether a connection to `authority` is open (tests and diagnostics).
    pub fn is_connected(&self, authority: &str) -> bool {
        let slot = self
            .shared
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(authority)
            .cloned();
        slot.and_then(|slot| {
            slot.sender
                .try_lock()
                .ok()
                .map(|sender| sender.as_ref().is_some_and(|s| !s.is_closed()))
        })
        .unwrap_or(false)
    }
}
