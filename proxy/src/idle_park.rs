//! Serving one client connection for its whole life, and what it costs
//! while nothing happens on it.
//!
//! hyper's HTTP/1.1 connection keeps an 8 KiB read buffer and an 8 KiB write
//! buffer (and its dispatcher's state) for as long as the connection is
//! open, used or not; an idle keep-alive connection is mostly those. So an
//! HTTP/1.1 connection that the idle timer ([`crate::client_idle`]) finds
//! idle for a tick after a request is *parked*: hyper's connection is shut
//! down gracefully without closing the socket and taken apart
//! (`into_parts`), which frees its buffers; the task then waits for the
//! socket's next bytes with nothing but the socket and the timer. When bytes
//! come, a new hyper connection is built on the stream with those bytes put
//! back in front ([`Rewind`]). nginx does the same with its keep-alive
//! buffers.
//!
//! The protocol is told from the first bytes (HTTP/2's preface or not), as
//! hyper-util's auto builder does; HTTP/2 connections are served by hyper's
//! HTTP/2 connection as they are (they are exempt from the idle timer).
//! Busy connections are never parked: a tick is long against a request, so
//! the request path pays nothing for this.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use crate::client_idle::{IdleTimeout, IdleWatch};
use crate::coalesce::CoalescedWrites;
use crate::rewind::Rewind;

/// HTTP/2's connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client stream as served: small writes joined, the idle timer.
pub type ClientIo<I> = CoalescedWrites<IdleTimeout<I>>;

/// hyper's settings for both protocols.
#[derive(Clone)]
pub struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

/// Why serving a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// What hyper accepts as a service's or a body's error.
type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `io` until the client closes it, it idles out, or `shutdown`
/// changes (then requests in flight finish first; a parked connection is
/// closed at once).
pub async fn serve<I, S, B>(
    builders: &Builders,
    mut io: ClientIo<I>,
    service: S,
    watch: &IdleWatch,
    shutdown: &mut watch::Receiver<()>,
) -> Result<(), ServeError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B> + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Some(mut first) = wait_for_bytes(&mut io, shutdown).await? else {
        return Ok(());
    };
    while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first[..]) {
        match read_some(&mut io).await? {
            more if more.is_empty() => return Ok(()),
            more => first = [first, more].concat().into(),
        }
    }
    io.get_mut().unpark();
    if first.starts_with(H2_PREFACE) {
        // Boxed: an HTTP/1.1 connection's task need not have room for it.
        let mut conn = Box::pin(
            builders
                .http2
                .serve_connection(TokioIo::new(Rewind::new(io, first)), service),
        );
        return until_drained(conn.as_mut(), shutdown).await;
    }
    let mut pending = first;
    loop {
        // Boxed: the task keeps only a pointer while the connection is
        // parked, not room for hyper's whole connection.
        let conn = Box::new(
            builders
                .http1
                .serve_connection(TokioIo::new(Rewind::new(io, pending)), service.clone())
                .with_upgrades(),
        );
        let Some(parked) = serve_until_parked(conn, watch, shutdown).await? else {
            return Ok(());
        };
        watch.count_park();
        io = parked.0;
        pending = parked.1;
        if pending.is_empty() {
            io.get_mut().park();
            match wait_for_bytes(&mut io, shutdown).await? {
                Some(bytes) => pending = bytes,
                None => return Ok(()),
            }
        }
        io.get_mut().unpark();
    }
}

/// What a parked connection keeps: its stream, and bytes hyper had read
/// but not used (to be read again).
type Parked<I> = (ClientIo<I>, Bytes);

/// Drives one hyper HTTP/1.1 connection until it ends (`None`) or, asked
/// by the idle timer, is parked.
async fn serve_until_parked<I, S, B>(
    mut conn: Box<http1::UpgradeableConnection<TokioIo<Rewind<ClientIo<I>>>, S>>,
    watch: &IdleWatch,
    shutdown: &mut watch::Receiver<()>,
) -> Result<Option<Parked<I>>, ServeError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B> + Unpin,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    let mut draining = false;
    let mut changed = pin!(shutdown.changed());
    let parked = std::future::poll_fn(|cx| {
        if !draining && changed.as_mut().poll(cx).is_ready() {
            draining = true;
            Pin::new(&mut *conn).graceful_shutdown();
        }
        if let Poll::Ready(done) = Pin::new(&mut *conn).poll(cx) {
            return Poll::Ready(done.map(|()| false));
        }
        if draining || !watch.take_park_wanted() {
            return Poll::Pending;
        }
        // An idle hyper connection closes at once when shut down; one
        // that is not (a request after all) finishes its exchange and then
        // closes, as on any shutdown.
        watch.set_parking(true);
        Pin::new(&mut *conn).graceful_shutdown();
        match Pin::new(&mut *conn).poll(cx) {
            Poll::Ready(done) => Poll::Ready(done.map(|()| true)),
            Poll::Pending => {
                watch.set_parking(false);
                draining = true;
                Poll::Pending
            }
        }
    })
    .await;
    watch.set_parking(false);
    if !parked? {
        return Ok(None);
    }
    // `None`: upgraded meanwhile (cannot be: a tunnel is never idle-timed).
    let Some(parts) = conn.into_parts() else {
        return Ok(None);
    };
    let (io, unread) = parts.io.into_inner().into_inner();
    let pending = match (parts.read_buf.is_empty(), unread.is_empty()) {
        (true, _) => unread,
        (false, true) => parts.read_buf,
        (false, false) => [parts.read_buf, unread].concat().into(),
    };
    Ok(Some((io, pending)))
}

/// Drives `conn` to its end, shutting it down gracefully when `shutdown`
/// changes.
async fn until_drained<C>(
    mut conn: Pin<&mut C>,
    shutdown: &mut watch::Receiver<()>,
) -> Result<(), ServeError>
where
    C: GracefulConnection<Error = hyper::Error>,
{
    let mut draining = false;
    let mut changed = pin!(shutdown.changed());
    std::future::poll_fn(|cx| {
        if !draining && changed.as_mut().poll(cx).is_ready() {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await
    .map_err(ServeError::Http)
}

/// The next bytes of a waiting connection; `None` if it ended (closed by
/// the client, or shutdown began) before sending any.
async fn wait_for_bytes<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<I>,
    shutdown: &mut watch::Receiver<()>,
) -> io::Result<Option<Bytes>> {
    tokio::select! {
        read = read_some(io) => read.map(|bytes| (!bytes.is_empty()).then_some(bytes)),
        _ = shutdown.changed() => Ok(None),
    }
}

/// Bytes read to tell the protocol or to wake a parked connection: as many
/// as the preface, so that the common request head is left for hyper's own
/// buffer (an empty result is the end of the stream).
async fn read_some<I: AsyncRead + AsyncWrite + Unpin>(io: &mut ClientIo<I>) -> io::Result<Bytes> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let n = io.read(&mut buf).await?;
    Ok(BytesMut::from(&buf[..n]).freeze())
}

#[cfg(test)]
mod tests;
