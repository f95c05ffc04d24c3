//! `/v1/groups`: group buys (拼团). Members join with `POST /v1/payments`
//! carrying `group_id` (see [`crate::groups`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use paymux_store::GroupBuy;
use serde_json::{json, Value};

use super::auth::Caller;
use super::validate::{
    http_url, money, object, sha256_hex, text, MAX_EXPIRY_SECS, MAX_ORDER_NO, MIN_EXPIRY_SECS,
};
use super::{idempotency, ApiError};
use crate::error::FlowError;
use crate::groups::{self, NewGroup};
use crate::AppState;

const FIELDS: [&str; 6] = [
    "merchant_group_no",
    "size",
    "expires_at",
    "amount",
    "currency",
    "notify_url",
];

/// Members a group may need.
const SIZES: std::ops::RangeInclusive<i64> = 2..=1000;

fn parse(body: &[u8], now: DateTime<Utc>) -> Result<NewGroup, ApiError> {
    let obj = object(body, &FIELDS)?;
    let merchant_group_no = text(&obj, "merchant_group_no", 1, MAX_ORDER_NO)?;
    let size = obj
        .get("size")
        .and_then(Value::as_i64)
        .filter(|s| SIZES.contains(s))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "size: must be an integer from {} to {}",
                SIZES.start(),
                SIZES.end()
            ))
        })?;
    let expires_raw = text(&obj, "expires_at", 1, 40)?;
    let expires_at = DateTime::parse_from_rfc3339(&expires_raw)
        .map_err(|_| ApiError::invalid("expires_at: must be an RFC 3339 time"))?
        .with_timezone(&Utc);
    let ahead = (expires_at - now).num_seconds();
    if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&ahead) {
        return Err(ApiError::invalid(format!(
            "expires_at: must be {MIN_EXPIRY_SECS} s to {MAX_EXPIRY_SECS} s from now"
        )));
    }
    let (amount, currency) = match obj.get("amount") {
        None | Some(Value::Null) => {
            let currency = match obj.get("currency") {
                None | Some(Value::Null) => paymux_core::Currency::CNY,
                Some(_) => {
                    return Err(ApiError::invalid(
                        "currency: only with amount (members pay in the payment's currency)",
                    ))
                }
            };
            (None, currency)
        }
        Some(_) => {
            let m = money(&obj)?;
            (Some(m.minor), m.currency)
        }
    };
    let notify_url = http_url(&obj, "notify_url")?;
    let canonical = json!({
        "merchant_group_no": merchant_group_no,
        "size": size,
        "expires_at": expires_at.timestamp_micros(),
        "amount": amount,
        "currency": currency.as_str(),
        "notify_url": notify_url,
    });
    Ok(NewGroup {
        merchant_group_no,
        size: size as i32,
        amount,
        currency,
        notify_url,
        expires_at,
        request_hash: sha256_hex(canonical.to_string().as_bytes()),
    })
}

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
        "POST /v1/groups",
        &body,
        async {
            let result = async {
                let req = parse(&body, state.clock.now())?;
                state
                    .config
                    .check_notify_url(&req.notify_url)
                    .map_err(ApiError::invalid)?;
                let (g, created) =
                    groups::create(&state, &caller.merchant_id, &caller.app_id, req).await?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok::<_, ApiError>((status, shown(&state, &g).await?))
            };
            match result.await {
                Ok(r) => r.into_response(),
                Err(e) => e.into_response(),
            }
        },
    )
    .await
}

async fn shown(state: &AppState, g: &GroupBuy) -> Result<Json<Value>, ApiError> {
    let members = state
        .store
        .group_members(&g.id)
        .await
        .map_err(FlowError::from)?;
    Ok(Json(groups::view(g, Some(&members))))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such group")
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id.len() > 64 {
        return Err(not_found());
    }
    match state.store.group(&id).await.map_err(FlowError::from)? {
        Some(g) if g.merchant_id == caller.merchant_id => shown(&state, &g).await,
        _ => Err(not_found()),
    }
}
