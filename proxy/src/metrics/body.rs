//! The request's measurement in flight: started when the version is picked,
//! recorded once — at once for a request that failed before a response, or
//! by the response body wrapper when the last byte is handed to the client
//! (or, if the client goes away first, when the body is dropped: aborted).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use quanta::Instant;

use crate::body::{self, ProxyBody};
use crate::error::{body_error_kind, ProxyError, UpstreamErrorKind};
use crate::limits::ClientBodyFailed;

use super::directory::TableIndex;
use super::shards::Slot;
use super::tally::Outcome;

/// One request being measured. Holds its table's index (and so the table)
/// so the series stays live (not retired) until the request is recorded.
pub struct Measure {
    pub(crate) index: Arc<TableIndex>,
    pub(crate) slot: Slot,
    pub(crate) started: Instant,
    /// The request's body, when it has one: its failure makes a broken
    /// response the client's abort.
    pub(crate) client_body: Option<ClientBodyFailed>,
}

impl Measure {
    /// A response body that breaks after `failed` is set broke because of
    /// the client's request body, not the upstream.
    pub fn watch_client_body(&mut self, failed: ClientBodyFailed) {
        self.client_body = Some(failed);
    }

    fn client_body_failed(&self) -> bool {
        self.client_body
            .as_ref()
            .is_some_and(ClientBodyFailed::is_set)
    }

    /// Records a request that ended with `error` before any upstream body.
    pub fn failed(self, error: &ProxyError) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        self.index.core.record(
            self.slot,
            &Outcome {
                status: error.status().as_u16(),
                upstream_error: error.upstream_kind(),
                headers: elapsed,
                last_byte: elapsed,
                aborted: error.is_client_abort(),
                finished: now,
            },
        );
    }

    /// The upstream's response headers are here: wraps the body so the
    /// request is recorded when the body ends.
    pub fn response<B: Body>(self, response: Response<B>) -> Response<Measured<B>> {
        let status = response.status().as_u16();
        let headers = self.started.elapsed();
        response.map(|inner| Measured {
            inner,
            pending: Some(Pending {
                measure: self,
                status,
                headers,
            }),
        })
    }
}

/// Boxes an upstream response, measuring its body when `measure` is set.
pub fn boxed_response<B>(measure: Option<Measure>, response: Response<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Unpin + Send + Sync + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match measure {
        Some(measure) => measure.response(response).map(body::boxed),
        None => response.map(body::boxed),
    }
}

struct Pending {
    measure: Measure,
    status: u16,
    headers: Duration,
}

impl Pending {
    fn record(self, upstream_error: Option<UpstreamErrorKind>, aborted: bool) {
        let now = Instant::now();
        let Measure {
            index,
            slot,
            started,
            ..
        } = self.measure;
        index.core.record(
            slot,
            &Outcome {
                status: self.status,
                upstream_error,
                headers: self.headers,
                last_byte: now.saturating_duration_since(started),
                aborted,
                finished: now,
            },
        );
    }
}

/// A response body that records its request when it ends.
pub struct Measured<B: Body> {
    inner: B,
    pending: Option<Pending>,
}

impl<B: Body> Measured<B> {
    fn finish(&mut self, upstream_error: Option<UpstreamErrorKind>, aborted: bool) {
        if let Some(pending) = self.pending.take() {
            pending.record(upstream_error, aborted);
        }
    }

    /// The upstream's body broke: the version's error, unless the
    /// client's request body failed first (then the client aborted).
    fn broke(&mut self, error: &(dyn std::error::Error + 'static)) {
        let client = self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.measure.client_body_failed());
        match client {
            true => self.finish(None, true),
            false => self.finish(Some(body_error_kind(error)), false),
        }
    }
}

impl<B> Body for Measured<B>
where
    B: Body + Unpin,
    B::Error: std::error::Error + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(None, false),
            Poll::Ready(Some(Err(error))) => this.broke(error),
            // hyper stops polling once the body says it has ended.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(None, false),
            _ => {}
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

impl<B: Body> Drop for Measured<B> {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, Content-Length: 0) may be dropped without
        // a poll; anything else dropped early was abandoned by the client.
        let ended = self.inner.is_end_stream();
        self.finish(None, !ended);
    }
}
