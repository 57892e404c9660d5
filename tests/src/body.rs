//! Request and response bodies for tests: whole, empty, a deterministic
//! streamed pattern, one fed through a channel; and an order-sensitive hash
//! to compare what went in with what came out.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use tokio::sync::mpsc;

use crate::BoxError;

pub type TestBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

const CHUNK: usize = 64 * 1024;

/// Byte `i` of the deterministic test pattern: not periodic over short
/// spans, so a dropped, repeated or reordered chunk changes the hash.
pub fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 17);
    (x >> 56) as u8
}

/// A streaming body of `len` pattern bytes in 64 KiB chunks, generated as
/// it is read (never held whole in memory).
pub struct Pattern {
    sent: u64,
    len: u64,
}

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        Pattern { sent: 0, len }
    }

    /// The FNV-1a hash of the whole pattern of `len` bytes.
    pub fn hash(len: u64) -> u64 {
        let mut hash = Fnv::default();
        for i in 0..len {
            hash.write(&[pattern_byte(i)]);
        }
        hash.finish()
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let left = self.len - self.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = left.min(CHUNK as u64);
        let chunk: Vec<u8> = (self.sent..self.sent + n).map(pattern_byte).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown length on purpose: the body goes out chunked, as a
        // streaming client's would.
        SizeHint::default()
    }
}

/// A request body fed chunk by chunk from the test through a channel; it
/// ends when the sender is dropped.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx }.boxed())
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// FNV-1a, 64 bit: independent of how the bytes are split into chunks.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Reads a body to its end, hashing as it goes; returns (length, hash).
pub async fn hash_body<B>(mut body: B) -> Result<(u64, u64), B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut hash = Fnv::default();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
            hash.write(&data);
        }
    }
    Ok((len, hash.finish()))
}
