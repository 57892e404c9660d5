//! The keep-alive connection pool for plain HTTP/1.1 upstreams, on hyper's
//! connection API: one list of idle connections per upstream address.
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
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::ProxyBody;
use crate::coalesce::CoalescedWrites;

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
    /// Nothing reached the upstream: the request may go elsewhere.
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect { .. } | PoolError::NoAuthority)
    }
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
}

/// Idle connections by upstream address; clones share them.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
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
    idle: Mutex<Vec<Idle>>,
    /// When a connection last came back (pool seconds): addresses nothing
    /// used for an idle timeout are forgotten (endpoints come and go).
    returned_secs: AtomicU64,
}

struct Idle {
    conn: Conn,
    since_secs: u64,
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

impl Pool {
    pub fn new(settings: PoolSettings) -> Pool {
        Pool {
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
    /// before writing it goes out again on another one.
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
        loop {
            let (mut conn, reused) = match host.pop() {
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
                    return Ok(response.map(|body| UpstreamBody { body, reuse }));
                }
                // hyper hands a request back only when none of it was
                // written: it can go again, on another connection.
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        request_body_streams = !unsent.body().is_end_stream();
                        req = unsent;
                    }
                    Some(_) => return Err(closed_before_sending(&authority)),
                    None => return Err(PoolError::Http(error.into_error())),
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
        let authority = authority.as_str();
        let timeout = self.shared.settings.connect_timeout;
        let failed = |source| PoolError::Connect {
            authority: authority.to_owned(),
            source,
        };
        let stream = connect_tcp(authority, timeout).await.map_err(failed)?;
        let _ = stream.set_nodelay(true);
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
        let pool = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = pool.upgrade() else { return };
                let now = shared.now_secs.fetch_add(1, Ordering::Relaxed) + 1;
                let max_age = shared.settings.idle_timeout.as_secs().max(1);
                let mut unused = false;
                for host in shared.hosts.load().values() {
                    host.evict(|idle| now.saturating_sub(idle.since_secs) >= max_age);
                    unused |= host.unused_since(now, max_age);
                }
                if unused {
                    shared.forget_unused_hosts(now, max_age);
                }
            }
        });
    }

    /// Idle connections kept for `authority` (tests and diagnostics).
    pub fn idle_count(&self, authority: &str) -> usize {
        self.shared
            .hosts
            .load()
            .get(authority)
            .map_or(0, |host| host.lock().len())
    }
}

impl Host {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used open connection (the one most likely still
    /// open and warm).
    fn pop(&self) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
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
        if idle.len() < max {
            idle.push(Idle { conn, since_secs });
        }
    }

    fn evict(&self, expired: impl Fn(&Idle) -> bool) {
        self.lock()
            .retain(|idle| !idle.conn.sender.is_closed() && !expired(idle));
    }

    fn unused_since(&self, now: u64, max_age: u64) -> bool {
        now.saturating_sub(self.returned_secs.load(Ordering::Relaxed)) >= max_age
            && self.lock().is_empty()
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

fn closed_before_sending(authority: &http::uri::Authority) -> PoolError {
    PoolError::Connect {
        authority: authority.to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the new connection closed before the request was sent",
        ),
    }
}

/// Connects to `authority`: an IP address directly, a name through the
/// resolver, trying each address with its share of `timeout` (as
/// hyper-util's connector does), so one silent address cannot use it all.
async fn connect_tcp(authority: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let timed_out = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {timeout:?}"),
        )
    };
    if let Ok(addr) = authority.parse::<std::net::SocketAddr>() {
        return tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))?;
    }
    let started = tokio::time::Instant::now();
    let addrs: Vec<std::net::SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host(authority))
            .await
            .map_err(|_| timed_out("name resolution"))??
            .collect();
    let mut last_error = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{authority} resolves to no address"),
    );
    for (tried, addr) in addrs.iter().enumerate() {
        let left = timeout.saturating_sub(started.elapsed());
        let share = left / u32::try_from(addrs.len() - tried).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last_error = error,
            Err(_) => last_error = timed_out(&format!("connect to {addr}")),
        }
    }
    Err(last_error)
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

/// A connection lent to one response, returned when its body has ended.
struct Reuse {
    conn: Conn,
    host: Arc<Host>,
    pool: Weak<Shared>,
    finished: bool,
    /// The request had a body hyper may still be writing when the response
    /// ends (an upstream answering an upload early).
    request_body_streams: bool,
}

/// An upstream response body. Read to its end, it gives its connection
/// back to the pool when dropped; dropped early or failed, the connection
/// is closed (the rest of the response would still be on it).
pub struct UpstreamBody {
    body: Incoming,
    reuse: Option<Reuse>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.reuse.is_some())
            .finish()
    }
}

impl From<Incoming> for UpstreamBody {
    /// A body whose connection the pool does not own.
    fn from(body: Incoming) -> Self {
        UpstreamBody { body, reuse: None }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            // Trailers come last; the server stops polling after them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() || this.body.is_end_stream() => {
                this.finish()
            }
            Poll::Ready(Some(Err(_))) => this.reuse = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl UpstreamBody {
    fn finish(&mut self) {
        if let Some(reuse) = &mut self.reuse {
            reuse.finished = true;
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let Some(reuse) = self.reuse.take() else {
            return;
        };
        if !(reuse.finished || self.body.is_end_stream()) {
            return;
        }
        // Still writing the request body: the next request would wait for
        // an upload that may never end. Close it instead.
        if reuse.request_body_streams && !reuse.conn.sender.is_ready() {
            return;
        }
        if let Some(pool) = reuse.pool.upgrade() {
            let now = pool.now_secs.load(Ordering::Relaxed);
            reuse
                .host
                .put(reuse.conn, now, pool.settings.max_idle_per_host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    /// A listener answering every connection with `handle` on raw bytes.
    async fn raw_server<F, Fut>(handle: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(stream));
            }
        });
        (addr, accepted)
    }

    /// Reads what a request sent first and writes `response` as it is.
    async fn answer_raw(stream: &mut tokio::net::TcpStream, response: &[u8]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream.write_all(response).await;
    }

    /// A loopback HTTP/1.1 server counting the connections it accepts.
    /// `/close` answers with `Connection: close`; `/big` with 1 MiB;
    /// `/slow/MS` after MS milliseconds.
    async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
        raw_server(|stream| async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                if let Some(ms) = req.uri().path().strip_prefix("/slow/") {
                    let ms = ms.parse().expect("milliseconds");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let mut response = match req.uri().path() {
                    "/big" => Response::new(body::full(vec![b'x'; 1 << 20])),
                    path => Response::new(body::full(path.to_string())),
                };
                if req.uri().path() == "/close" {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await
    }

    fn pool(idle_timeout: Duration, max_idle_per_host: usize) -> Pool {
        Pool::new(PoolSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout,
            max_idle_per_host,
        })
    }

    impl Pool {
        /// `send` with a timeout no test here reaches.
        async fn send_within(
            &self,
            req: Request<ProxyBody>,
        ) -> Result<Response<UpstreamBody>, PoolError> {
            self.send(req, Duration::from_secs(10)).await
        }
    }

    /// A request whose answer takes 2 s, sent with a 100 ms timeout.
    async fn assert_times_out(pool: &Pool, addr: SocketAddr) {
        let started = std::time::Instant::now();
        let error = pool
            .send(get(addr, "/slow/2000"), Duration::from_millis(100))
            .await
            .expect_err("timed out");
        assert!(matches!(error, PoolError::Timeout(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn response_headers_later_than_the_timeout_fail_with_a_timeout() {
        let (addr, _) = server().await;
        let pool = pool(Duration::from_secs(60), 8);
        assert_times_out(&pool, addr).await;
        // The connection still waiting for that answer is not lent again.
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
    }

    #[tokio::test]
    async fn a_busy_connection_outlives_the_timeout_of_its_first_request() {
        // The connection's timer, set for the first request, fires during a
        // later one: it must move to that request's deadline, not fail it.
        let (addr, accepted) = server().await;
        let pool = pool(Duration::from_secs(60), 8);
        let timeout = Duration::from_millis(500);
        let started = std::time::Instant::now();
        while started.elapsed() < timeout * 3 {
            let response = pool
                .send(get(addr, "/slow/100"), timeout)
                .await
                .expect("in time");
            assert_eq!(text(response).await, "/slow/100");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_shorter_timeout_on_a_reused_connection_applies() {
        let (addr, accepted) = server().await;
        let pool = pool(Duration::from_secs(60), 8);
        let response = pool.send_within(get(addr, "/warm")).await.expect("send");
        assert_eq!(text(response).await, "/warm");
        assert_times_out(&pool, addr).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the pooled connection was used"
        );
    }

    fn get(addr: SocketAddr, path: &str) -> Request<ProxyBody> {
        Request::builder()
            .uri(format!("http://{addr}{path}"))
            .body(body::empty())
            .expect("request")
    }

    async fn text(response: Response<UpstreamBody>) -> String {
        let bytes = response.into_body().collect().await.expect("body");
        String::from_utf8(bytes.to_bytes().to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, accepted) = server().await;
        let pool = pool(Duration::from_secs(60), 8);
        for i in 0..20 {
            let response = pool
                .send_within(get(addr, &format!("/{i}")))
                .await
                .expect("send");
            assert_eq!(text(response).await, format!("/{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(&addr.to_string()), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_and_keep_at_most_the_cap() {
        let (addr, accepted) = server().await;
        let pool = pool(Duration::from_secs(60), 2);
        let mut held = Vec::new();
        for _ in 0..4 {
            // Response heads held, bodies unread: each needs its own connection.
            held.push(pool.send_within(get(addr, "/x")).await.expect("send"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        for response in held {
            assert_eq!(text(response).await, "/x");
        }
        assert_eq!(pool.idle_count(&addr.to_string()), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (addr, accepted) = server().await;
        let pool = pool(Duration::from_secs(60), 8);
        let response = pool.send_within(get(addr, "/big")).await.expect("send");
        drop(response);
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
        // The next request gets a connection of its own, and its own answer.
        let response = pool.send_within(get(addr, "/after")).await.expect("send");
        assert_eq!(text(response).await, "/after");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_close_from_the_upstream_is_not_reused() {
        let (addr, accepted) = server().await;
        let pool = pool(Duration::from_secs(60), 8);
        for _ in 0..3 {
            let response = pool.send_within(get(addr, "/close")).await.expect("send");
            assert_eq!(text(response).await, "/close");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_replaced_without_an_error() {
        // A server that answers one request per connection, then closes
        // without saying so: the pooled connection goes stale.
        let (addr, _) = raw_server(|mut stream| async move {
            answer_raw(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            )
            .await;
        })
        .await;
        let pool = pool(Duration::from_secs(60), 8);
        // With a pause the close is seen before the next checkout; without
        // one the request may meet the closing connection and go again.
        for pause in [true, true, false, false, false, false] {
            let response = pool.send_within(get(addr, "/")).await.expect("send");
            assert_eq!(text(response).await, "ok");
            if pause {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test]
    async fn idle_connections_past_the_idle_timeout_are_closed() {
        let (addr, _) = server().await;
        let pool = pool(Duration::from_secs(1), 8);
        let response = pool.send_within(get(addr, "/")).await.expect("send");
        text(response).await;
        assert_eq!(pool.idle_count(&addr.to_string()), 1);
        // The sweeper runs once a second: gone within two.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_naming_the_address() {
        // Bound but not listening: refuses, and no other test can take the
        // port while it is held.
        let held = tokio::net::TcpSocket::new_v4().expect("socket");
        held.bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let addr = held.local_addr().expect("addr");
        let pool = pool(Duration::from_secs(60), 8);
        let error = pool.send_within(get(addr, "/")).await.expect_err("refused");
        assert!(error.is_connect());
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }

    #[tokio::test]
    async fn an_upstream_closing_new_connections_fails_fast_as_a_connect_error() {
        let (addr, accepted) = raw_server(|stream| async move { drop(stream) }).await;
        let pool = pool(Duration::from_secs(60), 8);
        let error = pool.send_within(get(addr, "/")).await.expect_err("closed");
        assert!(error.is_connect(), "{error}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one attempt, no storm");
    }

    /// A request body that never ends.
    struct Endless;
    impl Body for Endless {
        type Data = Bytes;
        type Error = crate::body::BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_connection_still_sending_an_upload_is_not_reused() {
        // Answers at once without reading the upload, and keeps the
        // connection open, as servers refusing a body early do.
        let (addr, accepted) = raw_server(|mut stream| async move {
            let too_large = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig";
            answer_raw(&mut stream, too_large).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
        .await;
        let pool = pool(Duration::from_secs(60), 8);
        let upload = Request::post(format!("http://{addr}/upload"))
            .body(crate::body::boxed(Endless))
            .expect("request");
        let response = pool.send_within(upload).await.expect("send");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(text(response).await, "big");
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_ending_in_trailers_gives_its_connection_back() {
        let (addr, accepted) = raw_server(|mut stream| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-digest\r\n\r\n2\r\nok\r\n0\r\nx-digest: 1\r\n\r\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let pool = pool(Duration::from_secs(60), 8);
        for _ in 0..3 {
            let mut request = get(addr, "/");
            request
                .headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
            let mut body = pool.send_within(request).await.expect("send").into_body();
            // Read as hyper's server does: up to the trailers, then drop.
            loop {
                let frame = body.frame().await.expect("frame").expect("ok");
                if frame.is_trailers() {
                    break;
                }
            }
            drop(body);
            assert_eq!(pool.idle_count(&addr.to_string()), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_endpoint_named_by_host_name_is_resolved() {
        let (addr, _) = server().await;
        let pool = pool(Duration::from_secs(60), 8);
        let request = Request::builder()
            .uri(format!("http://localhost:{}/named", addr.port()))
            .body(body::empty())
            .expect("request");
        let response = pool.send_within(request).await.expect("send");
        assert_eq!(text(response).await, "/named");
    }
}
