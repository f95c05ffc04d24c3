//! `Idempotency-Key`: the first answer to a keyed POST is stored and replayed
//! for every repeat with the same body; a different body under the same key is
//! a conflict. Server errors are not stored, so a failed attempt can be retried.
//! Keys are kept for [`KEY_WINDOW`].

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

/// How long a key and its answer are kept (then the key may be used again).
pub const KEY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// Runs `handler` once per key: repeats get the stored answer.
///
/// The key is reserved (committed) before the handler runs, so two requests
/// with one key racing each other never both run: the second answers 409
/// `REQUEST_IN_PROGRESS` while the first is running, and the first's answer
/// once it is stored. A server error releases the key, so the request can
/// be retried; a reservation left by a crash is taken over once it is older
/// than twice the request timeout.
/// The key is the request's `Idempotency-Key` header (a malformed one is
/// refused); without one, `handler` simply runs.
pub async fn once<F>(
    state: &AppState,
    merchant_id: &str,
    headers: &HeaderMap,
    method_and_path: &str,
    body: &[u8],
    handler: F,
) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let key = match key(headers) {
        Ok(Some(key)) => key,
        Ok(None) => return handler.await,
        Err(e) => return e.into_response(),
    };
    let request_hash = sha256_hex(&[method_and_path.as_bytes(), b"\n", body].concat());
    let reservation = IdempotencyRecord {
        merchant_id: merchant_id.to_string(),
        key,
        request_hash,
        status: IdempotencyRecord::IN_PROGRESS,
        body: Vec::new(),
        created_at: state.clock.now(),
    };
    match reserve(state, &reservation).await {
        Ok(None) => {}
        Ok(Some(answer)) => return answer,
        Err(e) => return ApiError::from(e).into_response(),
    }
    let response = handler.await;
    if response.status().is_server_error() {
        if let Err(e) = state
            .store
            .release_idempotency_key(merchant_id, &reservation.key, reservation.created_at)
            .await
        {
            // The reservation stays until it is stale; a retry waits for that.
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_STORED_ANSWER).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let record = IdempotencyRecord {
        status: parts.status.as_u16(),
        body: bytes.to_vec(),
        ..reservation
    };
    match state.store.complete_idempotency_record(&record).await {
        Ok(true) => {}
        // Taken over as stale meanwhile: the other request's answer stands
        // for later repeats; this one is still a correct answer to this one.
        Ok(false) => tracing::warn!(key = %record.key, "idempotency reservation was taken over"),
        Err(e) => tracing::warn!(error = %e, "could not store idempotency record"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The largest answer stored for a key (paymux's own JSON, far below this).
const MAX_STORED_ANSWER: usize = 1024 * 1024;

/// Reserves the key: `None` when this request may run, or the answer for a
/// repeat (the stored answer, a conflict, or "in progress").
async fn reserve(
    state: &AppState,
    reservation: &IdempotencyRecord,
) -> Result<Option<Response>, FlowError> {
    let stale_after = chrono::Duration::milliseconds(
        i64::try_from(state.config.http.request_timeout_ms.saturating_mul(2)).unwrap_or(i64::MAX),
    );
    // Two tries: the second after taking over a stale reservation.
    for _ in 0..2 {
        if state.store.save_idempotency_record(reservation).await? {
            return Ok(None);
        }
        let Some(existing) = state
            .store
            .idempotency_record(&reservation.merchant_id, &reservation.key)
            .await?
        else {
            continue; // released meanwhile: try again
        };
        if existing.request_hash != reservation.request_hash {
            return Ok(Some(
                ApiError::idempotency_conflict("Idempotency-Key was used with a different request")
                    .into_response(),
            ));
        }
        if !existing.in_progress() {
            return Ok(Some(replay(existing)));
        }
        let stale =
            paymux_core::clock::later(existing.created_at, stale_after) < reservation.created_at;
        if !stale {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "REQUEST_IN_PROGRESS",
                "a request with this Idempotency-Key is still running; repeat it later",
            );
            e.retry_after = Some(1);
            return Ok(Some(e.into_response()));
        }
        state
            .store
            .release_idempotency_key(
                &reservation.merchant_id,
                &reservation.key,
                existing.created_at,
            )
            .await?;
    }
    Err(FlowError::Conflict(
        "Idempotency-Key is contended; repeat the request".into(),
    ))
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
