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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::table::tests::{route, version};
    use crate::table::{Settings, TableHandle, TableSpec};
    use crate::upstream::{Upstream, UpstreamSettings};
    use crate::{serve_stream, ListenerSettings, Proxy};

    /// Upstreams answering "ok" from memory and counting requests; `down`
    /// refuses connections.
    fn upstreams(requests: Arc<AtomicU64>) -> MemoryConnect {
        MemoryConnect::new(move |authority| {
            if authority.host() == "down" {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "down"));
            }
            let (proxy_end, upstream_end) = tokio::io::duplex(4096);
            let requests = Arc::clone(&requests);
            let service = service_fn(move |_: Request<Incoming>| {
                requests.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, io::Error>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(upstream_end), service),
            );
            Ok(proxy_end)
        })
    }

    #[tokio::test]
    async fn the_whole_request_path_runs_in_memory_and_a_retry_is_one_upstream_request() {
        let requests = Arc::new(AtomicU64::new(0));
        let table = TableHandle::new(TableSpec {
            routes: vec![route(
                "web",
                None,
                "/",
                vec![version("stable", 1, &["down:80", "up:80"])],
            )],
            settings: Settings::default(),
        })
        .expect("valid table");
        let upstream = Upstream::in_memory(
            &UpstreamSettings::default(),
            upstreams(Arc::clone(&requests)),
        );
        let proxy = Proxy::new(table, upstream, "http");
        let (mut client, server_end) = tokio::io::duplex(4096);
        let peer: SocketAddr = "192.0.2.1:1000".parse().expect("address");
        let served = tokio::spawn(async move {
            serve_stream(server_end, proxy, &ListenerSettings::default(), peer).await
        });
        // Round robin: one of the two requests meets `down` first and is
        // retried on `up`; the last one closes the connection.
        let ask = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        client.write_all(ask.as_bytes()).await.expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert_eq!(served.await.expect("served"), 2);
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }
}
