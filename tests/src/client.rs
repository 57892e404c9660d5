//! HTTP clients for tests and the collected [`Reply`] they return, every
//! request bounded by [`REQUEST_TIMEOUT`].

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::{empty, TestBody};
use crate::{bounded, BoxError, REQUEST_TIMEOUT};

pub type TestClient = Client<HttpConnector, TestBody>;

/// A pooled HTTP/1.1 keep-alive client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A whole response, collected (tests only: the proxy never collects).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (for the backend's `/headers` answer).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends `req` and collects the response, failing the test after
/// [`REQUEST_TIMEOUT`].
pub async fn send(client: &TestClient, req: Request<TestBody>) -> Result<Reply, BoxError> {
    let what = format!("{} {}", req.method(), req.uri());
    bounded(REQUEST_TIMEOUT, &what, async {
        let response = client.request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    })
    .await
}

/// GET `url`, panicking on a transport error (a status is not an error).
pub async fn get(client: &TestClient, url: &str) -> Reply {
    let req = Request::get(url).body(empty()).expect("request");
    send(client, req)
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}
