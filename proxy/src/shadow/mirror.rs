//! The mirror stage: which shadows get a copy of a request, and the copy
//! task that sends it (when the request body, if any, has been read
//! through the [`Tee`]) and reads the shadow's answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::HeaderName;
use http::uri::Uri;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;

use super::compare::{Answer, Compared, Comparison};
use super::state::{InFlight, Mismatch, ShadowResult};
use super::Shadow;
use crate::body::{self, BoxError, ProxyBody};
use crate::tee::{Digest, Tee, TeeSink};
use crate::upstream::{Transport, Upstream};

/// Set on every copy, so a shadow can tell mirrored traffic from its own.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-switchyard-shadow");

impl Shadow {
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

/// One admitted copy, waiting for its body or ready to send.
struct ShadowCopy {
    permit: InFlight,
    head: Request<()>,
    upstream: Arc<Upstream>,
    timeout: Duration,
    limit: usize,
    compare: Option<Compared>,
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
