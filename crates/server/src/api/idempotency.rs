//! `Idempotency-Key`: the first answer to a keyed POST is stored and replayed
//! for every repeat with the same body; a different body under the same key is
//! a conflict. Server errors are not stored, so a failed attempt can be retried.

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paymux_store::IdempotencyRecord;

use super::validate::sha256_hex;
use super::ApiError;
use crate::error::FlowError;
use crate::AppState;

pub const HEADER: &str = "idempotency-key";
const MAX_KEY: usize = 128;

/// The key of a request, if it carries a valid one.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key: must be ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(format!(
            "Idempotency-Key: must be 1-{MAX_KEY} printable characters"
        )));
    }
    Ok(Some(key.to_string()))
}

/// Runs `handler` once per key: repeats get the stored answer.
pub async fn once<F>(
    state: &AppState,
    merchant_id: &str,
    key: Option<String>,
    method_and_path: &str,
    body: &[u8],
    handler: F,
) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let Some(key) = key else { return handler.await };
    let request_hash = sha256_hex(&[method_and_path.as_bytes(), b"\n", body].concat());
    match state.store.idempotency_record(merchant_id, &key).await {
        Ok(Some(record)) if record.request_hash == request_hash => return replay(record),
        Ok(Some(_)) => {
            return ApiError::idempotency_conflict(
                "Idempotency-Key was used with a different request",
            )
            .into_response()
        }
        Ok(None) => {}
        Err(e) => return ApiError::from(FlowError::from(e)).into_response(),
    }
    let response = handler.await;
    if response.status().is_server_error() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let record = IdempotencyRecord {
        merchant_id: merchant_id.to_string(),
        key,
        request_hash,
        status: parts.status.as_u16(),
        body: bytes.to_vec(),
        created_at: state.clock.now(),
    };
    // If another request with the same key won the race, its answer stands
    // for later repeats; this one is still a correct answer to this request.
    if let Err(e) = state.store.save_idempotency_record(&record).await {
        tracing::warn!(error = %e, "could not store idempotency record");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(record: IdempotencyRecord) -> Response {
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let mut response = (status, record.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
