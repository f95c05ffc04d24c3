//! The merchant API's error body: `{"error": {"code": "STABLE_CODE", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::FlowError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// The caller's address failed to authenticate too often: 429 with how
    /// long it waits.
    pub fn too_many_auth_failures(wait: std::time::Duration) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_AUTH_FAILURES",
            "too many failed authentications from this address; wait before trying again",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        e
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such payment")
    }

    pub fn idempotency_conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> Self {
        let (status, code) = match &e {
            FlowError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            FlowError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            FlowError::Conflict(_) => (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT"),
            FlowError::InvalidState(_) => (StatusCode::CONFLICT, "INVALID_STATE"),
            FlowError::NotRefundable(_) => (StatusCode::CONFLICT, "PAYMENT_NOT_REFUNDABLE"),
            FlowError::RefundExceeds(_) => (StatusCode::CONFLICT, "REFUND_EXCEEDS_AVAILABLE"),
            FlowError::CheckoutPaid(_) => (StatusCode::CONFLICT, "CHECKOUT_PAID"),
            FlowError::CheckoutExpired(_) => (StatusCode::CONFLICT, "CHECKOUT_EXPIRED"),
            FlowError::TooManyAttempts(_) => (StatusCode::CONFLICT, "TOO_MANY_ATTEMPTS"),
            FlowError::GroupFull(_) => (StatusCode::CONFLICT, "GROUP_FULL"),
            FlowError::GroupClosed(_) => (StatusCode::CONFLICT, "GROUP_CLOSED"),
            FlowError::ChannelNotConfigured(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "CHANNEL_NOT_CONFIGURED")
            }
            FlowError::ChannelRejected(_) => (StatusCode::BAD_GATEWAY, "CHANNEL_REJECTED"),
            FlowError::ChannelUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "CHANNEL_UNAVAILABLE")
            }
            FlowError::ChannelSuspended(wait) => {
                let mut e2 = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "CHANNEL_UNAVAILABLE",
                    e.to_string(),
                );
                e2.retry_after = Some(wait.as_secs().max(1));
                return e2;
            }
            FlowError::Internal(inner) => {
                // Details go to the log, not to the merchant.
                tracing::error!(error = %inner, "internal error");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "internal error; the request may be retried",
                );
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}
