//! Circuit breaking per version, like Envoy's: at most `max_requests`
//! requests in flight to a version (from its pick to the end of the
//! response body) and at most `max_pending` waiting for its response
//! headers (connecting included: the pool has no connection cap, so this
//! is where requests pile up on a slow version). A request over either is
//! answered 503 naming the version and the key, without reaching the
//! upstream; it counts as the version's error (a 5xx), so a rollout judges
//! a canary that overflows as failing, and in
//! `switchyard_circuit_breaker_overflows_total`.
//!
//! The counts live in a [`BreakerState`] that every table built after a
//! version's first keeps (weight changes swap tables under running
//! requests); only the limits come from each table's spec.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use crate::error::ProxyError;

/// A version's limits; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerLimits {
    pub max_requests: Option<u32>,
    pub max_pending: Option<u32>,
}

/// Which breaker limit a request overflowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Requests,
    Pending,
}

impl Overflow {
    pub const ALL: [Overflow; 2] = [Overflow::Requests, Overflow::Pending];

    /// The config key, also the metric's `limit` label.
    pub fn key(self) -> &'static str {
        match self {
            Overflow::Requests => "max_requests",
            Overflow::Pending => "max_pending",
        }
    }
}

/// A version's live counts, shared by the tables that have the version.
#[derive(Debug, Default)]
pub struct BreakerState {
    in_flight: AtomicU32,
    pending: AtomicU32,
    overflows: [AtomicU64; 2],
}

impl BreakerState {
    /// Requests refused so far for `overflow`.
    pub fn overflows(&self, overflow: Overflow) -> u64 {
        self.overflows[overflow as usize].load(Ordering::Relaxed)
    }

    /// A slot below `limit` (`None`: always), or the 503 naming `version`.
    pub fn admit(
        self: &Arc<Self>,
        overflow: Overflow,
        limit: Option<u32>,
        version: &str,
    ) -> Result<Option<Admitted>, ProxyError> {
        let Some(limit) = limit else { return Ok(None) };
        let count = match overflow {
            Overflow::Requests => &self.in_flight,
            Overflow::Pending => &self.pending,
        };
        let admitted = count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            return Ok(Some(Admitted {
                state: Arc::clone(self),
                overflow,
            }));
        }
        self.overflows[overflow as usize].fetch_add(1, Ordering::Relaxed);
        Err(ProxyError::Overflow {
            version: version.into(),
            key: overflow.key(),
            allowed: limit,
        })
    }
}

/// One slot of a breaker; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    state: Arc<BreakerState>,
    overflow: Overflow,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let count = match self.overflow {
            Overflow::Requests => &self.state.in_flight,
            Overflow::Pending => &self.state.pending,
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's `max_requests` slot until it
/// ends or is dropped.
pub struct Held<B> {
    inner: B,
    slot: Option<Admitted>,
}

impl<B> Held<B> {
    pub fn new(inner: B, slot: Option<Admitted>) -> Held<B> {
        Held { inner, slot }
    }
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.slot = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_counted_and_given_back() {
        let state = Arc::new(BreakerState::default());
        let first = state
            .admit(Overflow::Requests, Some(1), "canary")
            .expect("room for one");
        assert!(first.is_some());
        let refused = state
            .admit(Overflow::Requests, Some(1), "canary")
            .expect_err("full");
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.to_string().contains("'canary'"));
        assert!(refused.to_string().contains("max_requests"));
        assert_eq!(state.overflows(Overflow::Requests), 1);
        assert_eq!(state.overflows(Overflow::Pending), 0);
        drop(first);
        assert!(state.admit(Overflow::Requests, Some(1), "canary").is_ok());
        assert!(matches!(
            state.admit(Overflow::Pending, None, "canary"),
            Ok(None)
        ));
    }
}
