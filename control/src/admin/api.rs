//! The admin API's HTTP vocabulary, shared by the router and every module
//! that adds endpoints (rollout, stats, shadows, dashboard): responses, the
//! `{"error": "...", "detail": ...}` envelope, request bodies, and the
//! [`Extension`] hook. A leaf: it knows nothing of the control plane.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use serde_json::{json, Value};

/// Largest admin request body accepted.
const MAX_BODY: usize = 1 << 20;

pub type AdminResponse = Response<Full<Bytes>>;

/// An answer still being computed (an extension that waits on the fleet).
pub type PendingResponse = Pin<Box<dyn Future<Output = AdminResponse> + Send>>;

/// An extra endpoint contributed by another module (metrics, dashboard,
/// shadows, rollouts): returns `None` when the path is not its own.
pub type Extension =
    Box<dyn Fn(&Method, &str, Option<&str>) -> Option<PendingResponse> + Send + Sync>;

/// An [`Extension`] that answers at once.
pub fn sync_extension(
    answer: impl Fn(&Method, &str, Option<&str>) -> Option<AdminResponse> + Send + Sync + 'static,
) -> Extension {
    Box::new(move |method, path, query| {
        let response = answer(method, path, query)?;
        Some(Box::pin(std::future::ready(response)) as PendingResponse)
    })
}

/// An admin failure: the status and the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    detail: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            detail: Value::Null,
        }
    }

    pub fn with_detail(mut self, detail: Value) -> ApiError {
        self.detail = detail;
        self
    }

    pub fn into_response(self) -> AdminResponse {
        json_response(
            self.status,
            &json!({"error": self.error, "detail": self.detail}),
        )
    }
}

/// Compact JSON (half the cost of pretty printing; `switchyard ctl --json`
/// and `jq` indent it for people).
pub fn json_response(status: StatusCode, value: &impl Serialize) -> AdminResponse {
    let mut body = Vec::with_capacity(1024);
    if serde_json::to_writer(&mut body, value).is_err() {
        body = b"{}".to_vec();
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `Ok` as JSON, `Err` as the error envelope.
pub fn reply<T: Serialize>(result: Result<T, ApiError>) -> AdminResponse {
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(error) => error.into_response(),
    }
}

/// The request body as `T`, at most `MAX_BODY` bytes.
pub async fn read_json<T, B>(req: Request<B>) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = read_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not the JSON expected: {e}"),
        )
    })
}

/// The request body's bytes (at most 1 MiB).
pub async fn read_body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Ok(Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?
        .to_bytes())
}
