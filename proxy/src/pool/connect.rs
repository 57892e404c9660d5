//! How the pools open a connection to an upstream address: plain TCP, or
//! TCP then a rustls handshake (the version's CA and server name, ALPN for
//! the protocol the pool speaks). The pools are generic over [`Connect`], so
//! HTTP/1.1 and HTTP/2, in clear text or over TLS, share one checkout,
//! timeout and reuse design.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::PoolError;
use crate::tls::{self, TlsError};

/// Opens connections to upstream addresses.
pub trait Connect: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// A connection to `authority`, ready for HTTP.
    fn connect(&self, authority: &Authority) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// A connection to `authority`, its failure a connect error naming it.
pub(super) async fn open<C: Connect>(
    connector: &C,
    authority: &Authority,
) -> Result<C::Io, PoolError> {
    connector
        .connect(authority)
        .await
        .map_err(|source| PoolError::connect(authority, source))
}

/// Plain TCP, Nagle off.
#[derive(Debug, Clone)]
pub struct TcpConnect {
    /// For the TCP connect (all addresses of a name together).
    pub timeout: Duration,
}

impl Connect for TcpConnect {
    type Io = TcpStream;

    async fn connect(&self, authority: &Authority) -> io::Result<TcpStream> {
        let stream = connect_tcp(authority.as_str(), self.timeout).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// TCP, then TLS verified against the version's roots.
#[derive(Clone)]
pub struct TlsConnect {
    tcp: TcpConnect,
    tls: TlsConnector,
    /// Instead of the endpoint's host (endpoints given as IP addresses).
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("tcp", &self.tcp)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The ALPN protocol each pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
}

impl TlsConnect {
    /// Reads the CA file (`None`: the Mozilla roots) and checks the server
    /// name override.
    pub fn new(
        tcp: TcpConnect,
        ca_file: Option<&std::path::Path>,
        server_name: Option<&str>,
        alpn: Alpn,
    ) -> Result<TlsConnect, TlsError> {
        let mut config = tls::client_config(ca_file)?;
        config.alpn_protocols = vec![match alpn {
            Alpn::Http1 => b"http/1.1".to_vec(),
            Alpn::Http2 => b"h2".to_vec(),
        }];
        Ok(TlsConnect {
            tcp,
            tls: TlsConnector::from(Arc::new(config)),
            server_name: server_name.map(tls::server_name).transpose()?,
        })
    }
}

impl Connect for TlsConnect {
    type Io = TlsStream<TcpStream>;

    async fn connect(&self, authority: &Authority) -> io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                ServerName::try_from(host.to_owned()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("'{host}' cannot be a TLS server name: set server_name"),
                    )
                })?
            }
        };
        let tcp = self.tcp.connect(authority).await?;
        self.tls.connect(name, tcp).await
    }
}

/// Connects to `authority`: an IP address directly, a name through the
/// resolver, trying each address with its share of `timeout` (as
/// hyper-util's connector does), so one silent address cannot use it all.
async fn connect_tcp(authority: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let timed_out = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {timeout:?}"),
        )
    };
    if let Ok(addr) = authority.parse::<std::net::SocketAddr>() {
        return tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))?;
    }
    let started = tokio::time::Instant::now();
    let addrs: Vec<std::net::SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host(authority))
            .await
            .map_err(|_| timed_out("name resolution"))??
            .collect();
    let mut last_error = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{authority} resolves to no address"),
    );
    for (tried, addr) in addrs.iter().enumerate() {
        let left = timeout.saturating_sub(started.elapsed());
        let share = left / u32::try_from(addrs.len() - tried).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last_error = error,
            Err(_) => last_error = timed_out(&format!("connect to {addr}")),
        }
    }
    Err(last_error)
}
