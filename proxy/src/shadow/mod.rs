//! The mirror stage: copies of a route's requests sent to its shadow targets,
//! fire-and-forget, and (with `compare`) the shadow's answer checked against
//! the primary's.
//!
//! The primary never awaits anything here. Each copy is its own task, bounded
//! per shadow by `max_in_flight`, `timeout` and `max_body_bytes`; a copy that
//! does not fit is dropped, never the primary. Every copy a request could
//! have made ends in exactly one [`ShadowResult`], counted in the shadow's
//! [`ShadowState`], which outlives table swaps: a new table takes it over
//! from the previous one by route and shadow name.
//!
//! This module owns a built [`Shadow`] (its parsed settings and sampling);
//! `spec` the settings as given and their checks, `state` what outlives
//! a swap, `mirror` the copies and their tasks, `compare` the judging
//! of a shadow's answer against the primary's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use http::Method;

use crate::names::parse_endpoint;
use crate::split::RoundRobin;
use spec::parse_method;

mod compare;
mod mirror;
mod spec;
mod state;

pub use compare::Comparison;
pub use mirror::{mirror, SHADOW_HEADER};
pub use spec::{
    check, ShadowSpec, SpecProblem, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_METHODS,
    DEFAULT_TIMEOUT, MAX_SHADOWS,
};
pub use state::{Mismatch, ShadowResult, ShadowState, MISMATCH_LOG};

/// Sampling resolution: percent is kept in parts per million.
const PPM: u64 = 1_000_000;

/// One shadow of a built route: parsed settings and its shared state.
#[derive(Debug)]
pub struct Shadow {
    pub name: Arc<str>,
    spec: ShadowSpec,
    header_value: HeaderValue,
    endpoints: Box<[Authority]>,
    round_robin: RoundRobin,
    ppm: u64,
    methods: Box<[Method]>,
    strip_headers: Box<[HeaderName]>,
    /// How long a compared copy waits for the primary response to end.
    compare_wait: Duration,
    state: Arc<ShadowState>,
}

impl Shadow {
    /// Validates `spec`; the state is taken over from `previous` (the same
    /// route and shadow in the table being replaced) or starts at zero.
    pub fn build(
        route: &str,
        spec: &ShadowSpec,
        route_timeout: Duration,
        previous: Option<&Shadow>,
    ) -> Result<Shadow, String> {
        if let Some(problem) = check(spec).into_iter().next() {
            return Err(problem.to_string());
        }
        // `check` accepted every entry, so nothing is lost to `ok()` below.
        let header_value = HeaderValue::from_str(&spec.name)
            .map_err(|_| format!("name: '{}' cannot be a header value", spec.name))?;
        let endpoints: Vec<Authority> = spec
            .endpoints
            .iter()
            .filter_map(|e| parse_endpoint(e).ok())
            .collect();
        let methods: Vec<Method> = spec
            .methods
            .iter()
            .filter_map(|m| parse_method(m).ok())
            .collect();
        let strip_headers: Vec<HeaderName> = spec
            .strip_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let state = match previous {
            Some(previous) => Arc::clone(&previous.state),
            None => Arc::new(ShadowState::new(route, &spec.name)),
        };
        Ok(Shadow {
            name: spec.name.as_str().into(),
            spec: spec.clone(),
            header_value,
            endpoints: endpoints.into_boxed_slice(),
            round_robin: RoundRobin::default(),
            ppm: (spec.percent * 10_000.0).round() as u64,
            methods: methods.into_boxed_slice(),
            strip_headers: strip_headers.into_boxed_slice(),
            compare_wait: route_timeout + spec.timeout,
            state,
        })
    }

    /// The settings this shadow was built from.
    pub fn spec(&self) -> &ShadowSpec {
        &self.spec
    }

    pub fn state(&self) -> &ShadowState {
        &self.state
    }

    /// Whether this request is in the sampled share: exact over every
    /// window of requests (a Bresenham walk over the shadow's counter), so
    /// 25 % copies exactly one request in four.
    fn sampled(&self) -> bool {
        match self.ppm {
            0 => false,
            PPM.. => true,
            ppm => {
                let k = self.state.sampled.fetch_add(1, Ordering::Relaxed) % PPM;
                (k + 1) * ppm / PPM != k * ppm / PPM
            }
        }
    }
}

#[cfg(test)]
mod tests;
