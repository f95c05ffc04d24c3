//! `/v1/checkouts` handlers: one order, attempts on any channel, paid once.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use paymux_store::Checkout;
use serde::Deserialize;

use super::auth::Caller;
use super::checkout_request::CreateCheckout;
use super::{idempotency, view, ApiError};
use crate::error::FlowError;
use crate::{checkouts, AppState};

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    idempotency::once(
        &state,
        &caller.merchant_id,
        &headers,
        "POST /v1/checkouts",
        &body,
        async {
            let req = match CreateCheckout::parse(&body) {
                Ok(r) => r,
                Err(e) => return e.into_response(),
            };
            if let Err(e) = state.config.check_notify_url(&req.notify_url) {
                return ApiError::invalid(e).into_response();
            }
            match checkouts::create(&state, &caller.merchant_id, &caller.app_id, req).await {
                Ok((checkout, created)) => {
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    match shown(&state, &checkout).await {
                        Ok(body) => (status, body).into_response(),
                        Err(e) => e.into_response(),
                    }
                }
                Err(e) => ApiError::from(e).into_response(),
            }
        },
    )
    .await
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let checkout = owned_checkout(&state, &caller, &id).await?;
    shown(&state, &checkout).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    merchant_order_no: String,
}

/// `GET /v1/checkouts?merchant_order_no=…` finds one checkout.
pub async fn find(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<FindQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let checkout = state
        .store
        .checkout_by_order_no(&caller.merchant_id, &q.merchant_order_no)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(not_found)?;
    shown(&state, &checkout).await
}

/// `POST /v1/checkouts/{id}/attempts {channel, method, payer}`: a payment
/// of the checkout on that channel (201), or the open attempt with the
/// same channel, method and payer (200).
pub async fn attempt(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("POST /v1/checkouts/{id}/attempts");
    idempotency::once(&state, &caller.merchant_id, &headers, &path, &body, async {
        let result = async {
            let checkout = owned_checkout(&state, &caller, &id).await?;
            Ok::<_, ApiError>(checkouts::attempt(&state, &checkout, &body).await?)
        };
        match result.await {
            Ok((payment, true)) => {
                (StatusCode::CREATED, Json(view::payment(&payment))).into_response()
            }
            Ok((payment, false)) => Json(view::payment(&payment)).into_response(),
            Err(e) => e.into_response(),
        }
    })
    .await
}

async fn shown(state: &AppState, checkout: &Checkout) -> Result<Json<serde_json::Value>, ApiError> {
    let attempts = state
        .store
        .checkout_attempts(&checkout.id)
        .await
        .map_err(FlowError::from)?;
    Ok(Json(view::checkout(
        checkout,
        &attempts,
        &crate::cashier::url(state, checkout),
        state.clock.now(),
    )))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such checkout")
}

/// The checkout, if it exists and belongs to the caller (others' are
/// indistinguishable from missing ones).
async fn owned_checkout(state: &AppState, caller: &Caller, id: &str) -> Result<Checkout, ApiError> {
    if id.len() > 64 {
        return Err(not_found());
    }
    match state.store.checkout(id).await.map_err(FlowError::from)? {
        Some(k) if k.merchant_id == caller.merchant_id => Ok(k),
        _ => Err(not_found()),
    }
}
