//! Small vectored writes sent as one plain write.
//!
//! hyper's HTTP/1 writer queues a message's head and its body chunks and
//! flushes them with one vectored write. For the common small response (a
//! head of a few hundred bytes and a short body) the kernel's `writev` path
//! costs more than the copy it saves: the interleaved A/B runs of the bench
//! proxy measured 0.3–0.65 µs of system time per request more than the
//! same bytes sent with one `send`. Large writes pass through untouched, so big
//! bodies are still never copied in user space.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Vectored writes of at most this many bytes in all are copied into one
/// buffer: small enough that the copy is cheaper than the vectored system
/// call, large enough for a typical API response.
pub const COALESCE_MAX: usize = 4096;

thread_local! {
    /// Where small buffers are joined: one per thread, reused, so joining
    /// neither allocates nor clears a buffer per write.
    static JOINED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(COALESCE_MAX));
}

/// An I/O stream whose small vectored writes become single writes.
#[derive(Debug)]
pub struct CoalescedWrites<I> {
    io: I,
}

impl<I> CoalescedWrites<I> {
    pub fn new(io: I) -> Self {
        CoalescedWrites { io }
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut I {
        &mut self.io
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CoalescedWrites<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<I> {
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
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = Pin::new(&mut self.io);
        match plan(bufs) {
            Plan::One(index) => io.poll_write(cx, &bufs[index]),
            Plan::Join => JOINED.with(|joined| match joined.try_borrow_mut() {
                Ok(mut joined) => {
                    join(bufs, &mut joined);
                    io.poll_write(cx, &joined)
                }
                // Only if the inner writer were itself a `CoalescedWrites`.
                Err(_) => io.poll_write_vectored(cx, bufs),
            }),
            Plan::Vectored => io.poll_write_vectored(cx, bufs),
        }
    }

    /// As vectored as the stream underneath: hyper then queues a head and
    /// its body (instead of copying both into one buffer itself, as it does
    /// for a stream without vectored writes, whatever their size).
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

/// How to send a vectored write.
enum Plan {
    /// Only the buffer at this index has bytes: write it as it is.
    One(usize),
    /// Several small buffers: copy them into one and write that.
    Join,
    /// Too large to copy (or nothing to write): the vectored call.
    Vectored,
}

fn plan(bufs: &[IoSlice<'_>]) -> Plan {
    let mut non_empty = bufs.iter().enumerate().filter(|(_, buf)| !buf.is_empty());
    let Some((first, _)) = non_empty.next() else {
        return Plan::Vectored;
    };
    if non_empty.next().is_none() {
        return Plan::One(first);
    }
    let total: usize = bufs.iter().map(|buf| buf.len()).sum();
    if total <= COALESCE_MAX {
        Plan::Join
    } else {
        Plan::Vectored
    }
}

/// Replaces the contents of `joined` with `bufs`, end to end.
fn join(bufs: &[IoSlice<'_>], joined: &mut Vec<u8>) {
    joined.clear();
    for buf in bufs {
        joined.extend_from_slice(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Records how each write arrived: `(vectored, bytes)`.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(bool, Vec<u8>)>,
        /// Accept at most this many bytes per write (a short write).
        limit: Option<usize>,
        /// Say that vectored writes are not supported.
        plain: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.limit.map_or(buf.len(), |limit| limit.min(buf.len()));
            self.writes.push((false, buf[..n].to_vec()));
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let n = self.limit.map_or(all.len(), |limit| limit.min(all.len()));
            self.writes.push((true, all[..n].to_vec()));
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            !self.plain
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write_vectored(io: &mut CoalescedWrites<Recorder>, parts: &[&[u8]]) -> usize {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|part| IoSlice::new(part)).collect();
        std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, &slices))
            .await
            .expect("the recorder never fails")
    }

    #[tokio::test]
    async fn a_small_head_and_body_go_out_as_one_plain_write() {
        let mut io = CoalescedWrites::new(Recorder::default());
        let n = write_vectored(&mut io, &[b"HTTP/1.1 200 OK\r\n\r\n", b"", b"hello"]).await;
        assert_eq!(n, 24);
        assert_eq!(
            io.get_ref().writes,
            vec![(false, b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec())]
        );
    }

    #[tokio::test]
    async fn large_writes_stay_vectored() {
        let big = vec![b'x'; COALESCE_MAX];
        let mut io = CoalescedWrites::new(Recorder::default());
        assert_eq!(
            write_vectored(&mut io, &[b"head", &big]).await,
            COALESCE_MAX + 4
        );
        assert_eq!(
            io.get_ref().writes,
            vec![(true, [&b"head"[..], &big].concat())]
        );
        // Exactly at the limit still fits.
        let fits = vec![b'y'; COALESCE_MAX - 4];
        assert_eq!(
            write_vectored(&mut io, &[b"head", &fits]).await,
            COALESCE_MAX
        );
        assert!(!io.get_ref().writes[1].0, "copied into one write");
    }

    #[tokio::test]
    async fn a_single_buffer_is_written_without_a_copy_or_a_vectored_call() {
        let mut io = CoalescedWrites::new(Recorder::default());
        assert_eq!(write_vectored(&mut io, &[b"", b"only", b""]).await, 4);
        assert_eq!(write_vectored(&mut io, &[b"", b""]).await, 0);
        assert_eq!(
            io.get_ref().writes,
            vec![(false, b"only".to_vec()), (true, Vec::new())]
        );
    }

    #[test]
    fn it_is_as_vectored_as_the_stream_underneath() {
        assert!(CoalescedWrites::new(Recorder::default()).is_write_vectored());
        let plain = Recorder {
            plain: true,
            ..Recorder::default()
        };
        assert!(!CoalescedWrites::new(plain).is_write_vectored());
    }

    #[tokio::test]
    async fn a_short_write_reports_only_what_was_written() {
        let mut io = CoalescedWrites::new(Recorder {
            limit: Some(6),
            ..Recorder::default()
        });
        assert_eq!(write_vectored(&mut io, &[b"abcd", b"efgh"]).await, 6);
        assert_eq!(io.get_ref().writes, vec![(false, b"abcdef".to_vec())]);
    }

    #[tokio::test]
    async fn reads_and_plain_writes_pass_through() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = CoalescedWrites::new(near);
        io.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        far.write_all(b"pong").await.expect("write");
        io.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
    }
}
