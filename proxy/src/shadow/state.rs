//! What a shadow keeps across table swaps: its result counters, in-flight
//! places, sampling counter and mismatch log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::{Method, StatusCode};

/// Mismatches kept per shadow for the admin API.
pub const MISMATCH_LOG: usize = 100;

/// How one copy ended, or why it was never made. Also the `result` label of
/// `switchyard_shadow_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowResult {
    /// The shadow answered (without `compare`).
    Answered,
    /// Same status (and body digest, unless ignored) as the primary.
    Matched,
    StatusMismatch,
    BodyMismatch,
    /// The shadow failed: connect, reset, invalid response, or timeout.
    Error,
    /// Nothing to send or compare against: the client's body or the primary
    /// response ended early, or the primary failed.
    Aborted,
    /// Not copied: outside the sampled share.
    SampledOut,
    /// Not copied: method not in `methods`.
    Method,
    /// Not copied: `max_in_flight` copies already running.
    Overload,
    /// Not copied: request body above `max_body_bytes`.
    BodyTooLarge,
}

impl ShadowResult {
    pub const COUNT: usize = 10;
    pub const ALL: [ShadowResult; ShadowResult::COUNT] = [
        ShadowResult::Answered,
        ShadowResult::Matched,
        ShadowResult::StatusMismatch,
        ShadowResult::BodyMismatch,
        ShadowResult::Error,
        ShadowResult::Aborted,
        ShadowResult::SampledOut,
        ShadowResult::Method,
        ShadowResult::Overload,
        ShadowResult::BodyTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShadowResult::Answered => "answered",
            ShadowResult::Matched => "matched",
            ShadowResult::StatusMismatch => "status_mismatch",
            ShadowResult::BodyMismatch => "body_mismatch",
            ShadowResult::Error => "error",
            ShadowResult::Aborted => "aborted",
            ShadowResult::SampledOut => "dropped_sampled_out",
            ShadowResult::Method => "dropped_method",
            ShadowResult::Overload => "dropped_overload",
            ShadowResult::BodyTooLarge => "dropped_body_too_large",
        }
    }

    /// A copy that was never sent.
    pub fn is_dropped(self) -> bool {
        matches!(
            self,
            ShadowResult::SampledOut
                | ShadowResult::Method
                | ShadowResult::Overload
                | ShadowResult::BodyTooLarge
        )
    }
}

/// One compared request whose shadow answered differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub time: SystemTime,
    pub method: Method,
    /// Path only: queries may carry secrets.
    pub path: String,
    pub primary_status: StatusCode,
    pub shadow_status: StatusCode,
    /// [`ShadowResult::StatusMismatch`] or [`ShadowResult::BodyMismatch`].
    pub kind: ShadowResult,
}

/// A shadow's counters, in-flight gauge, sampling counter and mismatch log:
/// everything that must survive a table swap. Exporters read the counters
/// when scraped ([`ShadowState::counts`]), so the request path pays one
/// relaxed increment per result and nothing else.
pub struct ShadowState {
    pub(super) route: Arc<str>,
    pub(super) shadow: Arc<str>,
    pub(super) counts: [AtomicU64; ShadowResult::COUNT],
    pub(super) in_flight: AtomicUsize,
    pub(super) sampled: AtomicU64,
    pub(super) mismatches: Mutex<VecDeque<Mismatch>>,
}

impl std::fmt::Debug for ShadowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowState")
            .field("route", &self.route)
            .field("shadow", &self.shadow)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl ShadowState {
    pub(super) fn new(route: &str, shadow: &str) -> ShadowState {
        ShadowState {
            route: route.into(),
            shadow: shadow.into(),
            counts: Default::default(),
            in_flight: AtomicUsize::new(0),
            sampled: AtomicU64::new(0),
            mismatches: Mutex::new(VecDeque::new()),
        }
    }

    pub(super) fn record(&self, result: ShadowResult) {
        self.counts[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn log(&self, mismatch: Mismatch) {
        let mut log = self
            .mismatches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() == MISMATCH_LOG {
            log.pop_front();
        }
        log.push_back(mismatch);
    }

    /// How many copies ended (or were dropped) with `result` since the
    /// shadow appeared.
    pub fn count(&self, result: ShadowResult) -> u64 {
        self.counts[result as usize].load(Ordering::Relaxed)
    }

    /// Every result with its count, in [`ShadowResult::ALL`] order.
    pub fn counts(&self) -> impl Iterator<Item = (ShadowResult, u64)> + '_ {
        ShadowResult::ALL.iter().map(|r| (*r, self.count(*r)))
    }

    /// Copies running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The last [`MISMATCH_LOG`] mismatches, oldest first.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        self.mismatches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// A held place among a shadow's `max_in_flight` copies.
pub(super) struct InFlight(pub(super) Arc<ShadowState>);

impl InFlight {
    pub(super) fn acquire(state: &Arc<ShadowState>, max: usize) -> Option<InFlight> {
        state
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight(Arc::clone(state)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
