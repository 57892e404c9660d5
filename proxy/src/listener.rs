//! The data listener: binds the socket, accepts connections (with a TLS
//! handshake first when configured) and serves each ([`crate::idle_park`]:
//! HTTP/1.1 and h2 — prior knowledge in clear text, ALPN over TLS — on one
//! port, idle HTTP/1.1 connections parked without hyper's buffers), then
//! drains in-flight requests on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::client_idle::{IdleTimeout, IdleWatch};
use crate::coalesce::CoalescedWrites;
use crate::connection::ClientConnection;
use crate::handler::Proxy;
use crate::idle_park::{self, Builders};
use crate::limits::ClientLimits;
use crate::tls::ServerTls;

/// Downstream connection behaviour.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// An HTTP/1.1 connection with no request in flight that starts none
    /// for this long is closed ([`crate::client_idle`]); also the TLS
    /// handshake's limit.
    pub client_idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Terminate TLS (the handshake may take `client_idle_timeout`).
    pub tls: Option<Arc<ServerTls>>,
    /// Header, connection and stream limits ([`crate::limits`]).
    pub limits: ClientLimits,
    /// Counts connections closed at once for `limits.max_connections`.
    pub connections_rejected: Arc<AtomicU64>,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            client_idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            tls: None,
            limits: ClientLimits::default(),
            connections_rejected: Arc::default(),
        }
    }
}

/// Binds a listening socket (SO_REUSEADDR, large backlog), ready for tokio.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts connections until `shutdown` resolves, then stops accepting and
/// waits (up to the drain timeout) for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    settings: ListenerSettings,
    active: Arc<AtomicI64>,
    shutdown: impl Future<Output = ()>,
) {
    let builders = Arc::new(connection_builders(&settings.limits));
    let max_connections = i64::try_from(settings.limits.max_connections).unwrap_or(i64::MAX);
    // Every connection holds a receiver: a change starts the drain, and the
    // drain ends when the last receiver is gone.
    let (drain, draining) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if active.load(Ordering::Relaxed) >= max_connections {
            // Closed at once, before any byte is read: existing connections
            // are untouched, and a client sees a reset, not a hung connect.
            settings
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (proxy, builders) = (proxy.clone(), Arc::clone(&builders));
        let draining = draining.clone();
        let idle_timeout = settings.client_idle_timeout;
        let open = OpenConnection::new(&active);
        // Two tasks of their own types: a clear-text connection's task has
        // no room for a TLS stream.
        match settings.tls.clone() {
            None => tokio::spawn(async move {
                serve_connection(&builders, draining, proxy, client, idle_timeout, stream).await;
                drop(open);
            }),
            Some(tls) => tokio::spawn(async move {
                match tls.accept(stream, idle_timeout).await {
                    Ok(stream) => {
                        serve_connection(&builders, draining, proxy, client, idle_timeout, stream)
                            .await;
                    }
                    Err(error) => tracing::debug!(%error, %client, "TLS handshake failed"),
                }
                drop(open);
            }),
        };
    }
    drop(listener);
    drop(draining);
    let _ = drain.send(());
    if tokio::time::timeout(settings.drain_timeout, drain.closed())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

/// Serves one client connection over any byte stream as the accept loop
/// serves an accepted socket (the same connection settings, idle timer,
/// parking and write coalescing; no TLS), until it closes. Drives the proxy
/// without sockets (in-memory tests, the fuzz targets); dropping the future
/// closes the connection, there is no drain. Returns how many requests the
/// connection carried.
pub async fn serve_stream<I>(
    io: I,
    proxy: Proxy,
    settings: &ListenerSettings,
    client: SocketAddr,
) -> u64
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builders = connection_builders(&settings.limits);
    // Kept until the connection ends: its end would start a drain.
    let (_drain, draining) = watch::channel(());
    serve_connection(
        &builders,
        draining,
        proxy,
        client,
        settings.client_idle_timeout,
        io,
    )
    .await
}

/// Counts a connection open until it is dropped.
struct OpenConnection(Arc<AtomicI64>);

impl OpenConnection {
    fn new(active: &Arc<AtomicI64>) -> OpenConnection {
        active.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(active))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// hyper's connection settings: header limits as a backstop (see
/// [`crate::limits`]), and HTTP/2's defences.
fn connection_builders(limits: &ClientLimits) -> Builders {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // `client_idle` applies through IdleTimeout, one timer per
        // connection instead of hyper's one per request.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(limits.hyper_max_buf_size())
        .max_headers(limits.hyper_max_headers());
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        // CONTINUATION floods: h2 stops decoding a header block past
        // SETTINGS_MAX_HEADER_LIST_SIZE (431 for that stream) and closes
        // the connection (ENHANCE_YOUR_CALM) when the CONTINUATION frames
        // of one block outgrow what that size allows.
        .max_header_list_size(limits.h2_max_header_list_size())
        // Rapid reset (CVE-2023-44487): streams the client opened and reset
        // before the proxy accepted them count against this; beyond it the
        // connection is closed with ENHANCE_YOUR_CALM.
        .max_pending_accept_reset_streams(Some(RESET_STREAMS))
        // Streams the proxy itself had to reset (protocol errors the client
        // provokes): beyond this many the connection is closed.
        .max_local_error_reset_streams(Some(RESET_STREAMS));
    Builders { http1, http2 }
}

/// hyper's (and h2's) own default for both reset limits.
const RESET_STREAMS: usize = 20;

/// Serves one connection (plain TCP or TLS) until it closes; shutdown
/// drains it. Returns how many requests it carried.
async fn serve_connection<I>(
    builders: &Builders,
    mut draining: watch::Receiver<()>,
    proxy: Proxy,
    client: SocketAddr,
    idle_timeout: Duration,
    io: I,
) -> u64
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(IdleWatch::default());
    let io = CoalescedWrites::new(IdleTimeout::new(io, Arc::clone(&watch), idle_timeout));
    // Shared, not cloned field by field: each request takes one reference.
    let connection = Arc::new(ClientConnection::new(client).with_idle_watch(Arc::clone(&watch)));
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let connection = Arc::clone(&connection);
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, &connection).await) }
    });
    if let Err(error) = idle_park::serve(builders, io, service, &watch, &mut draining).await {
        tracing::debug!(error = %error, %client, "connection ended with an error");
    }
    watch.requests_started()
}
