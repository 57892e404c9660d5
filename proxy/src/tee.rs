//! Taps on bodies passing through the proxy, for the shadow stage: the
//! bounded copy of a request body ([`Tee`]) and the streaming digest of a
//! primary response ([`Digester`]), both run by one body wrapper
//! ([`Tapped`]).
//!
//! The wrapper passes every frame on untouched and at once: the primary
//! never waits for, and is never slowed by, what a tap feeds.

use std::hash::{DefaultHasher, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// What a [`Tapped`] body tells as it streams.
pub trait Tap: Send + Sync + 'static {
    /// A data frame passed.
    fn data(&mut self, data: &[u8]);
    /// The body ended (`complete`) or failed or was dropped unfinished.
    /// Called once, last.
    fn end(&mut self, complete: bool);
}

/// A body that shows each data frame to its tap on the way through.
pub struct Tapped<T: Tap> {
    inner: ProxyBody,
    /// `None` once the end was told.
    tap: Option<T>,
}

impl<T: Tap> Tapped<T> {
    pub fn new(inner: ProxyBody, tap: T) -> Tapped<T> {
        Tapped {
            inner,
            tap: Some(tap),
        }
    }

    fn end(&mut self, complete: bool) {
        if let Some(mut tap) = self.tap.take() {
            tap.end(complete);
        }
    }
}

// The tap is never pinned: the wrapper only moves it.
impl<T: Tap> Unpin for Tapped<T> {}

impl<T: Tap> Body for Tapped<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(tap) = this.tap.as_mut() else {
            return polled;
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    tap.data(data);
                }
                if this.inner.is_end_stream() {
                    this.end(true);
                }
            }
            Poll::Ready(None) => this.end(true),
            Poll::Ready(Some(Err(_))) => this.end(false),
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

impl<T: Tap> Drop for Tapped<T> {
    fn drop(&mut self) {
        // A peer may stop polling once the length says the body is done,
        // and an empty body may never be polled at all.
        let ended = self.inner.is_end_stream();
        self.end(ended);
    }
}

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

/// Copies a request body into one shared buffer capped at the largest sink
/// limit. A sink whose limit is passed is dropped at that frame; when none is
/// left the buffer is freed and nothing more is copied. The buffer never
/// grows past the cap, so a copy never costs more memory than its
/// `max_body_bytes`.
pub struct Tee<S: TeeSink> {
    sinks: Vec<S>,
    buffer: Vec<u8>,
}

impl<S: TeeSink> Tee<S> {
    /// `body` tapped for `sinks` (not empty: without sinks, use the body).
    pub fn body(body: ProxyBody, sinks: Vec<S>) -> Tapped<Tee<S>> {
        let cap = sinks.iter().map(TeeSink::limit).max().unwrap_or(0);
        // A declared length within the cap is reserved once, exactly.
        let expected = body.size_hint().exact().unwrap_or(0);
        let reserve = usize::try_from(expected).unwrap_or(usize::MAX).min(cap);
        let tee = Tee {
            sinks,
            buffer: Vec::with_capacity(reserve),
        };
        Tapped::new(body, tee)
    }
}

impl<S: TeeSink> Tap for Tee<S> {
    fn data(&mut self, data: &[u8]) {
        if self.sinks.is_empty() {
            return;
        }
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

    fn end(&mut self, complete: bool) {
        let buffer = std::mem::take(&mut self.buffer);
        if complete {
            let body = Bytes::from(buffer);
            for sink in self.sinks.drain(..) {
                sink.complete(body.clone());
            }
        } else {
            self.sinks.drain(..).for_each(TeeSink::aborted);
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

/// Digests a response body as it streams to the client and reports the
/// digest when it ends, or `None` when it fails or is dropped unfinished.
/// Nothing is buffered.
pub struct Digester<F: FnOnce(Option<u64>) + Send + Sync + 'static> {
    digest: Box<Digest>,
    report: Option<F>,
}

impl<F: FnOnce(Option<u64>) + Send + Sync + 'static> Digester<F> {
    pub fn body(body: ProxyBody, report: F) -> Tapped<Digester<F>> {
        let digester = Digester {
            digest: Box::default(),
            report: Some(report),
        };
        Tapped::new(body, digester)
    }
}

impl<F: FnOnce(Option<u64>) + Send + Sync + 'static> Tap for Digester<F> {
    fn data(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    fn end(&mut self, complete: bool) {
        if let Some(report) = self.report.take() {
            let digest = std::mem::take(&mut self.digest);
            report(complete.then(|| digest.finish()));
        }
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

    fn buffer(tee: &Tapped<Tee<Sink>>) -> &Vec<u8> {
        &tee.tap.as_ref().expect("still tapping").buffer
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
        let tee = Tee::body(chunks(&[b"abc", b"def", b"g"]), s);
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
        let mut tee = Tee::body(chunks(&[b"abc", b"def"]), s);
        let first = tee.frame().await.expect("frame").expect("ok");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"abc"[..]));
        assert_eq!(buffer(&tee).capacity(), 0);
        let rest = tee.collect().await.expect("body").to_bytes();
        assert_eq!(&rest[..], b"def");
        assert_eq!(*out.lock().expect("lock"), vec![(2, Outcome::TooLarge)]);
    }

    #[tokio::test]
    async fn dropping_an_unfinished_body_aborts_the_copy() {
        let (s, out) = sinks(&[100]);
        let mut tee = Tee::body(chunks(&[b"abc", b"def"]), s);
        let _ = tee.frame().await;
        assert!(buffer(&tee).capacity() <= 100);
        drop(tee);
        assert_eq!(*out.lock().expect("lock"), vec![(100, Outcome::Aborted)]);
    }

    #[test]
    fn buffer_never_grows_past_the_largest_limit() {
        let (s, _out) = sinks(&[1000]);
        let mut tee = Tee {
            sinks: s,
            buffer: Vec::new(),
        };
        for _ in 0..9 {
            tee.data(&[7u8; 111]);
            assert!(tee.buffer.capacity() <= 1000, "{}", tee.buffer.capacity());
        }
        tee.data(&[7u8; 1]);
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
        let body = Digester::body(chunks(&[b"ab", b"c"]), report(&seen));
        let passed = body.collect().await.expect("body").to_bytes();
        assert_eq!(&passed[..], b"abc");
        let mut expected = Digest::new();
        expected.update(b"abc");
        let expected = expected.finish();

        let mut cut = Digester::body(chunks(&[b"ab", b"c"]), report(&seen));
        let _ = cut.frame().await;
        drop(cut);

        drop(Digester::body(crate::body::empty(), report(&seen)));
        let mut empty = Digest::new();
        empty.update(b"");
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![Some(expected), None, Some(empty.finish())]
        );
    }
}
