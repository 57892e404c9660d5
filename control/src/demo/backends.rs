//! The demo's backends: small hyper servers on loopback that answer after
//! 1–5 ms of jitter, plus whatever fault an operator injects at run time
//! (an error rate answered with 503, added latency).
//!
//! `/api/…` answers JSON that every build renders alike, so a shadow's
//! body comparison matches, except that the canary build computes
//! `/api/prices` differently: the one path where the shadow disagrees.
//! Everything else answers `hello from NAME`, so `curl` shows the split.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;

/// The one build whose `/api/prices` differs (see the module comment).
pub const DIVERGENT: &str = "canary";
/// The path on which it differs.
pub const DIVERGENT_PATH: &str = "/api/prices";
/// Response header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-demo-backend";

/// A fault to inject: a share of requests answered 503, added latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Fault {
    /// 0 to 1.
    pub error_rate: f64,
    #[serde(serialize_with = "as_millis", rename = "latency_ms")]
    pub latency: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// The live fault of one backend, read on every request. Stored as two
/// atomics (the rate in millionths): a change applies to the next request.
#[derive(Debug, Default)]
struct FaultCell {
    error_ppm: AtomicU64,
    latency_us: AtomicU64,
}

impl FaultCell {
    fn get(&self) -> Fault {
        Fault {
            error_rate: self.error_ppm.load(Ordering::Relaxed) as f64 / 1e6,
            latency: Duration::from_micros(self.latency_us.load(Ordering::Relaxed)),
        }
    }

    fn set(&self, fault: Fault) {
        let ppm = (fault.error_rate.clamp(0.0, 1.0) * 1e6).round() as u64;
        let us = u64::try_from(fault.latency.as_micros()).unwrap_or(u64::MAX);
        self.error_ppm.store(ppm, Ordering::Relaxed);
        self.latency_us.store(us, Ordering::Relaxed);
    }
}

/// One running demo backend; clones share its state.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    fault: Arc<FaultCell>,
    requests: Arc<AtomicU64>,
}

/// What `GET /api/v1/demo/backends` shows of a backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    pub name: &'static str,
    pub address: String,
    #[serde(flatten)]
    pub fault: Fault,
    /// Requests answered since the demo started (shadow copies included).
    pub requests: u64,
}

impl Backend {
    /// Starts a backend on an ephemeral loopback port.
    pub async fn start(name: &'static str) -> std::io::Result<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let backend = Backend {
            name,
            addr: listener.local_addr()?,
            fault: Arc::default(),
            requests: Arc::default(),
        };
        let serving = backend.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let backend = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let backend = backend.clone();
                        async move { Ok::<_, Infallible>(backend.answer(&req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(backend)
    }

    pub fn fault(&self) -> Fault {
        self.fault.get()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.fault.set(fault);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn view(&self) -> BackendView {
        BackendView {
            name: self.name,
            address: self.addr.to_string(),
            fault: self.fault(),
            requests: self.requests(),
        }
    }

    async fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fault = self.fault();
        let jitter = Duration::from_millis(1 + rand::random::<u64>() % 5);
        tokio::time::sleep(jitter + fault.latency).await;
        let path = req.uri().path();
        let (status, content_type, body) = if rand::random::<f64>() < fault.error_rate {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!(
                    "{}: injected fault (switchyard ctl demo {} --reset)\n",
                    self.name, self.name
                ),
            )
        } else if path.starts_with("/api/") {
            let (status, body) = api_body(self.name, path);
            (status, "application/json", body)
        } else {
            (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                format!("hello from {} ({} {path})\n", self.name, req.method()),
            )
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(BACKEND_HEADER, HeaderValue::from_static(self.name));
        response
    }
}

/// The API's answer: the same for every build except [`DIVERGENT`] on
/// [`DIVERGENT_PATH`], which rounds prices up to whole units.
fn api_body(name: &str, path: &str) -> (StatusCode, String) {
    let body = match path.trim_end_matches('/') {
        "/api/users" => {
            r#"{"users":[{"id":1,"name":"ada"},{"id":2,"name":"grace"},{"id":3,"name":"linus"}]}"#
                .to_owned()
        }
        "/api/orders" => {
            r#"{"orders":[{"id":101,"user":1,"items":2},{"id":102,"user":3,"items":1}]}"#.to_owned()
        }
        DIVERGENT_PATH if name == DIVERGENT => {
            r#"{"prices":[{"sku":"tea","cents":500},{"sku":"cake","cents":300}]}"#.to_owned()
        }
        DIVERGENT_PATH => {
            r#"{"prices":[{"sku":"tea","cents":450},{"sku":"cake","cents":275}]}"#.to_owned()
        }
        _ => return (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.to_owned()),
    };
    (StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_bodies_agree_except_on_the_divergent_path() {
        for path in ["/api/users", "/api/orders", "/api/none"] {
            assert_eq!(
                api_body("stable", path),
                api_body(DIVERGENT, path),
                "{path}"
            );
        }
        assert_ne!(
            api_body("stable", DIVERGENT_PATH),
            api_body(DIVERGENT, DIVERGENT_PATH)
        );
        assert_eq!(
            api_body("stable", DIVERGENT_PATH),
            api_body("green", DIVERGENT_PATH)
        );
    }

    #[test]
    fn fault_round_trips_through_the_cell() {
        let cell = FaultCell::default();
        let fault = Fault {
            error_rate: 0.2,
            latency: Duration::from_millis(80),
        };
        cell.set(fault);
        assert_eq!(cell.get(), fault);
        cell.set(Fault::default());
        assert_eq!(cell.get(), Fault::default());
    }
}
