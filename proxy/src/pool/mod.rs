//! The upstream connection pools, on hyper's connection API: for HTTP/1.1
//! one list of idle keep-alive connections per upstream address
//! ([`Pool`]), for HTTP/2 one shared multiplexed connection per address
//! ([`http2::Multiplexed`]). Both are generic over how a connection is
//! opened ([`connect`]: plain TCP or TLS; [`memory`]: in-memory streams for
//! tests and fuzzing), so every upstream, whatever its transport, goes
//! through the same design.
//!
//! Why not hyper-util's legacy client: on the request path it hashed its
//! pool key several times per request and spawned a task per request to
//! notice when the connection became idle again, together about a fifth of
//! the proxy's instructions per request. Here a connection goes back to its
//! list when the response body it carried has ended ([`UpstreamBody`]'s
//! drop), and a checkout is one lookup and a pop.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode};
use http_body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};

use crate::body::ProxyBody;
use crate::coalesce::CoalescedWrites;
use crate::forward;

mod body;
pub mod connect;
pub mod http2;
pub mod memory;

use body::Reuse;
pub use body::UpstreamBody;
pub use connect::{Alpn, Connect, TcpConnect, TlsConnect};
pub use memory::{MemoryConnect, PlainConnect};

/// Why an upstream exchange failed before its response headers arrived.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect to {authority}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the upstream request has no address (authority) in its URI")]
    NoAuthority,
    #[error("no response headers within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl PoolError {
    fn connect(authority: &http::uri::Authority, source: std::io::Error) -> PoolError {
        PoolError::Connect {
            authority: authority.to_string(),
            source,
        }
    }

    /// Nothing reached the upstream: the request may go elsewhere.
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect { .. } | PoolError::NoAuthority)
    }
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
}

/// Idle HTTP/1.1 connections by upstream address, opened by `C`; clones
/// share them.
#[derive(Clone)]
pub struct Pool<C> {
    shared: Arc<Shared>,
    connector: C,
}

struct Shared {
    settings: PoolSettings,
    /// Read on every request, written when a new address is first used.
    hosts: ArcSwap<HashMap<Box<str>, Arc<Host>>>,
    adding: Mutex<()>,
    /// Seconds since the pool started, advanced by the sweeper; idle
    /// connections are stamped with it (cheaper than reading a clock).
    now_secs: AtomicU64,
    sweeper_started: AtomicBool,
}

/// The idle connections to one address, most recently used last.
#[derive(Default)]
struct Host {
    idle: Mutex<IdleList>,
    /// When a connection last came back (pool seconds): addresses nothing
    /// used for an idle timeout are forgotten (endpoints come and go).
    returned_secs: AtomicU64,
}

struct Idle {
    conn: Conn,
    since_secs: u64,
}

/// Idle connections, most recently used last, and how many at the front no
/// checkout has reached since the last purge (checkouts pop from the back):
/// the surplus a burst left behind.
#[derive(Default)]
struct IdleList {
    conns: Vec<Idle>,
    untouched: usize,
}

impl IdleList {
    /// Closes half the connections nothing needed since the last purge, the
    /// oldest first, as HAProxy's `pool-purge-delay` does: a burst's
    /// connections (each with hyper's buffers, ~30 KiB) go within seconds
    /// instead of staying for the idle timeout, while steady traffic, which
    /// touches every connection it needs each second, keeps them all. A
    /// single spare connection stays.
    fn purge(&mut self) {
        self.conns.drain(..self.untouched / 2);
        self.untouched = self.conns.len();
    }

    fn retain(&mut self, mut keep: impl FnMut(&Idle) -> bool) {
        let mut index = 0;
        let mut removed_untouched = 0;
        let untouched = self.untouched;
        self.conns.retain(|idle| {
            let kept = keep(idle);
            removed_untouched += usize::from(!kept && index < untouched);
            index += 1;
            kept
        });
        self.untouched -= removed_untouched;
    }
}

/// Waits for `exchange` until `deadline`; `None` if it passes first.
///
/// Registering a timer per request is, after the HTTP work itself, the
/// largest cost a request has. Responses come long before the timeout,
/// so the timer is left where it is when it would fire before the
/// deadline (it was set for an earlier request): when it does fire, the
/// deadline is checked and the timer moved to it. A busy connection
/// re-arms about once per timeout instead of once per request.
async fn respond_by<F: Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: Instant,
    mut exchange: Pin<&mut F>,
) -> Option<F::Output> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = exchange.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// A pooled connection and its response timer.
struct Conn {
    sender: SendRequest<ProxyBody>,
    /// Bounds the wait for response headers. It belongs to the connection
    /// rather than the request so that it is armed once per timeout period
    /// instead of once per request (see [`respond_by`]).
    timer: Pin<Box<Sleep>>,
}

impl Conn {
    fn new(sender: SendRequest<ProxyBody>, deadline: Instant) -> Conn {
        Conn {
            sender,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl<C: Connect> Pool<C> {
    pub fn new(settings: PoolSettings, connector: C) -> Pool<C> {
        Pool {
            connector,
            shared: Arc::new(Shared {
                settings,
                hosts: ArcSwap::default(),
                adding: Mutex::new(()),
                now_secs: AtomicU64::new(0),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (absolute URI: its authority picks the connection) on an
    /// idle connection, or a new one, and waits up to `timeout` for the
    /// response headers. A request that an idle connection closed under
    /// before writing it goes out again on another one. One that it closed
    /// under unanswered after writing it (the upstream reaped the idle
    /// connection just as it was reused) goes out once more, on a new
    /// connection, when sending it twice is safe: an idempotent method
    /// without a body ([`forward::replayable_copy`]).
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let deadline = Instant::now() + timeout;
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(PoolError::NoAuthority);
        };
        let host = self.host(authority.as_str());
        origin_form(&mut req, &authority);
        let mut request_body_streams = !req.body().is_end_stream();
        // Set once the request has been sent again: on a new connection.
        let mut replayed = false;
        loop {
            let idle = if replayed { None } else { host.pop() };
            let (mut conn, reused) = match idle {
                Some(conn) => (conn, true),
                // Boxed: the connect path is rare, and would otherwise make
                // every request's future larger.
                None => {
                    let connect = tokio::time::timeout_at(deadline, self.connect(&authority));
                    let sender = Box::pin(connect)
                        .await
                        .map_err(|_| PoolError::Timeout(timeout))??;
                    (Conn::new(sender, deadline), false)
                }
            };
            // The previous exchange on a reused connection has ended, but its
            // task may not have noticed yet: wait a moment. A new connection
            // that is not ready closed before the request could be written.
            if !conn.sender.is_ready() && !wait_ready(&mut conn.sender, reused).await {
                if reused {
                    continue;
                }
                return Err(closed_before_sending(&authority));
            }
            // Only a reused connection can have been closed by the upstream
            // meanwhile; the copy costs a clone of the request head.
            let mut replay = match reused && !replayed {
                true => forward::replayable_copy(&req),
                false => None,
            };
            let exchange = pin!(conn.sender.try_send_request(req));
            let Some(outcome) = respond_by(&mut conn.timer, deadline, exchange).await else {
                return Err(PoolError::Timeout(timeout));
            };
            match outcome {
                Ok(response) => {
                    let reuse =
                        (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Reuse {
                            conn,
                            host,
                            pool: Arc::downgrade(&self.shared),
                            finished: false,
                            request_body_streams,
                        });
                    return Ok(response.map(|body| UpstreamBody::pooled(body, reuse)));
                }
                // hyper hands a request back only when none of it was
                // written: it can go again, on another connection.
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        request_body_streams = !unsent.body().is_end_stream();
                        req = unsent;
                    }
                    Some(_) => return Err(closed_before_sending(&authority)),
                    None => {
                        let error = error.into_error();
                        match replay.take() {
                            Some(copy) if closed_unanswered(&error) => {
                                tracing::debug!(%error, %authority, "reused connection closed unanswered: sending again on a new one");
                                req = copy;
                                request_body_streams = false;
                                replayed = true;
                            }
                            _ => return Err(PoolError::Http(error)),
                        }
                    }
                },
            }
        }
    }

    fn host(&self, authority: &str) -> Arc<Host> {
        if let Some(host) = self.shared.hosts.load().get(authority) {
            return Arc::clone(host);
        }
        let _adding = self
            .shared
            .adding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let hosts = self.shared.hosts.load();
        if let Some(host) = hosts.get(authority) {
            return Arc::clone(host);
        }
        let host = Arc::new(Host::default());
        let mut with_new = HashMap::clone(&hosts);
        with_new.insert(authority.into(), Arc::clone(&host));
        self.shared.hosts.store(Arc::new(with_new));
        host
    }

    async fn connect(
        &self,
        authority: &http::uri::Authority,
    ) -> Result<SendRequest<ProxyBody>, PoolError> {
        self.start_sweeper();
        let stream = connect::open(&self.connector, authority).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(CoalescedWrites::new(stream)))
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Closes idle connections past the idle timeout, once a second, for as
    /// long as the pool exists. Started by the first connection (a pool may
    /// be built before the runtime).
    fn start_sweeper(&self) {
        if self.shared.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        every_second(Arc::downgrade(&self.shared), |shared| {
            let now = shared.now_secs.fetch_add(1, Ordering::Relaxed) + 1;
            let max_age = shared.settings.idle_timeout.as_secs().max(1);
            let mut unused = false;
            for host in shared.hosts.load().values() {
                host.evict(|idle| now.saturating_sub(idle.since_secs) >= max_age);
                host.lock().purge();
                unused |= host.unused_since(now, max_age);
            }
            if unused {
                shared.forget_unused_hosts(now, max_age);
            }
        });
    }

    /// Whether `other` shares this pool's connections.
    #[cfg(test)]
    pub(crate) fn same_pool(&self, other: &Pool<C>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Idle connections kept for `authority` (tests and diagnostics).
    pub fn idle_count(&self, authority: &str) -> usize {
        self.shared
            .hosts
            .load()
            .get(authority)
            .map_or(0, |host| host.lock().conns.len())
    }
}

/// Runs `tick` on `target` once a second for as long as it exists.
fn every_second<T: Send + Sync + 'static>(target: Weak<T>, tick: impl Fn(&T) + Send + 'static) {
    tokio::spawn(async move {
        let mut timer = tokio::time::interval(Duration::from_secs(1));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await;
        loop {
            timer.tick().await;
            let Some(target) = target.upgrade() else {
                return;
            };
            tick(&target);
        }
    });
}

impl Host {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleList> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used open connection (the one most likely still
    /// open and warm).
    fn pop(&self) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(entry) = idle.conns.pop() {
            idle.untouched = idle.untouched.min(idle.conns.len());
            if !entry.conn.sender.is_closed() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put(&self, conn: Conn, since_secs: u64, max: usize) {
        if conn.sender.is_closed() {
            return;
        }
        self.returned_secs.store(since_secs, Ordering::Relaxed);
        let mut idle = self.lock();
        if idle.conns.len() < max {
            idle.conns.push(Idle { conn, since_secs });
        }
    }

    fn evict(&self, expired: impl Fn(&Idle) -> bool) {
        self.lock()
            .retain(|idle| !idle.conn.sender.is_closed() && !expired(idle));
    }

    fn unused_since(&self, now: u64, max_age: u64) -> bool {
        now.saturating_sub(self.returned_secs.load(Ordering::Relaxed)) >= max_age
            && self.lock().conns.is_empty()
    }
}

impl Shared {
    /// Drops addresses without idle connections that nothing returned a
    /// connection to for `max_age` (a request in flight keeps its own
    /// reference; its connection is then closed instead of kept).
    fn forget_unused_hosts(&self, now: u64, max_age: u64) {
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hosts = HashMap::clone(&self.hosts.load());
        hosts.retain(|_, host| !host.unused_since(now, max_age));
        self.hosts.store(Arc::new(hosts));
    }
}

/// How long a reused connection may take to become ready again after its
/// previous response ended (normally no time at all).
const READY_WAIT: Duration = Duration::from_secs(1);

/// Waits for `sender` to accept a request; `false` if it closed (or, for a
/// reused connection, stayed busy past [`READY_WAIT`]).
async fn wait_ready(sender: &mut SendRequest<ProxyBody>, reused: bool) -> bool {
    if !reused {
        return sender.ready().await.is_ok();
    }
    matches!(
        tokio::time::timeout(READY_WAIT, sender.ready()).await,
        Ok(Ok(()))
    )
}

/// The connection closed (or was reset) before any answer came: what an
/// upstream closing an idle keep-alive connection looks like to the request
/// that reused it.
fn closed_unanswered(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        source = cause.source();
    }
    false
}

fn closed_before_sending(authority: &http::uri::Authority) -> PoolError {
    PoolError::connect(
        authority,
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the new connection closed before the request was sent",
        ),
    )
}

/// Rewrites an absolute upstream URI to the origin form an HTTP/1.1 request
/// line carries, keeping the address as Host when the request has none.
fn origin_form(req: &mut Request<ProxyBody>, authority: &http::uri::Authority) {
    if !req.headers().contains_key(header::HOST) {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

#[cfg(test)]
mod tests;
