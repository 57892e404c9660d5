//! The one upstream client: how a version's endpoints are spoken to
//! ([`Transport`]) and the pools that carry it ([`crate::pool`]). Plain HTTP/1.1,
//! what nearly every upstream speaks, has a pool of its own reached without
//! a lookup; HTTP/1.1 over TLS uses the same pool design with a TLS
//! connector, HTTP/2 (h2 over TLS, or h2c) one multiplexed connection per
//! endpoint. Active health probes go through here too, so an endpoint is
//! probed over the transport its requests use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::pool::http2::Multiplexed;
use crate::pool::{
    Alpn, Connect, MemoryConnect, PlainConnect, Pool, PoolError, PoolSettings, TcpConnect,
    TlsConnect, UpstreamBody,
};
use crate::tls::TlsError;

/// Settings of the upstream connection pools, fixed for the process lifetime.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// What relative `ca_file` paths are relative to (the config file's
    /// directory); `None`: the working directory.
    pub files_dir: Option<PathBuf>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            files_dir: None,
        }
    }
}

/// How a version's endpoints are spoken to. The default, plain HTTP/1.1,
/// goes through the shared pool at no extra cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Transport {
    /// `Some`: HTTPS to the endpoints.
    pub tls: Option<UpstreamTls>,
    /// HTTP/2: negotiated by ALPN over TLS, prior knowledge (h2c) without.
    pub http2: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// PEM file of the CAs to trust; `None`: the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must be valid for, instead of the
    /// endpoint's host (for endpoints given as IP addresses).
    pub server_name: Option<String>,
}

impl Transport {
    #[inline]
    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && !self.http2
    }
}

/// Why an upstream exchange failed before its response headers arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl UpstreamError {
    /// Nothing reached the upstream: the request may go elsewhere.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Pool(error) => error.is_connect(),
            UpstreamError::Tls(_) => true,
        }
    }

    /// The response headers did not arrive in time (connecting included).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Pool(PoolError::Timeout(_)))
    }

    /// The failure itself, for walking its causes (`transparent` would
    /// skip it).
    pub fn cause(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            UpstreamError::Pool(PoolError::Http(error)) => error,
            UpstreamError::Pool(error) => error,
            UpstreamError::Tls(error) => error,
        }
    }
}

/// The pool of a transport other than plain HTTP/1.1.
#[derive(Clone)]
enum Channel {
    Http1Tls(Pool<TlsConnect>),
    Http2(Multiplexed<TcpConnect>),
    Http2Tls(Multiplexed<TlsConnect>),
}

impl Channel {
    /// Reads the transport's CA file; the pool itself is made by [`Channel::new`].
    fn connector(transport: &Transport, settings: &UpstreamSettings) -> Result<Opener, TlsError> {
        let tcp = TcpConnect {
            timeout: settings.connect_timeout,
        };
        let Some(tls) = &transport.tls else {
            return Ok(Opener::Tcp(tcp));
        };
        let ca_file = tls.ca_file.as_ref().map(|path| match &settings.files_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.clone(),
        });
        let alpn = if transport.http2 {
            Alpn::Http2
        } else {
            Alpn::Http1
        };
        Ok(Opener::Tls(TlsConnect::new(
            tcp,
            ca_file.as_deref(),
            tls.server_name.as_deref(),
            alpn,
        )?))
    }

    fn new(transport: &Transport, opener: Opener, settings: &UpstreamSettings) -> Channel {
        match (opener, transport.http2) {
            (Opener::Tls(tls), false) => Channel::Http1Tls(pool(settings, tls)),
            (Opener::Tls(tls), true) => {
                Channel::Http2Tls(Multiplexed::new(settings.pool_idle_timeout, tls))
            }
            // Plain HTTP/1.1 never comes here; h2c is the other clear-text one.
            (Opener::Tcp(tcp), _) => {
                Channel::Http2(Multiplexed::new(settings.pool_idle_timeout, tcp))
            }
        }
    }

    async fn send(
        &self,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        match self {
            Channel::Http1Tls(pool) => pool.send(req, timeout).await,
            Channel::Http2(pool) => pool.send(req, timeout).await,
            Channel::Http2Tls(pool) => pool.send(req, timeout).await,
        }
    }
}

/// A transport's connector, built once per reload and shared by the pools
/// of every [`Upstream`] of a family.
#[derive(Clone)]
enum Opener {
    Tcp(TcpConnect),
    Tls(TlsConnect),
}

type Channels = RwLock<HashMap<Transport, Channel>>;

fn pool<C: Connect>(settings: &UpstreamSettings, connector: C) -> Pool<C> {
    Pool::new(
        PoolSettings {
            idle_timeout: settings.pool_idle_timeout,
            max_idle_per_host: settings.pool_max_idle_per_host,
        },
        connector,
    )
}

/// The pools for one kind of upstream traffic (primary requests; shadow
/// copies and health probes get their own so they never take primary
/// connections).
#[derive(Clone)]
pub struct Upstream {
    /// Plain HTTP/1.1.
    plain: Pool<PlainConnect>,
    /// How `plain` connects; pools made from this upstream connect the same way.
    plain_connect: PlainConnect,
    settings: UpstreamSettings,
    /// Pools of other transports, made on first use and kept, so they
    /// outlive table swaps.
    others: Arc<Channels>,
    /// The `others` of this upstream and of every one made by
    /// [`Upstream::separate_pool`] from it: a reload of the CA files
    /// reaches them all.
    family: Arc<Mutex<Vec<Weak<Channels>>>>,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Upstream {
        let tcp = PlainConnect::Tcp(TcpConnect {
            timeout: settings.connect_timeout,
        });
        Upstream::in_family(settings, tcp, Arc::default())
    }

    /// Plain HTTP/1.1 upstreams reached in memory through `connect`
    /// instead of TCP (tests and fuzz targets drive the whole request path
    /// this way); other transports still use the network.
    pub fn in_memory(settings: &UpstreamSettings, connect: MemoryConnect) -> Upstream {
        Upstream::in_family(settings, PlainConnect::Memory(connect), Arc::default())
    }

    fn in_family(
        settings: &UpstreamSettings,
        plain_connect: PlainConnect,
        family: Arc<Mutex<Vec<Weak<Channels>>>>,
    ) -> Upstream {
        let others = Arc::<Channels>::default();
        let mut members = family.lock().unwrap_or_else(PoisonError::into_inner);
        members.retain(|member| member.strong_count() > 0);
        members.push(Arc::downgrade(&others));
        drop(members);
        Upstream {
            plain: pool(settings, plain_connect.clone()),
            plain_connect,
            settings: settings.clone(),
            others,
            family,
        }
    }

    /// Sends `req` (absolute `http` URI) over `transport` (for TLS, as an
    /// `https` URI) and waits up to `timeout` for the response headers.
    pub async fn send(
        &self,
        transport: &Transport,
        req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if transport.is_plain() {
            return Ok(self.plain.send(req, timeout).await?);
        }
        // Boxed: rarer than plain HTTP/1.1, and it would otherwise make
        // every request's future larger.
        Box::pin(self.send_other(transport, req, timeout)).await
    }

    async fn send_other(
        &self,
        transport: &Transport,
        mut req: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let channel = self.channel(transport)?;
        if transport.tls.is_some() {
            set_scheme(&mut req, Scheme::HTTPS);
        }
        Ok(channel.send(req, timeout).await?)
    }

    fn channel(&self, transport: &Transport) -> Result<Channel, TlsError> {
        let known = self.others.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = known.get(transport) {
            return Ok(channel.clone());
        }
        drop(known);
        let opener = Channel::connector(transport, &self.settings)?;
        let channel = Channel::new(transport, opener, &self.settings);
        let mut known = self.others.write().unwrap_or_else(PoisonError::into_inner);
        Ok(known.entry(transport.clone()).or_insert(channel).clone())
    }

    /// Re-reads the CA files of `transports` (those with TLS) and swaps in
    /// new pools that use them, all or none, in this upstream and every one
    /// made from it, so a reload picks up a rotated CA. New requests use
    /// new pools; open connections finish on the old ones. Returns how many
    /// transports were reloaded.
    pub fn reload_tls<'a>(
        &self,
        transports: impl IntoIterator<Item = &'a Transport>,
    ) -> Result<usize, TlsError> {
        let mut fresh = HashMap::new();
        for transport in transports {
            if transport.tls.is_some() && !fresh.contains_key(transport) {
                let opener = Channel::connector(transport, &self.settings)?;
                fresh.insert(transport.clone(), opener);
            }
        }
        let members: Vec<Arc<Channels>> = self
            .family
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for member in members {
            let channels = fresh.iter().map(|(transport, opener)| {
                let channel = Channel::new(transport, opener.clone(), &self.settings);
                (transport.clone(), channel)
            });
            member
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(channels);
        }
        Ok(fresh.len())
    }

    /// Pools of its own with the same settings; CA reloads reach it too.
    pub fn separate_pool(&self) -> Upstream {
        Upstream::in_family(
            &self.settings,
            self.plain_connect.clone(),
            Arc::clone(&self.family),
        )
    }

    /// Idle plain HTTP/1.1 connections kept for `authority`.
    pub fn idle_connections(&self, authority: &str) -> usize {
        self.plain.idle_count(authority)
    }

    /// An active health check of `endpoint` over `transport`: GET `path`;
    /// the status of an answer whose headers came within `timeout`.
    pub async fn probe(
        &self,
        transport: &Transport,
        endpoint: &Authority,
        path: &str,
        timeout: Duration,
    ) -> Result<StatusCode, ProbeError> {
        let started = tokio::time::Instant::now();
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(endpoint.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| ProbeError::BadPath(path.to_owned(), e.to_string()))?;
        let mut req = Request::new(crate::body::empty());
        *req.uri_mut() = uri;
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static("switchyard-health-check"),
        );
        let response = self.send(transport, req, timeout).await?;
        let status = response.status();
        // Read to the end (in what is left of the timeout), so the
        // connection can serve the next probe; the status alone decides.
        let left = timeout.saturating_sub(started.elapsed());
        let _ = tokio::time::timeout(left, response.into_body().collect()).await;
        Ok(status)
    }
}

/// Why a health probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("health check path '{0}' is not a valid request path: {1}")]
    BadPath(String, String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

fn set_scheme(req: &mut Request<ProxyBody>, scheme: Scheme) {
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_reload_reaches_every_pool_made_from_the_upstream() {
        let dir = std::env::temp_dir().join(format!("switchyard-upstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_file = dir.join("ca.pem");
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        let transport = Transport {
            tls: Some(UpstreamTls {
                ca_file: Some(ca_file.clone()),
                server_name: None,
            }),
            http2: false,
        };
        let upstream = Upstream::new(&UpstreamSettings::default());
        let probes = upstream.separate_pool();
        let has = |u: &Upstream| u.others.read().expect("lock").contains_key(&transport);
        assert_eq!(upstream.reload_tls([&transport]).expect("readable CA"), 1);
        assert!(has(&upstream) && has(&probes));

        // All or none: a broken CA file replaces nothing anywhere.
        let before = probes.channel(&transport).expect("known");
        std::fs::write(&ca_file, "not a certificate").expect("break CA");
        assert!(upstream.reload_tls([&transport]).is_err());
        let after = probes.channel(&transport).expect("known");
        assert!(
            matches!((before, after), (Channel::Http1Tls(a), Channel::Http1Tls(b)) if a.same_pool(&b))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
