//! Taps on bodies passing through the proxy, for the shadow stage: the
//! bounded copy of a request body ([`Tee`]) and the streaming digest of a
//! primary response ([`Digesting`]).
//!
//! Both pass every frame on untouched and at once: the primary never waits
//! for, and is never slowed by, what a tap feeds.

use std::hash::{DefaultHasher, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// What a [`Tee`] copies the body into: one pending shadow copy.
pub trait TeeSink: Send + Sync + 'static {
    /// Most bytes this sink accepts; a longer body abandons it.
    fn limit(&self) -> usize;
    /// The whole body arrived within the limit.
    fn complete(self, body: Bytes);
    /// The body grew past [`TeeSink::limit`].
    fn too_large(self);
    /// The body ended early (client gone, read error) or was dropped unread.
    fn aborted(self);
}

/// A request body that copies its data frames into one shared buffer capped
/// at the largest sink limit. A sink whose limit is passed is dropped at that
/// frame; when none is left the buffer is freed and the tee only forwards.
/// The buffer never grows past the cap, so a copy never costs more memory
/// than its `max_body_bytes`.
pub struct Tee<S: TeeSink> {
    inner: ProxyBody,
    sinks: Vec<S>,
    buffer: Vec<u8>,
}

impl<S: TeeSink> Tee<S> {
    /// `sinks` must not be empty (without sinks, use the body itself).
    pub fn new(inner: ProxyBody, sinks: Vec<S>) -> Tee<S> {
        let cap = sinks.iter().map(TeeSink::limit).max().unwrap_or(0);
        // A declared length within the cap is reserved once, exactly.
        let expected = inner.size_hint().exact().unwrap_or(0);
        let reserve = usize::try_from(expected).unwrap_or(usize::MAX).min(cap);
        Tee {
            inner,
            sinks,
            buffer: Vec::with_capacity(reserve),
        }
    }

    fn copy(&mut self, data: &[u8]) {
        let len = self.buffer.len().saturating_add(data.len());
        if self.sinks.iter().any(|sink| sink.limit() < len) {
            let (keep, over): (Vec<S>, Vec<S>) =
                self.sinks.drain(..).partition(|sink| sink.limit() >= len);
            over.into_iter().for_each(TeeSink::too_large);
            self.sinks = keep;
            if self.sinks.is_empty() {
                self.buffer = Vec::new();
                return;
            }
        }
        if len > self.buffer.capacity() {
            let cap = self.sinks.iter().map(TeeSink::limit).max().unwrap_or(0);
            let target = len.max(self.buffer.capacity().saturating_mul(2)).min(cap);
            self.buffer.reserve_exact(target - self.buffer.len());
        }
        self.buffer.extend_from_slice(data);
    }

    fn complete(&mut self) {
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        for sink in self.sinks.drain(..) {
            sink.complete(body.clone());
        }
    }

    fn abort(&mut self) {
        self.buffer = Vec::new();
        self.sinks.drain(..).for_each(TeeSink::aborted);
    }
}

// Sinks are never pinned: the tee only moves them.
impl<S: TeeSink> Unpin for Tee<S> {}

impl<S: TeeSink> Body for Tee<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.sinks.is_empty() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.copy(data);
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Err(_))) => this.abort(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S: TeeSink> Drop for Tee<S> {
    fn drop(&mut self) {
        // A client may stop polling once the length says the body is done.
        if self.inner.is_end_stream() {
            self.complete();
        } else {
            self.abort();
        }
    }
}

/// A streaming digest of a body: the same bytes give the same value however
/// they are split into frames. Not cryptographic; it only has to tell two
/// bodies apart within this process.
pub struct Digest {
    hasher: DefaultHasher,
    block: [u8; Digest::BLOCK],
    filled: usize,
    len: u64,
}

impl Digest {
    /// `Hasher::write` promises nothing about split input, so the hasher is
    /// only ever fed whole blocks (and the tail at the end).
    const BLOCK: usize = 256;

    pub fn new() -> Digest {
        Digest {
            hasher: DefaultHasher::new(),
            block: [0; Digest::BLOCK],
            filled: 0,
            len: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.filled > 0 {
            let take = data.len().min(Digest::BLOCK - self.filled);
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < Digest::BLOCK {
                return;
            }
            self.hasher.write(&self.block);
            self.filled = 0;
        }
        let whole = data.len() - data.len() % Digest::BLOCK;
        for block in data[..whole].chunks_exact(Digest::BLOCK) {
            self.hasher.write(block);
        }
        let tail = &data[whole..];
        self.block[..tail.len()].copy_from_slice(tail);
        self.filled = tail.len();
    }

    pub fn finish(mut self) -> u64 {
        self.hasher.write(&self.block[..self.filled]);
        self.hasher.write_u64(self.len);
        self.hasher.finish()
    }
}

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

/// A response body that digests its data frames as they pass and reports the
/// digest when the body ends, or `None` when it is dropped unfinished or
/// fails. Nothing is buffered.
pub struct Digesting<F: FnOnce(Option<u64>) + Send + Sync + 'static> {
    inner: ProxyBody,
    digest: Box<Digest>,
    report: Option<F>,
}

impl<F: FnOnce(Option<u64>) + Send + Sync + 'static> Digesting<F> {
    pub fn new(inner: ProxyBody, report: F) -> Digesting<F> {
        Digesting {
            inner,
            digest: Box::default(),
            report: Some(report),
        }
    }

    fn finish(&mut self, ok: bool) {
        if let Some(report) = self.report.take() {
            let digest = std::mem::take(&mut self.digest);
            report(ok.then(|| digest.finish()));
        }
    }
}

impl<F: FnOnce(Option<u64>) + Send + Sync + 'static> Unpin for Digesting<F> {}

impl<F: FnOnce(Option<u64>) + Send + Sync + 'static> Body for Digesting<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.report.is_none() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.digest.update(data);
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(Option<u64>) + Send + Sync + 'static> Drop for Digesting<F> {
    fn drop(&mut self) {
        // An empty or fully announced body may be dropped without a poll.
        let ended = self.inner.is_end_stream();
        self.finish(ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::boxed;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, PartialEq)]
    enum Outcome {
        Complete(Bytes),
        TooLarge,
        Aborted,
    }

    /// What each sink (by limit) was told, in order.
    type Log = Arc<Mutex<Vec<(usize, Outcome)>>>;

    struct Sink {
        limit: usize,
        out: Log,
    }

    impl Sink {
        fn push(&self, outcome: Outcome) {
            self.out.lock().expect("lock").push((self.limit, outcome));
        }
    }

    impl TeeSink for Sink {
        fn limit(&self) -> usize {
            self.limit
        }
        fn complete(self, body: Bytes) {
            self.push(Outcome::Complete(body));
        }
        fn too_large(self) {
            self.push(Outcome::TooLarge);
        }
        fn aborted(self) {
            self.push(Outcome::Aborted);
        }
    }

    /// Data frames from a list; `is_end_stream` turns true after the last
    /// one, as with a body of declared length.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> ProxyBody {
        boxed(Frames(
            parts.iter().map(|p| Bytes::from_static(p)).collect(),
        ))
    }

    fn sinks(limits: &[usize]) -> (Vec<Sink>, Log) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sinks = limits
            .iter()
            .map(|limit| Sink {
                limit: *limit,
                out: Arc::clone(&out),
            })
            .collect();
        (sinks, out)
    }

    #[tokio::test]
    async fn copies_within_each_limit_and_passes_everything_on() {
        let (s, out) = sinks(&[4, 10]);
        let tee = Tee::new(chunks(&[b"abc", b"def", b"g"]), s);
        let passed = tee.collect().await.expect("body").to_bytes();
        assert_eq!(&passed[..], b"abcdefg");
        let out = out.lock().expect("lock").clone();
        assert_eq!(
            out,
            vec![
                (4, Outcome::TooLarge),
                (10, Outcome::Complete(Bytes::from_static(b"abcdefg")))
            ]
        );
    }

    #[tokio::test]
    async fn frees_the_buffer_when_every_copy_is_over() {
        let (s, out) = sinks(&[2]);
        let mut tee = Tee::new(chunks(&[b"abc", b"def"]), s);
        let first = tee.frame().await.expect("frame").expect("ok");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"abc"[..]));
        assert_eq!(tee.buffer.capacity(), 0);
        let rest = tee.collect().await.expect("body").to_bytes();
        assert_eq!(&rest[..], b"def");
        assert_eq!(*out.lock().expect("lock"), vec![(2, Outcome::TooLarge)]);
    }

    #[tokio::test]
    async fn dropping_an_unfinished_body_aborts_the_copy() {
        let (s, out) = sinks(&[100]);
        let mut tee = Tee::new(chunks(&[b"abc", b"def"]), s);
        let _ = tee.frame().await;
        assert!(tee.buffer.capacity() <= 100);
        drop(tee);
        assert_eq!(*out.lock().expect("lock"), vec![(100, Outcome::Aborted)]);
    }

    #[test]
    fn buffer_never_grows_past_the_largest_limit() {
        let (s, _out) = sinks(&[1000]);
        let mut tee = Tee::new(crate::body::empty(), s);
        for _ in 0..9 {
            tee.copy(&[7u8; 111]);
            assert!(tee.buffer.capacity() <= 1000, "{}", tee.buffer.capacity());
        }
        tee.copy(&[7u8; 1]);
        assert_eq!(tee.buffer.len(), 1000);
        assert_eq!(tee.buffer.capacity(), 1000);
    }

    #[test]
    fn digest_ignores_frame_boundaries() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = {
            let mut d = Digest::new();
            d.update(&data);
            d.finish()
        };
        for split in [1usize, 3, 255, 256, 257, 999] {
            let mut d = Digest::new();
            for chunk in data.chunks(split) {
                d.update(chunk);
            }
            assert_eq!(d.finish(), whole, "split {split}");
        }
        let mut other = Digest::new();
        other.update(&data[..1999]);
        assert_ne!(other.finish(), whole);
        let mut empty = Digest::new();
        empty.update(b"");
        assert_ne!(empty.finish(), whole);
    }

    #[tokio::test]
    async fn digesting_reports_at_the_end_and_none_when_cut_short() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let report = |seen: &Arc<Mutex<Vec<Option<u64>>>>| {
            let seen = Arc::clone(seen);
            move |d: Option<u64>| seen.lock().expect("lock").push(d)
        };
        let body = Digesting::new(chunks(&[b"ab", b"c"]), report(&seen));
        let passed = body.collect().await.expect("body").to_bytes();
        assert_eq!(&passed[..], b"abc");
        let mut expected = Digest::new();
        expected.update(b"abc");
        let expected = expected.finish();

        let mut cut = Digesting::new(chunks(&[b"ab", b"c"]), report(&seen));
        let _ = cut.frame().await;
        drop(cut);

        drop(Digesting::new(crate::body::empty(), report(&seen)));
        let mut empty = Digest::new();
        empty.update(b"");
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![Some(expected), None, Some(empty.finish())]
        );
    }
}
