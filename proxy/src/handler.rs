//! The request path as named phases over one per-request `Exchange`:
//! route → pick upstream → upstream request → mirror (never awaited) → send
//! → response → log. Each phase is a small method; what a later phase needs
//! of an earlier one travels in the exchange.
//!
//! Everything a request needs from the control plane comes from the one table
//! it loads first; it keeps that `Arc` until its response is complete.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, SET_COOKIE};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::breaker::{Admitted, Held, Overflow};
use crate::client_idle::{HeldBody, InFlight};
use crate::connection::ClientConnection;
use crate::error::{ProxyError, UpstreamErrorKind};
use crate::experiment::{Experiment, Unit};
use crate::flags::Flag;
use crate::forward::{self, Hop};
use crate::limits::{self, ClientBodyError, ClientLimits};
use crate::metrics::{self, Measure, Metrics};
use crate::pool::UpstreamBody;
use crate::route::request_host;
use crate::shadow::Comparison;
use crate::table::{Endpoint, Route, RoutingTable, TableHandle, Version};
use crate::upgrade::{self, UpgradeRequest};
use crate::upstream::Upstream;
use crate::{select, shadow};

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
    limits: ClientLimits,
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
                limits: ClientLimits::default(),
            }),
        }
    }

    /// Checks every request head against `limits` (431 with a body naming
    /// the key). Call it before the proxy is cloned.
    pub fn with_limits(mut self, limits: ClientLimits) -> Proxy {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.limits = limits,
            None => tracing::warn!("limits not attached: the proxy is already shared"),
        }
        self
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
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: &ClientConnection,
    ) -> Response<ProxyBody> {
        let table = self.inner.table.load();
        let mut exchange = Exchange::new(&self.inner, &table, client, req.version());
        let result = exchange.proxy(req).await;
        exchange.log(result)
    }
}

/// One request on its way through the phases, and what the later phases
/// need of the earlier ones. Everything it borrows comes from the one table
/// the request loaded first.
struct Exchange<'t> {
    proxy: &'t Inner,
    table: &'t Arc<RoutingTable>,
    client: &'t ClientConnection,
    /// When the request arrived (when requests are measured).
    started: Option<metrics::Instant>,
    /// Ends with the response body (or here, for an error response).
    in_flight: Option<InFlight>,
    /// From the upstream pick until the response takes it.
    measure: Option<Measure>,
    /// A `Set-Cookie` the pick wants on the response (sticky sessions).
    set_cookie: Option<HeaderValue>,
    /// The client asked to switch protocols.
    upgrade: Option<UpgradeRequest>,
    /// The version's `max_requests` slot, held until the response ends.
    slot: Option<Admitted>,
    /// What the compared shadow copies wait for.
    comparison: Comparison,
    /// The route's experiment counts this exchange for the picked variant.
    experiment: Option<Counted<'t>>,
    /// The route's flags and the state each gave this request.
    flagged: Vec<(&'t Flag, usize)>,
}

/// An exchange an experiment counts: its unit, for the picked variant.
struct Counted<'t> {
    experiment: &'t Experiment,
    variant: &'t Arc<str>,
    unit: Unit,
}

/// Where the upstream pick sends the request.
struct Target<'t> {
    route: &'t Route,
    version: &'t Version,
    endpoint: &'t Endpoint,
}

impl<'t> Exchange<'t> {
    fn new(
        proxy: &'t Inner,
        table: &'t Arc<RoutingTable>,
        client: &'t ClientConnection,
        version: http::Version,
    ) -> Exchange<'t> {
        Exchange {
            proxy,
            table,
            client,
            started: proxy.metrics.clock(),
            in_flight: client.request_started(version),
            measure: None,
            set_cookie: None,
            upgrade: None,
            slot: None,
            comparison: Comparison::default(),
            experiment: None,
            flagged: Vec::new(),
        }
    }

    /// The phases, in order: route → pick upstream → upstream request →
    /// mirror → send → response.
    async fn proxy(
        &mut self,
        mut req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        self.proxy.limits.check_head(&req)?;
        let route = self.route(&req)?;
        self.flags(route, req.headers_mut());
        limits::check_declared_length(req.headers(), route.max_request_body_bytes)?;
        let target = self.pick_upstream(route, &mut req)?;
        let upstream_req = self.upstream_request(&target, req)?;
        let upstream_req = self.mirror(target.route, upstream_req);
        let response = self.send(&target, upstream_req).await?;
        Ok(self.response(&target, response))
    }

    /// The most specific route matching the request's host, path and headers.
    fn route(&self, req: &Request<Incoming>) -> Result<&'t Route, ProxyError> {
        let host = request_host(req).unwrap_or_default();
        self.table
            .find_request(&host, req.method(), req.uri().path(), req.headers())
            .ok_or_else(|| ProxyError::NoRoute {
                host: host.into_owned(),
                path: req.uri().path().to_owned(),
            })
    }

    /// The unit's flags, named to the upstream in the flags header (the
    /// client's own copy never passes, on any route).
    fn flags(&mut self, route: &'t Route, headers: &mut HeaderMap) {
        let name = &self.table.settings().flags_header;
        headers.remove(name);
        if route.flags.is_empty() {
            return;
        }
        let mut named = String::new();
        for flag in route.flags.iter() {
            let (state, reason) = flag.evaluate(flag.key(headers));
            flag.push_header_part(state, reason, &mut named);
            self.flagged.push((flag, state));
        }
        if named.is_empty() {
            return;
        }
        // Flag and variant names are tokens: always a valid value.
        if let Ok(value) = HeaderValue::from_str(&named) {
            headers.insert(name.clone(), value);
        }
    }

    /// The version (override header, sticky key, or weight; a version known
    /// to be down hands its share to the baseline) and its next endpoint.
    /// Measuring starts here: from now on the request counts for the version.
    fn pick_upstream(
        &mut self,
        route: &'t Route,
        req: &mut Request<Incoming>,
    ) -> Result<Target<'t>, ProxyError> {
        let table = self.table;
        let choice = select::choose(
            route,
            table.settings().version_override.as_ref(),
            req.headers_mut(),
        )?;
        let version = route.available(choice.version);
        self.slot = version.breaker.admit(
            Overflow::Requests,
            version.breaker_limits.max_requests,
            &version.name,
        )?;
        self.set_cookie = choice.set_cookie;
        self.experiment = counted(route, version, req);
        self.measure = self
            .started
            .and_then(|at| self.proxy.metrics.start(table, route, version, at));
        Ok(Target {
            route,
            version,
            endpoint: version.next_endpoint(),
        })
    }

    /// The request as the endpoint gets it; a protocol upgrade keeps its
    /// `Upgrade` header.
    fn upstream_request(
        &mut self,
        target: &Target<'t>,
        mut req: Request<Incoming>,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        self.upgrade = upgrade::requested(&mut req);
        let hop = match self.upgrade {
            Some(_) => Hop::Upgrade,
            None => Hop::Strip,
        };
        let mut client_body = None;
        let req = req.map(|body| {
            let (body, failed) = limits::request_body(body, target.route.max_request_body_bytes);
            client_body = failed;
            body
        });
        if let (Some(measure), Some(failed)) = (&mut self.measure, client_body) {
            measure.watch_client_body(failed);
        }
        forward::upstream_request(
            req,
            &target.endpoint.authority,
            self.client,
            self.proxy.scheme,
            hop,
        )
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream request: {e}")))
    }

    /// Copies for the route's shadows, spawned, never awaited (not of a
    /// protocol upgrade: a tunnel cannot be copied).
    fn mirror(&mut self, route: &Route, req: Request<ProxyBody>) -> Request<ProxyBody> {
        if self.upgrade.is_some() {
            return req;
        }
        let (req, comparison) = shadow::mirror(&route.shadows, &self.proxy.shadow_upstream, req);
        self.comparison = comparison;
        req
    }

    /// Sends to the endpoint; a connect failure of an idempotent request
    /// without a body is retried once on another endpoint of the version
    /// (nothing reached the upstream, so nothing can happen twice).
    async fn send(
        &self,
        target: &Target<'t>,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let Target {
            version, endpoint, ..
        } = target;
        let retry = retry_copy(&req, version);
        match self.call(target, endpoint, req).await {
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
                Box::pin(self.call(target, other, req)).await
            }
            result => result,
        }
    }

    /// One upstream exchange up to the response headers, reported to
    /// outlier detection.
    async fn call(
        &self,
        target: &Target<'t>,
        endpoint: &Endpoint,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let Target { route, version, .. } = target;
        let _pending = version.breaker.admit(
            Overflow::Pending,
            version.breaker_limits.max_pending,
            &version.name,
        )?;
        let result = self
            .proxy
            .upstream
            .send(&version.transport, req, route.timeout)
            .await
            .map_err(|error| {
                let authority = endpoint.authority.as_str();
                if let Some(client) = ClientBodyError::in_chain(error.cause()) {
                    client.to_proxy_error()
                } else if error.is_timeout() {
                    ProxyError::timeout(&version.name, authority, route.timeout)
                } else {
                    ProxyError::upstream(&error, &version.name, authority)
                }
            });
        let client_fault = matches!(&result, Err(e) if e.upstream_kind().is_none());
        if let (Some(policy), false) = (&route.outlier, client_fault) {
            endpoint.health.record_exchange(policy, &result, || {
                (version.ejected(), version.endpoints.len())
            });
        }
        result
    }

    /// The response the client gets: a 101 becomes a tunnel, the body is
    /// measured (and digested for compared shadows), hop-by-hop headers go,
    /// switchyard's own come.
    fn response(
        &mut self,
        target: &Target<'t>,
        mut response: Response<UpstreamBody>,
    ) -> Response<ProxyBody> {
        let settings = self.table.settings();
        if let Some(c) = self.experiment.take() {
            c.experiment
                .record(c.variant, c.unit, response.status(), response.headers());
        }
        let switched = self.upgrade.take().and_then(|upgrade| {
            upgrade.tunnel(&mut response, &self.proxy.upgraded, settings.tunnel_idle)
        });
        if switched.is_some() {
            self.client.upgraded();
        }
        let slot = self.slot.take();
        let response =
            response.map(|body| Held::new(HeldBody::new(body, self.in_flight.take()), slot));
        let response = metrics::boxed_response(self.measure.take(), response);
        let mut response = std::mem::take(&mut self.comparison).attach(response);
        forward::downstream_response(&mut response, switched);
        let headers = response.headers_mut();
        if let Some(cookie) = self.set_cookie.take() {
            headers.append(SET_COOKIE, cookie);
        }
        if settings.version_header {
            headers.insert(VERSION_HEADER, target.version.header_value.clone());
        }
        response
    }

    /// The end of the request: a failure is logged, measured and answered
    /// in plain text; every response gets the revision header.
    fn log(self, result: Result<Response<ProxyBody>, ProxyError>) -> Response<ProxyBody> {
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request failed");
                self.proxy.metrics.count_rejection(&error);
                if let Some(measure) = self.measure {
                    measure.failed(&error);
                }
                if let (Some(c), Some(_)) = (&self.experiment, error.upstream_kind()) {
                    c.experiment.record_failure(c.variant, c.unit);
                }
                error.into_response()
            }
        };
        if self.table.settings().revision_header {
            response
                .headers_mut()
                .insert(REVISION_HEADER, HeaderValue::from(self.table.revision()));
        }
        if !self.flagged.is_empty() {
            // Read the clock only for requests a flag counts.
            let latency = self.started.map(|at| at.elapsed());
            for (flag, state) in &self.flagged {
                flag.counts()
                    .record(*state, response.status().as_u16(), latency);
            }
        }
        response
    }
}

/// What the route's experiment counts of this request, when it has one and
/// the request carries the route's sticky key.
fn counted<'t>(
    route: &'t Route,
    version: &'t Version,
    req: &Request<Incoming>,
) -> Option<Counted<'t>> {
    let experiment = route.experiment.as_ref()?;
    let key = route.sticky()?.key(req.headers())?;
    Some(Counted {
        experiment,
        variant: &version.name,
        unit: experiment.unit(key, req.method(), req.uri().path()),
    })
}

/// A copy of the request for one retry on another endpoint of the
/// version; `None` when there is none or a retry is unsafe.
fn retry_copy(req: &Request<ProxyBody>, version: &Version) -> Option<Request<ProxyBody>> {
    if version.endpoints.len() < 2 {
        return None;
    }
    forward::replayable_copy(req)
}
