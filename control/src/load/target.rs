//! Where `switchyard load` sends, and how: one URL's connections (plain or
//! TLS through the proxy's own connectors, HTTP/1.1, h2c with prior
//! knowledge, or h2 by ALPN) and one request on one of them, timed to its
//! last body byte.
//!
//! An HTTP/1.1 connection has no task of its own: the worker that sends on
//! it also polls hyper's connection state machine (the "driver") while its
//! request is in flight. Each request then stays in one task, where a
//! spawned connection would cost two task switches per request, a
//! measurable part of a generator's CPU at saturation.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_proxy::pool::connect::{Alpn, Connect, TcpConnect, TlsConnect};

/// What can go wrong before the first request.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("'{0}' is not an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/")]
    Url(String),
    #[error("header '{0}' is not `Name: value`")]
    Header(String),
    #[error("--ca: {0}")]
    Tls(String),
    #[error("--method '{0}' is not an HTTP method")]
    Method(String),
}

/// The protocol spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2: prior knowledge on http://, ALPN h2 on https://.
    Http2,
}

/// One URL and the request sent to it.
#[derive(Clone)]
pub struct Target {
    uri: Uri,
    /// What the request line carries, parsed once: the origin form on
    /// HTTP/1.1 (with `host`), the full URI on h2 (`:authority`).
    request_uri: Uri,
    host: HeaderValue,
    authority: Authority,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    protocol: Protocol,
    tcp: TcpConnect,
    tls: Option<TlsConnect>,
}

/// hyper's HTTP/1.1 connection future, polled by the worker.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An open connection.
pub enum Connection {
    Http1 {
        sender: http1::SendRequest<Full<Bytes>>,
        driver: Driver,
        /// The driver finished: the connection is closed.
        ended: bool,
    },
    /// h2 multiplexes and keeps its own tasks (hyper spawns them).
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    /// Whether the connection can take another request. Polls an HTTP/1.1
    /// driver once first, so a close by the server since the last request
    /// (keep-alive timeout, `Connection: close`) is seen now.
    pub async fn usable(&mut self) -> bool {
        match self {
            Connection::Http1 {
                sender,
                driver,
                ended,
            } => {
                if !*ended {
                    *ended = std::future::poll_fn(|cx| Poll::Ready(driver.as_mut().poll(cx)))
                        .await
                        .is_ready();
                }
                !*ended && !sender.is_closed()
            }
            Connection::Http2(sender) => !sender.is_closed(),
        }
    }
}

/// Runs `work` while polling `driver`, which moves its bytes.
async fn drive<T>(driver: &mut Driver, ended: &mut bool, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if *ended {
            // hyper dropped the connection's channels: `work` ends with an
            // error on its next poll, to which it is registered.
            return Poll::Pending;
        }
        if driver.as_mut().poll(cx).is_ready() {
            *ended = true;
        }
        // The driver may just have completed what `work` waits for.
        work.as_mut().poll(cx)
    })
    .await
}

/// A response's status and version header.
pub struct Answer {
    pub status: u16,
    pub version: Option<String>,
}

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Reset,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
        }
    }
}

/// How each request looks, and how to connect.
pub struct RequestShape<'a> {
    pub method: &'a str,
    pub headers: &'a [String],
    pub body: Bytes,
    pub protocol: Protocol,
    pub ca: Option<&'a Path>,
    pub connect_timeout: Duration,
}

impl Target {
    pub fn new(url: &str, shape: &RequestShape<'_>) -> Result<Target, TargetError> {
        let uri: Uri = url.parse().map_err(|_| TargetError::Url(url.into()))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| TargetError::Url(url.into()))?;
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err(TargetError::Url(url.into())),
        };
        // No port: the scheme's.
        let authority = if authority.port().is_some() {
            authority
        } else {
            let port = if https { 443 } else { 80 };
            format!("{}:{port}", authority.as_str())
                .parse()
                .map_err(|_| TargetError::Url(url.into()))?
        };
        let headers = shape
            .headers
            .iter()
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| TargetError::Header(line.clone()))?;
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| TargetError::Header(line.clone()))?;
                let value = HeaderValue::from_str(value.trim())
                    .map_err(|_| TargetError::Header(line.clone()))?;
                Ok((name, value))
            })
            .collect::<Result<_, TargetError>>()?;
        let method = Method::from_bytes(shape.method.as_bytes())
            .map_err(|_| TargetError::Method(shape.method.into()))?;
        let tcp = TcpConnect {
            timeout: shape.connect_timeout,
        };
        let tls = if https {
            let alpn = match shape.protocol {
                Protocol::Http1 => Alpn::Http1,
                Protocol::Http2 => Alpn::Http2,
            };
            Some(
                TlsConnect::new(tcp.clone(), shape.ca, None, alpn)
                    .map_err(|e| TargetError::Tls(e.to_string()))?,
            )
        } else {
            None
        };
        let request_uri = match shape.protocol {
            Protocol::Http1 => Uri::from(
                uri.path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            ),
            Protocol::Http2 => uri.clone(),
        };
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| TargetError::Url(url.into()))?;
        Ok(Target {
            uri,
            request_uri,
            host,
            authority,
            method,
            headers,
            body: shape.body.clone(),
            protocol: shape.protocol,
            tcp,
            tls,
        })
    }

    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// A new connection, handshaken.
    pub async fn connect(&self) -> Result<Connection, Failure> {
        match &self.tls {
            Some(tls) => {
                let io = tls
                    .connect(&self.authority)
                    .await
                    .map_err(|_| Failure::Connect)?;
                self.handshake(TokioIo::new(io)).await
            }
            None => {
                let io = self
                    .tcp
                    .connect(&self.authority)
                    .await
                    .map_err(|_| Failure::Connect)?;
                self.handshake(TokioIo::new(io)).await
            }
        }
    }

    async fn handshake<I>(&self, io: I) -> Result<Connection, Failure>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        match self.protocol {
            Protocol::Http1 => {
                let (sender, connection) =
                    http1::handshake(io).await.map_err(|_| Failure::Connect)?;
                Ok(Connection::Http1 {
                    sender,
                    driver: Box::pin(connection),
                    ended: false,
                })
            }
            Protocol::Http2 => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|_| Failure::Connect)?;
                tokio::spawn(connection);
                Ok(Connection::Http2(sender))
            }
        }
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.request_uri.clone();
        let headers = request.headers_mut();
        if self.protocol == Protocol::Http1 {
            headers.insert(HOST, self.host.clone());
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        request
    }

    /// One request on `connection`, the whole body read.
    pub async fn send(
        &self,
        connection: &mut Connection,
        version_header: &HeaderName,
    ) -> Result<Answer, Failure> {
        let request = self.request();
        match connection {
            Connection::Http1 {
                sender,
                driver,
                ended,
            } => {
                let exchange = async {
                    sender.ready().await.map_err(|_| Failure::Reset)?;
                    let response = sender
                        .send_request(request)
                        .await
                        .map_err(|_| Failure::Reset)?;
                    read(response, version_header).await
                };
                drive(driver, ended, exchange).await
            }
            Connection::Http2(sender) => {
                sender.ready().await.map_err(|_| Failure::Reset)?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|_| Failure::Reset)?;
                read(response, version_header).await
            }
        }
    }
}

/// The status, the version header and the whole body of `response`.
async fn read(
    response: http::Response<hyper::body::Incoming>,
    version_header: &HeaderName,
) -> Result<Answer, Failure> {
    let status = response.status().as_u16();
    let version = response
        .headers()
        .get(version_header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| Failure::Reset)?;
    }
    Ok(Answer { status, version })
}
