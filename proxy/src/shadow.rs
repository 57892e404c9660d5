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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Uri};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::body::{self, BoxError, ProxyBody};
use crate::forward::{Transport, Upstream};
use crate::names::{parse_endpoint, valid_name};
use crate::split::RoundRobin;
use crate::tee::{Digest, Digester, Tee, TeeSink};

/// Set on every copy, so a shadow can tell mirrored traffic from its own.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-switchyard-shadow");
/// Only methods without side effects are copied unless a shadow says more.
pub const DEFAULT_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shadows per route.
pub const MAX_SHADOWS: usize = 16;
/// Mismatches kept per shadow for the admin API.
pub const MISMATCH_LOG: usize = 100;

/// Sampling resolution: percent is kept in parts per million.
const PPM: u64 = 1_000_000;

/// Plain data describing one shadow of a route (see the `[[routes.shadows]]`
/// config keys).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSpec {
    pub name: String,
    /// `host:port` of each shadow backend, used round-robin.
    pub endpoints: Vec<String>,
    /// Share of eligible requests copied, 0–100.
    pub percent: f64,
    /// Methods copied; others are counted as dropped (`method`).
    pub methods: Vec<String>,
    /// Copies in progress at once; beyond it copies are dropped (`overload`).
    pub max_in_flight: usize,
    /// Largest request body copied; larger ones are not (`body_too_large`).
    pub max_body_bytes: usize,
    /// The whole shadow exchange: connect, request, response to its end.
    pub timeout: Duration,
    /// Headers removed from the copy only (credentials, cookies).
    pub strip_headers: Vec<String>,
    /// Compare the shadow's status and body with the primary's.
    pub compare: bool,
    /// With `compare`, compare statuses only.
    pub compare_ignore_body: bool,
}

impl ShadowSpec {
    /// A shadow with every default: all requests with a safe method.
    pub fn new(name: impl Into<String>, endpoints: Vec<String>) -> ShadowSpec {
        ShadowSpec {
            name: name.into(),
            endpoints,
            percent: 100.0,
            methods: DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            strip_headers: Vec::new(),
            compare: false,
            compare_ignore_body: false,
        }
    }
}

/// One problem in a shadow's settings: the key (and list index) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The config key, e.g. `endpoints`.
    pub key: &'static str,
    /// The entry of a list key, e.g. `methods[1]`.
    pub index: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}]: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem in `spec`: what the table build refuses and what the
/// config file reports with line numbers.
pub fn check(spec: &ShadowSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let mut problem = |key, index, message: String| {
        problems.push(SpecProblem {
            key,
            index,
            message,
        })
    };
    if !valid_name(&spec.name) {
        problem(
            "name",
            None,
            format!(
                "'{}' is not a valid name: use 1-64 letters, digits, '.', '_' or '-'",
                spec.name
            ),
        );
    }
    if spec.endpoints.is_empty() {
        problem(
            "endpoints",
            None,
            "empty: list at least one \"host:port\"".into(),
        );
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        if let Err(reason) = parse_endpoint(endpoint) {
            problem(
                "endpoints",
                Some(i),
                format!("'{endpoint}' is not a valid host:port: {reason}"),
            );
        }
    }
    if !(spec.percent.is_finite() && (0.0..=100.0).contains(&spec.percent)) {
        problem(
            "percent",
            None,
            format!("{} is not a percentage: use 0 to 100", spec.percent),
        );
    }
    if spec.methods.is_empty() {
        problem(
            "methods",
            None,
            "empty, so nothing could be copied: list at least one method".into(),
        );
    }
    for (i, method) in spec.methods.iter().enumerate() {
        if let Err(message) = parse_method(method) {
            problem("methods", Some(i), message);
        }
    }
    if spec.max_in_flight == 0 {
        problem(
            "max_in_flight",
            None,
            "0 would drop every copy: use percent = 0 to pause a shadow".into(),
        );
    }
    if spec.timeout.is_zero() {
        problem("timeout", None, "must be above 0".into());
    }
    for (i, header) in spec.strip_headers.iter().enumerate() {
        if HeaderName::from_bytes(header.as_bytes()).is_err() {
            problem(
                "strip_headers",
                Some(i),
                format!("'{header}' is not a header name"),
            );
        }
    }
    if spec.compare_ignore_body && !spec.compare {
        problem(
            "compare_ignore_body",
            None,
            "only applies with compare = true: set compare = true or remove it".into(),
        );
    }
    problems
}

fn parse_method(method: &str) -> Result<Method, String> {
    let parsed = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("'{method}' is not an HTTP method"))?;
    let upper = method.to_ascii_uppercase();
    if upper != method && KNOWN_METHODS.contains(&upper.as_str()) {
        // Methods are case-sensitive: "get" would never match a GET.
        return Err(format!("'{method}' is not an HTTP method: write '{upper}'"));
    }
    Ok(parsed)
}

const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT",
];

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
    route: Arc<str>,
    shadow: Arc<str>,
    counts: [AtomicU64; ShadowResult::COUNT],
    in_flight: AtomicUsize,
    sampled: AtomicU64,
    mismatches: Mutex<VecDeque<Mismatch>>,
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
    fn new(route: &str, shadow: &str) -> ShadowState {
        ShadowState {
            route: route.into(),
            shadow: shadow.into(),
            counts: Default::default(),
            in_flight: AtomicUsize::new(0),
            sampled: AtomicU64::new(0),
            mismatches: Mutex::new(VecDeque::new()),
        }
    }

    fn record(&self, result: ShadowResult) {
        self.counts[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn log(&self, mismatch: Mismatch) {
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

    /// Decides whether this request is copied to this shadow and, if so,
    /// prepares the copy's head. Every refusal is counted.
    fn admit(&self, req: &Request<ProxyBody>, to: &Target<'_>) -> Option<ShadowCopy> {
        let state = &self.state;
        if !self.methods.contains(req.method()) {
            state.record(ShadowResult::Method);
            return None;
        }
        if !self.sampled() {
            state.record(ShadowResult::SampledOut);
            return None;
        }
        if to.body_at_least > self.spec.max_body_bytes as u64 {
            state.record(ShadowResult::BodyTooLarge);
            return None;
        }
        let Some(permit) = InFlight::acquire(state, self.spec.max_in_flight) else {
            state.record(ShadowResult::Overload);
            return None;
        };
        let head = match self.head(req) {
            Ok(head) => head,
            Err(error) => {
                tracing::debug!(%error, shadow = %self.name, "cannot build the shadow request");
                state.record(ShadowResult::Error);
                return None;
            }
        };
        Some(ShadowCopy {
            permit,
            head,
            upstream: Arc::clone(to.upstream),
            timeout: self.spec.timeout,
            limit: self.spec.max_body_bytes,
            compare: None,
        })
    }

    /// The copy's request head: the primary's upstream request (already
    /// rewritten: hop-by-hop headers gone, X-Forwarded-* set) sent to the
    /// next shadow endpoint, minus `strip_headers`, plus the shadow header.
    fn head(&self, req: &Request<ProxyBody>) -> Result<Request<()>, http::Error> {
        let endpoint = &self.endpoints[self.round_robin.next(self.endpoints.len())];
        let mut uri = req.uri().clone().into_parts();
        uri.authority = Some(endpoint.clone());
        let mut copy = Request::new(());
        *copy.uri_mut() = Uri::from_parts(uri)?;
        *copy.method_mut() = req.method().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        let headers = copy.headers_mut();
        for name in &*self.strip_headers {
            headers.remove(name);
        }
        headers.insert(SHADOW_HEADER, self.header_value.clone());
        Ok(copy)
    }
}

/// Where this request's copies go.
struct Target<'a> {
    upstream: &'a Arc<Upstream>,
    /// The request body's length if declared, else 0 (checked as it streams).
    body_at_least: u64,
}

/// The mirror stage of one request, given the upstream request the primary
/// is about to send: decides, per shadow of the route, whether to copy it;
/// copies without a body are spawned at once, copies with a body when the
/// [`Tee`] that now wraps the body has seen all of it. Returns the request
/// to forward and what the compare stage needs.
///
/// With no shadows this returns at once: no allocation, no atomic.
#[inline]
pub fn mirror(
    shadows: &[Shadow],
    upstream: &Arc<Upstream>,
    req: Request<ProxyBody>,
) -> (Request<ProxyBody>, Comparison) {
    if shadows.is_empty() {
        return (req, Comparison::default());
    }
    mirror_to(shadows, upstream, req)
}

fn mirror_to(
    shadows: &[Shadow],
    upstream: &Arc<Upstream>,
    req: Request<ProxyBody>,
) -> (Request<ProxyBody>, Comparison) {
    let has_body = !req.body().is_end_stream();
    let to = Target {
        upstream,
        body_at_least: if has_body {
            req.body().size_hint().lower()
        } else {
            0
        },
    };
    let mut comparison = Comparison::default();
    let mut waiting = Vec::new();
    for shadow in shadows {
        let Some(mut copy) = shadow.admit(&req, &to) else {
            continue;
        };
        if shadow.spec.compare {
            copy.compare = Some(comparison.expect(shadow, &req));
        }
        if has_body {
            waiting.push(copy);
        } else {
            copy.send(body::empty());
        }
    }
    let req = if waiting.is_empty() {
        req
    } else {
        req.map(|body| Tee::body(body, waiting).boxed())
    };
    (req, comparison)
}

/// A held place among a shadow's `max_in_flight` copies.
struct InFlight(Arc<ShadowState>);

impl InFlight {
    fn acquire(state: &Arc<ShadowState>, max: usize) -> Option<InFlight> {
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

/// One admitted copy, waiting for its body or ready to send.
struct ShadowCopy {
    permit: InFlight,
    head: Request<()>,
    upstream: Arc<Upstream>,
    timeout: Duration,
    limit: usize,
    compare: Option<Compared>,
}

/// What a compared copy needs to judge the shadow's answer.
struct Compared {
    primary: oneshot::Receiver<Primary>,
    ignore_body: bool,
    wait: Duration,
    method: Method,
    path: String,
}

/// The primary's answer, as far as a comparison needs it.
#[derive(Debug, Clone, Copy)]
struct Primary {
    status: StatusCode,
    digest: Option<u64>,
}

/// The shadow's answer.
struct Answer {
    status: StatusCode,
    digest: Option<u64>,
}

impl ShadowCopy {
    /// Spawns the copy; the caller goes on at once.
    fn send(self, body: ProxyBody) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.run(body));
            }
            Err(_) => self.permit.0.record(ShadowResult::Aborted),
        }
    }

    async fn run(self, body: ProxyBody) {
        let ShadowCopy {
            permit,
            head,
            upstream,
            timeout,
            compare,
            ..
        } = self;
        let digest = compare.as_ref().is_some_and(|c| !c.ignore_body);
        let request = head.map(|()| body);
        let outcome =
            tokio::time::timeout(timeout, exchange(&upstream, request, digest, timeout)).await;
        // The in-flight place is the shadow exchange only, not the wait for
        // the primary below.
        let state = Arc::clone(&permit.0);
        drop(permit);
        let answer = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                tracing::debug!(%error, shadow = %state.shadow, "shadow request failed");
                return state.record(ShadowResult::Error);
            }
            Err(_) => {
                tracing::debug!(shadow = %state.shadow, ?timeout, "shadow request timed out");
                return state.record(ShadowResult::Error);
            }
        };
        let Some(compare) = compare else {
            return state.record(ShadowResult::Answered);
        };
        let primary = match tokio::time::timeout(compare.wait, compare.primary).await {
            Ok(Ok(primary)) => primary,
            _ => return state.record(ShadowResult::Aborted),
        };
        let result = if primary.status != answer.status {
            ShadowResult::StatusMismatch
        } else if !compare.ignore_body && primary.digest != answer.digest {
            ShadowResult::BodyMismatch
        } else {
            ShadowResult::Matched
        };
        if result != ShadowResult::Matched {
            state.log(Mismatch {
                time: SystemTime::now(),
                method: compare.method,
                path: compare.path,
                primary_status: primary.status,
                shadow_status: answer.status,
                kind: result,
            });
        }
        state.record(result);
    }
}

impl TeeSink for ShadowCopy {
    fn limit(&self) -> usize {
        self.limit
    }

    fn complete(self, body: Bytes) {
        self.send(body::full(body));
    }

    fn too_large(self) {
        self.permit.0.record(ShadowResult::BodyTooLarge);
    }

    fn aborted(self) {
        self.permit.0.record(ShadowResult::Aborted);
    }
}

/// Sends the copy and reads the whole answer (so the pooled connection can
/// be reused), digesting it when asked; the bytes themselves are dropped.
async fn exchange(
    upstream: &Upstream,
    request: Request<ProxyBody>,
    digest: bool,
    timeout: Duration,
) -> Result<Answer, BoxError> {
    let response = upstream
        .send(&Transport::default(), request, timeout)
        .await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut hasher = digest.then(Digest::new);
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let (Some(hasher), Some(data)) = (hasher.as_mut(), frame.data_ref()) {
            hasher.update(data);
        }
    }
    Ok(Answer {
        status,
        digest: hasher.map(Digest::finish),
    })
}

/// What the compare stage owes the compared copies of one request: the
/// primary's status and (unless every one ignores bodies) its body digest.
/// Dropped without [`Comparison::attach`] (the primary failed), each copy
/// counts as aborted.
#[derive(Default)]
pub struct Comparison {
    waiting: Vec<oneshot::Sender<Primary>>,
    digest: bool,
}

impl Comparison {
    fn expect(&mut self, shadow: &Shadow, req: &Request<ProxyBody>) -> Compared {
        let (tx, rx) = oneshot::channel();
        self.waiting.push(tx);
        self.digest |= !shadow.spec.compare_ignore_body;
        Compared {
            primary: rx,
            ignore_body: shadow.spec.compare_ignore_body,
            wait: shadow.compare_wait,
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
        }
    }

    /// The compare stage: hands the primary's status to the compared copies
    /// and, when bodies are compared, wraps the response body to digest it
    /// as it streams to the client.
    #[inline]
    pub fn attach(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        if self.waiting.is_empty() {
            return response;
        }
        self.attach_to(response)
    }

    fn attach_to(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let status = response.status();
        let Comparison { waiting, digest } = self;
        if !digest {
            report(
                waiting,
                Primary {
                    status,
                    digest: None,
                },
            );
            return response;
        }
        response.map(|body| {
            Digester::body(body, move |digest| {
                // Without a digest the primary's body was cut short.
                if digest.is_some() {
                    report(waiting, Primary { status, digest });
                }
            })
            .boxed()
        })
    }
}

fn report(waiting: Vec<oneshot::Sender<Primary>>, primary: Primary) {
    for tx in waiting {
        // A copy abandoned for its body size no longer listens.
        let _ = tx.send(primary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(spec: &ShadowSpec) -> Result<Shadow, String> {
        Shadow::build("web", spec, Duration::from_secs(1), None)
    }

    fn spec() -> ShadowSpec {
        ShadowSpec::new("next", vec!["127.0.0.1:9003".into()])
    }

    #[test]
    fn sampling_is_exact_over_any_full_window() {
        for (percent, every) in [(25.0, 4usize), (50.0, 2), (10.0, 10), (0.5, 200)] {
            let shadow = build(&ShadowSpec { percent, ..spec() }).expect("valid");
            let hits = (0..every * 100).filter(|_| shadow.sampled()).count();
            assert_eq!(hits, 100, "{percent}%");
        }
        let none = build(&ShadowSpec {
            percent: 0.0,
            ..spec()
        })
        .expect("valid");
        assert!((0..1000).all(|_| !none.sampled()));
        let all = build(&spec()).expect("valid");
        assert!((0..1000).all(|_| all.sampled()));
        // 100 % never touches the shared counter.
        assert_eq!(all.state.sampled.load(Ordering::Relaxed), 0);
        let fraction = build(&ShadowSpec {
            percent: 33.3,
            ..spec()
        })
        .expect("valid");
        let hits = (0..10_000).filter(|_| fraction.sampled()).count();
        assert!((3329..=3331).contains(&hits), "{hits}");
    }

    #[test]
    fn rejects_bad_specs_with_the_reason() {
        let bad = |spec: ShadowSpec, needle: &str| {
            let error = build(&spec).expect_err("should fail");
            assert!(error.contains(needle), "{error}");
        };
        bad(
            ShadowSpec {
                name: "a b".into(),
                ..spec()
            },
            "name",
        );
        bad(
            ShadowSpec {
                endpoints: vec![],
                ..spec()
            },
            "endpoints",
        );
        bad(
            ShadowSpec {
                endpoints: vec!["x".into()],
                ..spec()
            },
            "'x'",
        );
        bad(
            ShadowSpec {
                percent: 100.5,
                ..spec()
            },
            "0 to 100",
        );
        bad(
            ShadowSpec {
                percent: f64::NAN,
                ..spec()
            },
            "0 to 100",
        );
        bad(
            ShadowSpec {
                methods: vec!["get".into()],
                ..spec()
            },
            "'GET'",
        );
        bad(
            ShadowSpec {
                methods: vec!["G ET".into()],
                ..spec()
            },
            "method",
        );
        bad(
            ShadowSpec {
                methods: vec![],
                ..spec()
            },
            "methods",
        );
        bad(
            ShadowSpec {
                max_in_flight: 0,
                ..spec()
            },
            "max_in_flight",
        );
        bad(
            ShadowSpec {
                strip_headers: vec!["a:b".into()],
                ..spec()
            },
            "header",
        );
        bad(
            ShadowSpec {
                compare_ignore_body: true,
                ..spec()
            },
            "compare = true",
        );
        assert!(parse_method("PURGE").is_ok());
        let problems = check(&ShadowSpec {
            endpoints: vec!["127.0.0.1:1".into(), "nope".into()],
            methods: vec!["GET".into(), "post".into()],
            percent: -1.0,
            ..spec()
        });
        let keys: Vec<String> = problems
            .iter()
            .map(|p| format!("{}{:?}", p.key, p.index))
            .collect();
        assert_eq!(keys, ["endpointsSome(1)", "percentNone", "methodsSome(1)"]);
    }

    #[test]
    fn in_flight_places_are_bounded_and_returned() {
        let state = Arc::new(ShadowState::new("web", "next"));
        let held: Vec<InFlight> = (0..3)
            .filter_map(|_| InFlight::acquire(&state, 3))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(InFlight::acquire(&state, 3).is_none());
        drop(held);
        assert_eq!(state.in_flight(), 0);
    }

    #[test]
    fn mismatch_log_keeps_the_last_hundred() {
        let state = ShadowState::new("web", "next");
        for i in 0..150u16 {
            state.log(Mismatch {
                time: SystemTime::now(),
                method: Method::GET,
                path: format!("/{i}"),
                primary_status: StatusCode::OK,
                shadow_status: StatusCode::OK,
                kind: ShadowResult::BodyMismatch,
            });
        }
        let log = state.mismatches();
        assert_eq!(log.len(), MISMATCH_LOG);
        assert_eq!(log[0].path, "/50");
        assert_eq!(log[99].path, "/149");
    }

    #[test]
    fn result_labels_are_distinct() {
        let labels: std::collections::HashSet<&str> =
            ShadowResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), ShadowResult::COUNT);
        for (i, result) in ShadowResult::ALL.iter().enumerate() {
            assert_eq!(*result as usize, i);
        }
    }
}
