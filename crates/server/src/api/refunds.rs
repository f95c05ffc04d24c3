//! `/v1/refunds` handlers.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use paymux_store::Refund;
use serde::Deserialize;

use paymux_core::RefundStatus;

use super::auth::Caller;
use super::refund_request::CreateRefund;
use super::{idempotency, listing, view, ApiError};
use crate::error::FlowError;
use crate::{refunds, AppState};

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
        "POST /v1/refunds",
        &body,
        async {
            let req = match CreateRefund::parse(&body) {
                Ok(r) => r,
                Err(e) => return e.into_response(),
            };
            if let Some(url) = &req.notify_url {
                if let Err(e) = state.config.check_notify_url(url) {
                    return ApiError::invalid(e).into_response();
                }
            }
            match refunds::create(&state, &caller.merchant_id, req).await {
                Ok((refund, true)) => {
                    (StatusCode::CREATED, Json(view::refund(&refund))).into_response()
                }
                Ok((refund, false)) => {
                    (StatusCode::OK, Json(view::refund(&refund))).into_response()
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
    let refund = state
        .store
        .refund(&id)
        .await
        .map_err(FlowError::from)?
        .filter(|r| r.merchant_id == caller.merchant_id)
        .ok_or_else(not_found)?;
    Ok(Json(view::refund(&refund)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    merchant_refund_no: Option<String>,
    status: Option<String>,
    payment_id: Option<String>,
    limit: Option<u32>,
    starting_after: Option<String>,
    created_from: Option<String>,
    created_to: Option<String>,
}

/// `GET /v1/refunds?merchant_refund_no=…` finds one refund; without it,
/// lists the merchant's refunds newest first, filtered and paged.
pub async fn find(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<FindQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let Some(no) = q.merchant_refund_no.clone() else {
        let bounds =
            listing::Bounds::parse(q.limit, q.created_from.as_deref(), q.created_to.as_deref())?;
        let query = paymux_store::RefundQuery {
            merchant_id: caller.merchant_id.clone(),
            status: listing::one_of(
                "status",
                q.status.as_deref(),
                &RefundStatus::ALL,
                RefundStatus::as_str,
            )?,
            payment_id: listing::payment_id("payment_id", q.payment_id.as_deref())?,
            created_from: bounds.created_from,
            created_to: bounds.created_to,
            starting_after: q.starting_after.clone(),
            limit: bounds.fetch,
        };
        let rows = state
            .store
            .list_refunds(&query)
            .await
            .map_err(FlowError::from)?;
        return Ok(Json(listing::page(rows, bounds.limit, view::refund)));
    };
    let refund: Refund = state
        .store
        .refund_by_no(&caller.merchant_id, &no)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(not_found)?;
    Ok(Json(view::refund(&refund)))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such refund")
}
