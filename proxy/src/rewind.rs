//! An I/O stream with bytes already read from it put back in front: the
//! bytes read to tell HTTP/2's preface from an HTTP/1.1 request, or those
//! a parked connection read when it woke up ([`crate::idle_park`]), are
//! then read again by hyper as if they had never left the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io` with `prefix` to be read first.
#[derive(Debug)]
pub struct Rewind<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    pub fn new(io: I, prefix: Bytes) -> Rewind<I> {
        Rewind { prefix, io }
    }

    /// The stream and what of the prefix was not read yet.
    pub fn into_inner(self) -> (I, Bytes) {
        (self.io, self.prefix)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // Its memory goes back now, not when the connection ends.
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_prefix_is_read_before_the_stream_then_released() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = Rewind::new(near, Bytes::from_static(b"GET "));
        far.write_all(b"/ HTTP/1.1").await.expect("write");
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"GET");
        let mut rest = [0u8; 11];
        io.read_exact(&mut rest).await.expect("read");
        assert_eq!(&rest, b" / HTTP/1.1");
        let (_, prefix) = io.into_inner();
        assert!(prefix.is_empty());
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = Rewind::new(near, Bytes::from_static(b"x"));
        io.write_all(b"pong").await.expect("write");
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
    }
}
