//! The rollout's admin endpoints: `GET /api/v1/routes/{route}/rollout` and
//! `POST /api/v1/routes/{route}/rollout/{start|pause|resume|abort}`, with
//! the admin API's error envelope.

use std::sync::Arc;

use http::{Method, StatusCode};

use super::{RolloutError, Rollouts};
use crate::admin::api::{reply, ApiError, Extension};

impl From<RolloutError> for ApiError {
    fn from(error: RolloutError) -> ApiError {
        let status = match error {
            RolloutError::Change(change) => return ApiError::from(change),
            RolloutError::NoPolicy(_) => StatusCode::NOT_FOUND,
            RolloutError::WrongPhase { .. } | RolloutError::MetricsOff => StatusCode::CONFLICT,
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
        let result = match (method, action.as_deref()) {
            (&Method::GET, None) => rollouts.status(&route),
            (&Method::POST, Some("start")) => rollouts.begin(&route),
            (&Method::POST, Some("pause")) => rollouts.pause(&route),
            (&Method::POST, Some("resume")) => rollouts.resume(&route),
            (&Method::POST, Some("abort")) => rollouts.abort(&route),
            _ => return None,
        };
        Some(reply(result.map_err(ApiError::from)))
    })
}
