//! `/v1/payments` handlers.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use paymux_core::{ChannelKind, PaymentId, PaymentStatus};
use paymux_store::{Payment, PaymentQuery};
use serde::Deserialize;

use super::auth::Caller;
use super::validate::CreatePayment;
use super::{idempotency, listing, view, ApiError};
use crate::error::FlowError;
use crate::{flow, AppState};

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
        "POST /v1/payments",
        &body,
        async {
            let req = match CreatePayment::parse(&body) {
                Ok(r) => r,
                Err(e) => return e.into_response(),
            };
            if let Err(e) = state.config.check_notify_url(&req.notify_url) {
                return ApiError::invalid(e).into_response();
            }
            match flow::create(&state, &caller.merchant_id, &caller.app_id, req).await {
                Ok((payment, true)) => {
                    (StatusCode::CREATED, Json(view::payment(&payment))).into_response()
                }
                Ok((payment, false)) => {
                    (StatusCode::OK, Json(view::payment(&payment))).into_response()
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
    let payment = owned_payment(&state, &caller, &id).await?;
    Ok(Json(view::payment(&payment)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    merchant_order_no: Option<String>,
    status: Option<String>,
    channel: Option<String>,
    method: Option<String>,
    merchant_order_no_prefix: Option<String>,
    limit: Option<u32>,
    starting_after: Option<String>,
    created_from: Option<String>,
    created_to: Option<String>,
}

/// `GET /v1/payments?merchant_order_no=…` finds one payment; without it,
/// lists the merchant's payments newest first, filtered and paged.
pub async fn find(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<FindQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let Some(order_no) = q.merchant_order_no.clone() else {
        return list(&state, &caller, q).await;
    };
    let payment = state
        .store
        .payment_by_order_no(&caller.merchant_id, &order_no)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(view::payment(&payment)))
}

pub async fn close(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("POST /v1/payments/{id}/close");
    idempotency::once(&state, &caller.merchant_id, &headers, &path, &body, async {
        let result = async {
            let payment = owned_payment(&state, &caller, &id).await?;
            Ok::<_, ApiError>(flow::close(&state, payment, flow::CloseReason::Merchant).await?)
        };
        match result.await {
            Ok(payment) => Json(view::payment(&payment)).into_response(),
            Err(e) => e.into_response(),
        }
    })
    .await
}

async fn list(
    state: &AppState,
    caller: &Caller,
    q: FindQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bounds =
        listing::Bounds::parse(q.limit, q.created_from.as_deref(), q.created_to.as_deref())?;
    let query = PaymentQuery {
        merchant_id: caller.merchant_id.clone(),
        status: listing::one_of(
            "status",
            q.status.as_deref(),
            &PaymentStatus::ALL,
            PaymentStatus::as_str,
        )?,
        channel: listing::one_of(
            "channel",
            q.channel.as_deref(),
            &ChannelKind::ALL,
            ChannelKind::as_str,
        )?,
        method: listing::parsed("method", q.method.as_deref(), "a payment method")?,
        created_from: bounds.created_from,
        created_to: bounds.created_to,
        order_no_prefix: q.merchant_order_no_prefix,
        starting_after: listing::payment_id("starting_after", q.starting_after.as_deref())?,
        limit: bounds.fetch,
    };
    let rows = state
        .store
        .list_payments(&query)
        .await
        .map_err(FlowError::from)?;
    Ok(Json(listing::page(rows, bounds.limit, view::payment)))
}

/// The payment, if it exists and belongs to the caller (others' payments are
/// indistinguishable from missing ones).
async fn owned_payment(state: &AppState, caller: &Caller, id: &str) -> Result<Payment, ApiError> {
    let id = PaymentId::parse(id).map_err(|_| ApiError::not_found())?;
    match state.store.payment(&id).await.map_err(FlowError::from)? {
        Some(p) if p.merchant_id == caller.merchant_id => Ok(p),
        _ => Err(ApiError::not_found()),
    }
}
