//! The client idle timeout: a downstream HTTP/1.1 connection that has no
//! request in flight and starts none for `[timeouts] client_idle` is
//! closed. That covers a keep-alive connection nobody uses, a connection
//! that never sends a request, and a client trickling header bytes
//! (bytes read do not count as progress; a request starting does).
//!
//! Why not hyper's `header_read_timeout`: it allocates and registers a
//! timer for every request, about a twentieth of a request's instructions.
//! Here each connection has one timer, ticking four times per timeout: a
//! tick with a request started, one in flight or bytes written resets the
//! count; four idle ticks in a row close the connection (after between one
//! and one and a quarter timeouts of idleness).
//!
//! A request is in flight until its response body has ended ([`InFlight`]
//! travels with the body), so a slow upstream or a long download is never
//! cut. HTTP/2 connections and upgraded (WebSocket) ones are exempt: the
//! former multiplex and have their own keep-alive, the latter have the
//! tunnel's idle timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Idle ticks in a row that close a connection.
const TICKS_PER_TIMEOUT: u32 = 4;

/// What the requests of one connection tell its idle timer.
#[derive(Debug, Default)]
pub struct IdleWatch {
    started: AtomicU64,
    in_flight: AtomicU32,
    exempt: AtomicBool,
}

impl IdleWatch {
    /// A request has begun; it stays in flight until the returned guard
    /// is dropped (with its response body). An HTTP/2 request exempts its
    /// connection.
    pub fn request_started(self: &Arc<Self>, version: http::Version) -> InFlight {
        if version == http::Version::HTTP_2 {
            self.exempt();
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// How many requests the connection has begun.
    pub fn requests_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// The connection is no longer timed (it became a tunnel).
    pub fn exempt(&self) {
        self.exempt.store(true, Ordering::Relaxed);
    }
}

/// A request in flight on a watched connection.
#[derive(Debug)]
pub struct InFlight(Arc<IdleWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until it is dropped.
#[derive(Debug)]
pub struct HeldBody<B> {
    body: B,
    _in_flight: Option<InFlight>,
}

impl<B> HeldBody<B> {
    pub fn new(body: B, in_flight: Option<InFlight>) -> HeldBody<B> {
        HeldBody {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for HeldBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A downstream connection's I/O with its idle timer. The timer is looked
/// at only while the connection waits to read, which is when hyper waits
/// for the next request.
pub struct IdleTimeout<I> {
    io: I,
    watch: Arc<IdleWatch>,
    tick: Duration,
    timer: Pin<Box<Sleep>>,
    idle_ticks: u32,
    /// Requests started as of the last tick.
    seen_started: u64,
    wrote: bool,
}

impl<I> IdleTimeout<I> {
    pub fn new(io: I, watch: Arc<IdleWatch>, timeout: Duration) -> IdleTimeout<I> {
        let tick = (timeout / TICKS_PER_TIMEOUT).max(Duration::from_millis(1));
        IdleTimeout {
            io,
            watch,
            tick,
            timer: Box::pin(tokio::time::sleep(tick)),
            idle_ticks: 0,
            seen_started: 0,
            wrote: false,
        }
    }

    /// Whether the connection has been idle for the whole timeout; polls
    /// (and so arms) the timer otherwise.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.watch.exempt.load(Ordering::Relaxed) {
                return false;
            }
            let started = self.watch.started.load(Ordering::Relaxed);
            let busy = self.watch.in_flight.load(Ordering::Relaxed) > 0;
            if busy || self.wrote || started != self.seen_started {
                self.idle_ticks = 0;
            } else {
                self.idle_ticks += 1;
            }
            if self.idle_ticks >= TICKS_PER_TIMEOUT {
                return true;
            }
            self.seen_started = started;
            self.wrote = false;
            self.timer.as_mut().reset(Instant::now() + self.tick);
        }
        false
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if this.timed_out(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client idle timeout: no request within [timeouts] client_idle",
            ))),
            polled => polled,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<I> IdleTimeout<I> {
    fn note_written(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.wrote = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_millis(200);

    fn watched() -> (
        IdleTimeout<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<IdleWatch>,
    ) {
        watched_for(TIMEOUT)
    }

    fn watched_for(
        timeout: Duration,
    ) -> (
        IdleTimeout<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<IdleWatch>,
    ) {
        let (server, client) = tokio::io::duplex(1024);
        let watch = Arc::new(IdleWatch::default());
        let io = IdleTimeout::new(server, Arc::clone(&watch), timeout);
        (io, client, watch)
    }

    #[tokio::test]
    async fn a_connection_without_requests_times_out_after_the_timeout() {
        let (mut io, _client, _watch) = watched();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let error = io.read(&mut buf).await.expect_err("timed out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= TIMEOUT, "{waited:?}");
        // At most a quarter more; late timers on a busy machine add to it.
        assert!(waited < TIMEOUT * 4, "{waited:?}");
    }

    #[tokio::test]
    async fn trickled_bytes_without_a_request_do_not_keep_it_open() {
        let (mut io, mut client, _watch) = watched();
        tokio::spawn(async move {
            for _ in 0..40 {
                if client.write_all(b"G").await.is_err() {
                    return;
                }
                tokio::time::sleep(TIMEOUT / 8).await;
            }
        });
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let error = loop {
            match io.read(&mut buf).await {
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < TIMEOUT * 4, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_request_in_flight_or_starting_keeps_it_open() {
        // Longer than the others: the test's own sleeps must not look idle
        // on a busy machine.
        const TIMEOUT: Duration = Duration::from_millis(600);
        let (mut io, mut client, watch) = watched_for(TIMEOUT);
        let in_flight = watch.request_started(http::Version::HTTP_11);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            io.read(&mut buf).await.map(|n| (n, io))
        });
        tokio::time::sleep(TIMEOUT * 3).await;
        assert!(!reader.is_finished(), "closed with a request in flight");
        drop(in_flight);
        // Requests keep starting (and ending) more often than the timeout.
        for _ in 0..4 {
            tokio::time::sleep(TIMEOUT / 2).await;
            drop(watch.request_started(http::Version::HTTP_11));
        }
        assert!(!reader.is_finished(), "closed while requests kept starting");
        client.write_all(b"x").await.expect("write");
        let (n, mut io) = reader.await.expect("join").expect("read");
        assert_eq!(n, 1);
        // Idle from here on: closed.
        let mut buf = [0u8; 16];
        let error = io.read(&mut buf).await.expect_err("timed out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn http2_and_upgraded_connections_are_exempt() {
        for exempt_by_h2 in [true, false] {
            let (mut io, _client, watch) = watched();
            if exempt_by_h2 {
                drop(watch.request_started(http::Version::HTTP_2));
            } else {
                watch.exempt();
            }
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(TIMEOUT * 3, io.read(&mut buf)).await;
            assert!(read.is_err(), "the read was ended by the idle timer");
        }
    }

    #[tokio::test]
    async fn a_held_body_keeps_its_request_in_flight() {
        let watch = Arc::new(IdleWatch::default());
        let body = HeldBody::new(
            http_body_util::Full::new(Bytes::from_static(b"x")),
            Some(watch.request_started(http::Version::HTTP_11)),
        );
        assert_eq!(watch.in_flight.load(Ordering::Relaxed), 1);
        drop(body);
        assert_eq!(watch.in_flight.load(Ordering::Relaxed), 0);
    }
}
