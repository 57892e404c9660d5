//! The rollout's admin endpoints: `GET /api/v1/routes/{route}/rollout` and
//! `POST /api/v1/routes/{route}/rollout/{start|pause|resume|abort}`, with
//! the admin API's error envelope.

use std::sync::Arc;

use http::{Method, StatusCode};

use super::{RolloutError, Rollouts};
use crate::admin::api::{reply, ApiError, Extension, PendingResponse};
use crate::plane::StoreError;

impl From<RolloutError> for ApiError {
    fn from(error: RolloutError) -> ApiError {
        let status = match error {
            RolloutError::Change(change) => return ApiError::from(change),
            RolloutError::NoPolicy(_) => StatusCode::NOT_FOUND,
            RolloutError::WrongPhase { .. } | RolloutError::MetricsOff => StatusCode::CONFLICT,
            RolloutError::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            RolloutError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.to_string())
    }
}

/// The endpoints, for the admin router.
pub fn admin_extension(rollouts: Arc<Rollouts>) -> Extension {
    Box::new(move |method: &Method, path: &str, _query: Option<&str>| {
        let rest = path.strip_prefix("/api/v1/routes/")?;
        let (route, action) = match rest.split('/').collect::<Vec<_>>().as_slice() {
            [route, "rollout"] => (route.to_string(), None),
            [route, "rollout", action] => (route.to_string(), Some(action.to_string())),
            _ => return None,
        };
        let command = match (method, action.as_deref()) {
            (&Method::GET, None) => Command::Status,
            (&Method::POST, Some("start")) => Command::Start,
            (&Method::POST, Some("pause")) => Command::Pause,
            (&Method::POST, Some("resume")) => Command::Resume,
            (&Method::POST, Some("abort")) => Command::Abort,
            _ => return None,
        };
        let rollouts = Arc::clone(&rollouts);
        Some(Box::pin(async move {
            let result = match command {
                Command::Status => rollouts.status(&route).await,
                Command::Start => rollouts.begin(&route).await,
                Command::Pause => rollouts.pause(&route).await,
                Command::Resume => rollouts.resume(&route).await,
                Command::Abort => rollouts.abort(&route).await,
            };
            reply(result.map_err(ApiError::from))
        }) as PendingResponse)
    })
}

enum Command {
    Status,
    Start,
    Pause,
    Resume,
    Abort,
}
