//! An upstream response body that gives its HTTP/1.1 connection back to
//! the pool when it has ended.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::{Conn, Host, Shared};

/// A connection lent to one response, returned when its body has ended.
pub(super) struct Reuse {
    pub(super) conn: Conn,
    pub(super) host: Arc<Host>,
    pub(super) pool: Weak<Shared>,
    pub(super) finished: bool,
    /// The request had a body hyper may still be writing when the response
    /// ends (an upstream answering an upload early).
    pub(super) request_body_streams: bool,
}

/// An upstream response body. Read to its end, it gives its connection
/// back to the pool when dropped; dropped early or failed, the connection
/// is closed (the rest of the response would still be on it).
pub struct UpstreamBody {
    body: Incoming,
    reuse: Option<Reuse>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.reuse.is_some())
            .finish()
    }
}

impl From<Incoming> for UpstreamBody {
    /// A body whose connection the pool does not own.
    fn from(body: Incoming) -> Self {
        UpstreamBody { body, reuse: None }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            // Trailers come last; the server stops polling after them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() || this.body.is_end_stream() => {
                this.finish()
            }
            Poll::Ready(Some(Err(_))) => this.reuse = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl UpstreamBody {
    pub(super) fn pooled(body: Incoming, reuse: Option<Reuse>) -> UpstreamBody {
        UpstreamBody { body, reuse }
    }

    fn finish(&mut self) {
        if let Some(reuse) = &mut self.reuse {
            reuse.finished = true;
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let Some(reuse) = self.reuse.take() else {
            return;
        };
        if !(reuse.finished || self.body.is_end_stream()) {
            return;
        }
        // Still writing the request body: the next request would wait for
        // an upload that may never end. Close it instead.
        if reuse.request_body_streams && !reuse.conn.sender.is_ready() {
            return;
        }
        if let Some(pool) = reuse.pool.upgrade() {
            let now = pool.now_secs.load(Ordering::Relaxed);
            reuse
                .host
                .put(reuse.conn, now, pool.settings.max_idle_per_host);
        }
    }
}
