//! The request path, top to bottom: load the table → find the route → pick
//! the version and endpoint → mirror to the route's shadows (never awaited)
//! → forward → finish the response headers.
//!
//! Everything a request needs from the control plane comes from the one table
//! it loads first; it keeps that `Arc` until its response is complete.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, SET_COOKIE};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::client_idle::{HeldBody, InFlight};
use crate::error::ProxyError;
use crate::error::UpstreamErrorKind;
use crate::forward::{self, Downstream, Upstream};
use crate::metrics::{self, Measure, Metrics};
use crate::pool::UpstreamBody;
use crate::route::request_host;
use crate::table::{Endpoint, Route, RoutingTable, TableHandle, Version};
use crate::{select, shadow, upgrade};
use http_body::Body as _;

pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-switchyard-version");
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("x-switchyard-revision");

/// The proxy service shared by every connection.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    table: TableHandle,
    upstream: Upstream,
    /// Shadow copies never take (or wait for) a primary connection.
    shadow_upstream: Arc<Upstream>,
    /// `http` or `https`: what X-Forwarded-Proto says.
    scheme: &'static str,
    metrics: Metrics,
    /// Open upgraded (WebSocket) connections.
    upgraded: Arc<AtomicI64>,
}

impl Proxy {
    pub fn new(table: TableHandle, upstream: Upstream, scheme: &'static str) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                table,
                shadow_upstream: Arc::new(upstream.separate_pool()),
                upstream,
                scheme,
                metrics: Metrics::disabled(),
                upgraded: Arc::default(),
            }),
        }
    }

    /// Measures every request into `metrics`. Call it before the proxy is
    /// cloned; a shared proxy keeps its metrics.
    pub fn with_metrics(mut self, metrics: Metrics) -> Proxy {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.metrics = metrics,
            None => tracing::warn!("metrics not attached: the proxy is already shared"),
        }
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The gauge of open upgraded (WebSocket) connections.
    pub fn upgraded_connections(&self) -> &Arc<AtomicI64> {
        &self.inner.upgraded
    }

    pub fn table(&self) -> &TableHandle {
        &self.inner.table
    }

    /// Serves one request; failures become plain-text error responses.
    pub async fn handle(&self, req: Request<Incoming>, client: &Downstream) -> Response<ProxyBody> {
        let table = self.inner.table.load();
        let mut measure = None;
        // Dropped with the response body (or here, for an error response).
        let in_flight = client.request_started(req.version());
        match self
            .forward(&table, req, client, &mut measure, in_flight)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request failed");
                if let Some(measure) = measure {
                    measure.failed(&error);
                }
                let mut response = error.into_response();
                stamp_revision(&table, &mut response);
                response
            }
        }
    }

    async fn forward(
        &self,
        table: &Arc<RoutingTable>,
        mut req: Request<Incoming>,
        client: &Downstream,
        measure: &mut Option<Measure>,
        in_flight: Option<InFlight>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let started = self.inner.metrics.clock();
        // Route.
        let host = request_host(&req).unwrap_or_default();
        let Some(route) = table.find_request(&host, req.uri().path(), req.headers()) else {
            return Err(ProxyError::NoRoute {
                host: host.into_owned(),
                path: req.uri().path().to_owned(),
            });
        };

        // Upstream pick: override header, sticky key, or weight.
        let choice = select::choose(
            route,
            table.settings().version_override.as_ref(),
            req.headers_mut(),
        )?;
        let version = choice.version;
        // A version known to be down hands its share to the baseline.
        let version = route.available(version);
        *measure = started.and_then(|at| self.inner.metrics.start(table, route, version, at));
        let endpoint = version.next_endpoint();
        let upgrade = upgrade::requested(&mut req);

        // Forward: the upstream request.
        let upstream_req = forward::upstream_request(
            req.map(body::request),
            &endpoint.authority,
            client,
            self.inner.scheme,
        )
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream request: {e}")))?;

        // Mirror: copies of it for the route's shadows, spawned, never
        // awaited (not of a protocol upgrade: a tunnel cannot be copied).
        let shadows = upgrade.is_none().then_some(&route.shadows[..]);
        let (mut upstream_req, comparison) = shadow::mirror(
            shadows.unwrap_or_default(),
            &self.inner.shadow_upstream,
            upstream_req,
        );
        if let Some(upgrade) = &upgrade {
            upgrade.prepare(&mut upstream_req);
        }
        let mut response = self.send(route, version, endpoint, upstream_req).await?;

        // Response.
        let switched = upgrade.and_then(|u| {
            u.tunnel(
                &mut response,
                &self.inner.upgraded,
                table.settings().tunnel_idle,
            )
        });
        if switched.is_some() {
            client.upgraded();
        }
        let response = response.map(|body| HeldBody::new(body, in_flight));
        let mut response = comparison.attach(metrics::boxed_response(measure.take(), response));
        forward::downstream_response(&mut response);
        if let Some(protocol) = switched {
            upgrade::restore_headers(response.headers_mut(), protocol);
        }
        if let Some(cookie) = choice.set_cookie {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        if table.settings().version_header {
            response
                .headers_mut()
                .insert(VERSION_HEADER, version.header_value.clone());
        }
        stamp_revision(table, &mut response);
        Ok(response)
    }
}

impl Proxy {
    /// Sends to `endpoint`; a connect failure of an idempotent request
    /// without a body is retried once on another endpoint of the version
    /// (nothing reached the upstream, so nothing can happen twice).
    async fn send(
        &self,
        route: &Route,
        version: &Version,
        endpoint: &Endpoint,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let retry = retry_copy(&req, version);
        match self.call(route, version, endpoint, req).await {
            Err(error) if error.upstream_kind() == Some(UpstreamErrorKind::Connect) => {
                let Some((copy, other)) =
                    retry.and_then(|copy| Some((copy, version.other_endpoint(endpoint)?)))
                else {
                    return Err(error);
                };
                tracing::debug!(%error, retry = %other.authority, "retrying on another endpoint");
                let req = forward::retarget(copy, &other.authority)
                    .map_err(|e| ProxyError::BadRequest(format!("cannot build the retry: {e}")))?;
                // Boxed: rare, and its own copy of the call would double
                // the size of every request's future.
                Box::pin(self.call(route, version, other, req)).await
            }
            result => result,
        }
    }

    /// One upstream exchange up to the response headers, reported to
    /// outlier detection.
    async fn call(
        &self,
        route: &Route,
        version: &Version,
        endpoint: &Endpoint,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let result = match self
            .inner
            .upstream
            .send(&version.transport, req, route.timeout)
            .await
        {
            Ok(response) => Ok(response),
            Err(error) if error.is_timeout() => Err(ProxyError::timeout(
                &version.name,
                endpoint.authority.as_str(),
                route.timeout,
            )),
            Err(error) => Err(ProxyError::upstream(
                &error,
                &version.name,
                endpoint.authority.as_str(),
            )),
        };
        if let Some(policy) = &route.outlier {
            let failed = match &result {
                Ok(response) => response.status().is_server_error(),
                Err(_) => true,
            };
            if failed {
                endpoint
                    .health
                    .record_failure(policy, version.ejected(), version.endpoints.len());
            } else {
                endpoint.health.record_success();
            }
        }
        result
    }
}

/// A bodiless copy of an idempotent request, kept for one retry; `None`
/// when a retry is impossible or unsafe.
fn retry_copy(req: &Request<ProxyBody>, version: &Version) -> Option<Request<ProxyBody>> {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    if version.endpoints.len() < 2 || !idempotent || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

fn stamp_revision(table: &RoutingTable, response: &mut Response<ProxyBody>) {
    if table.settings().revision_header {
        response
            .headers_mut()
            .insert(REVISION_HEADER, HeaderValue::from(table.revision()));
    }
}
