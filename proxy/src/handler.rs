//! The request path, top to bottom: load the table → find the route → pick
//! the version and endpoint → forward → finish the response headers.
//!
//! Everything a request needs from the control plane comes from the one table
//! it loads first; it keeps that `Arc` until its response is complete.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::error::ProxyError;
use crate::forward::{self, Upstream};
use crate::route::request_host;
use crate::shadow;
use crate::table::{RoutingTable, TableHandle};

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
    shadow_upstream: Upstream,
    /// `http` or `https`: what X-Forwarded-Proto says.
    scheme: &'static str,
}

impl Proxy {
    pub fn new(table: TableHandle, upstream: Upstream, scheme: &'static str) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                table,
                shadow_upstream: upstream.separate_pool(),
                upstream,
                scheme,
            }),
        }
    }

    pub fn table(&self) -> &TableHandle {
        &self.inner.table
    }

    /// Serves one request; failures become plain-text error responses.
    pub async fn handle(&self, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
        let table = self.inner.table.load();
        match self.forward(&table, req, client).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, "request failed");
                let mut response = error.into_response();
                stamp_revision(&table, &mut response);
                response
            }
        }
    }

    async fn forward(
        &self,
        table: &Arc<RoutingTable>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Route.
        let host = request_host(&req).unwrap_or_default();
        let Some(route) = table.find(&host, req.uri().path()) else {
            return Err(ProxyError::NoRoute {
                host,
                path: req.uri().path().to_owned(),
            });
        };

        // Upstream pick.
        let Some(version) = route.pick() else {
            return Err(ProxyError::NoVersion {
                route: route.name.to_string(),
            });
        };
        let endpoint = version.next_endpoint();

        // Mirror: copies for the route's shadows, spawned, never awaited.
        let (req, comparison) = shadow::mirror(
            &route.shadows,
            &self.inner.shadow_upstream,
            req,
            client,
            self.inner.scheme,
        );

        // Forward.
        let upstream_req = forward::upstream_request(
            req,
            &endpoint.authority,
            client,
            self.inner.scheme,
        )
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream request: {e}")))?;
        let call = self.inner.upstream.client().request(upstream_req);
        let response = match tokio::time::timeout(route.timeout, call).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return Err(ProxyError::upstream(
                    &error,
                    &version.name,
                    endpoint.authority.as_str(),
                ))
            }
            Err(_) => {
                return Err(ProxyError::timeout(
                    &version.name,
                    endpoint.authority.as_str(),
                    route.timeout,
                ))
            }
        };

        // Response.
        let mut response = comparison.attach(response.map(body::boxed));
        forward::downstream_response(&mut response);
        if table.settings().version_header {
            response
                .headers_mut()
                .insert(VERSION_HEADER, version.header_value.clone());
        }
        stamp_revision(table, &mut response);
        Ok(response)
    }
}

fn stamp_revision(table: &RoutingTable, response: &mut Response<ProxyBody>) {
    if table.settings().revision_header {
        response
            .headers_mut()
            .insert(REVISION_HEADER, HeaderValue::from(table.revision()));
    }
}
