//! The client idle timeout, and when an idle HTTP/1.1 connection is parked.
//!
//! A downstream HTTP/1.1 connection that has no request in flight and starts
//! none for `[timeouts] client_idle` is closed. That covers a keep-alive
//! connection nobody uses, a connection that never sends a request, and a
//! client trickling header bytes (bytes read do not count as progress; a
//! request starting does).
//!
//! Why not hyper's `header_read_timeout`: it allocates and registers a
//! timer for every request, about a twentieth of a request's instructions.
//! Here each connection has one timer. While the connection is served it
//! ticks every [`PARK_TICK`] (a quarter of the timeout if that is shorter):
//! a tick with a request started, one in flight or bytes written resets the
//! count; idle ticks adding up to the timeout close the connection. The
//! first idle tick after a request asks the connection's driver to *park*
//! it ([`crate::idle_park`]): hyper's state and buffers are dropped, and
//! the timer, now with nothing to watch but the socket, is set once for
//! what is left of the timeout. A connection that has not sent its first
//! bytes waits the same way.
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

/// The longest tick of an active connection's timer: an idle keep-alive
/// connection is parked after one to two of these.
pub const PARK_TICK: Duration = Duration::from_secs(1);

/// Ticks per timeout at most (a timeout shorter than four
/// [`PARK_TICK`]s is ticked in quarters).
const TICKS_PER_TIMEOUT: u32 = 4;

/// What the requests of one connection tell its idle timer, and what the
/// timer tells the connection's driver.
#[derive(Debug, Default)]
pub struct IdleWatch {
    started: AtomicU64,
    in_flight: AtomicU32,
    exempt: AtomicBool,
    /// The timer found the connection idle for a tick, with nothing left
    /// to write: the driver may park it.
    park_wanted: AtomicBool,
    /// The driver is taking hyper's connection apart to park it: its
    /// shutdown of the stream must leave the socket open.
    parking: AtomicBool,
    /// Times hyper's connection was taken apart while idle.
    parks: AtomicU64,
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

    /// Whether the timer asked for the connection to be parked (once).
    pub fn take_park_wanted(&self) -> bool {
        self.park_wanted.load(Ordering::Relaxed) && self.park_wanted.swap(false, Ordering::Relaxed)
    }

    /// While set, shutting the stream down leaves the socket open.
    pub fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    /// hyper's connection was taken apart while idle.
    pub fn count_park(&self) {
        self.parks.fetch_add(1, Ordering::Relaxed);
    }

    /// Times the connection was parked.
    pub fn parks(&self) -> u64 {
        self.parks.load(Ordering::Relaxed)
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
/// for the next request (or a parked connection for its next bytes).
pub struct IdleTimeout<I> {
    io: I,
    watch: Arc<IdleWatch>,
    tick: Duration,
    ticks_per_timeout: u32,
    timer: Pin<Box<Sleep>>,
    idle_ticks: u32,
    /// Requests started as of the last tick.
    seen_started: u64,
    /// Requests started when the connection was last unparked: one must
    /// have started since for hyper's connection to be idle between two.
    started_at_unpark: u64,
    wrote: bool,
    /// The last write or flush could not finish: bytes wait in a buffer.
    write_blocked: bool,
    /// Parked (or waiting for its first bytes) since then: the timer is
    /// set for the rest of the timeout.
    parked_at: Option<Instant>,
}

impl<I> IdleTimeout<I> {
    /// Starts parked: nothing to watch until the client's first bytes.
    pub fn new(io: I, watch: Arc<IdleWatch>, timeout: Duration) -> IdleTimeout<I> {
        let tick = (timeout / TICKS_PER_TIMEOUT)
            .min(PARK_TICK)
            .max(Duration::from_millis(1));
        let ticks_per_timeout =
            u32::try_from(timeout.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u32::MAX);
        IdleTimeout {
            io,
            watch,
            tick,
            ticks_per_timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            idle_ticks: 0,
            seen_started: 0,
            started_at_unpark: 0,
            wrote: false,
            write_blocked: false,
            parked_at: Some(Instant::now()),
        }
    }

    /// The driver took hyper's connection away: from now on the timer
    /// fires once, when the rest of the timeout has passed.
    pub fn park(&mut self) {
        let now = Instant::now();
        self.parked_at = Some(now);
        let left = self.ticks_per_timeout.saturating_sub(self.idle_ticks);
        self.timer.as_mut().reset(now + self.tick * left);
    }

    /// Bytes arrived on a parked connection: ticking again, the time
    /// spent parked counted as idle (bytes are not a request).
    pub fn unpark(&mut self) {
        let now = Instant::now();
        if let Some(parked_at) = self.parked_at.take() {
            let parked_ticks = (now - parked_at).as_nanos() / self.tick.as_nanos();
            self.idle_ticks = self
                .idle_ticks
                .saturating_add(u32::try_from(parked_ticks).unwrap_or(u32::MAX));
        }
        let started = self.watch.started.load(Ordering::Relaxed);
        self.seen_started = started;
        self.started_at_unpark = started;
        self.wrote = false;
        self.timer.as_mut().reset(now + self.tick);
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
            let active = busy || self.wrote || self.write_blocked || started != self.seen_started;
            if self.parked_at.is_some() {
                if !active {
                    return true;
                }
                // Requests on a stream nobody unparked (a test's): tick.
                self.parked_at = None;
            }
            if active {
                self.idle_ticks = 0;
            } else {
                self.idle_ticks = self.idle_ticks.saturating_add(1);
            }
            if self.idle_ticks >= self.ticks_per_timeout {
                return true;
            }
            if self.idle_ticks == 1 && started != self.started_at_unpark {
                self.watch.park_wanted.store(true, Ordering::Relaxed);
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
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.write_blocked = polled.is_pending();
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.watch.parking.load(Ordering::Relaxed) {
            // hyper ends its connection, but the client's stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<I> IdleTimeout<I> {
    fn note_written(&mut self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) => {
                self.write_blocked = false;
                self.wrote |= *n > 0;
            }
            Poll::Ready(Err(_)) => self.write_blocked = false,
            Poll::Pending => self.write_blocked = true,
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
