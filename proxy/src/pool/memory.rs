//! Upstream connections without sockets: a [`MemoryConnect`] hands the pool
//! one end of a `tokio::io::duplex` stream whose other end the caller
//! serves (a hyper server in tests and fuzz targets), so the whole request
//! path can run in memory, deterministically and without ports. The plain
//! HTTP/1.1 pool opens either kind through [`PlainConnect`]; in production
//! it is always TCP.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::Authority;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

use super::connect::{Connect, TcpConnect};

/// What a [`MemoryConnect`] calls for each new connection: the proxy's end
/// of a fresh duplex stream to `authority`, or the error a refused connect
/// would give.
pub type Dial = dyn Fn(&Authority) -> io::Result<DuplexStream> + Send + Sync;

/// Opens in-memory connections through a [`Dial`].
#[derive(Clone)]
pub struct MemoryConnect {
    dial: Arc<Dial>,
}

impl MemoryConnect {
    pub fn new(
        dial: impl Fn(&Authority) -> io::Result<DuplexStream> + Send + Sync + 'static,
    ) -> MemoryConnect {
        MemoryConnect {
            dial: Arc::new(dial),
        }
    }
}

impl fmt::Debug for MemoryConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConnect").finish_non_exhaustive()
    }
}

/// How the plain HTTP/1.1 pool opens connections: TCP, or in memory.
#[derive(Debug, Clone)]
pub enum PlainConnect {
    Tcp(TcpConnect),
    Memory(MemoryConnect),
}

impl Connect for PlainConnect {
    type Io = PlainIo;

    async fn connect(&self, authority: &Authority) -> io::Result<PlainIo> {
        match self {
            PlainConnect::Tcp(tcp) => tcp.connect(authority).await.map(PlainIo::Tcp),
            PlainConnect::Memory(memory) => (memory.dial)(authority).map(PlainIo::Memory),
        }
    }
}

/// A connection [`PlainConnect`] opened.
#[derive(Debug)]
pub enum PlainIo {
    Tcp(TcpStream),
    Memory(DuplexStream),
}

impl AsyncRead for PlainIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PlainIo::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            PlainIo::Memory(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PlainIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PlainIo::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            PlainIo::Memory(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PlainIo::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            PlainIo::Memory(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PlainIo::Tcp(io) => io.is_write_vectored(),
            PlainIo::Memory(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PlainIo::Tcp(io) => Pin::new(io).poll_flush(cx),
            PlainIo::Memory(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PlainIo::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            PlainIo::Memory(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
