//! `/v1/qr-codes`: aggregated QR codes (一码付). One static code per till
//! or table; a payer scanning it with WeChat, Alipay or UnionPay's app pays
//! through that app (see [`crate::cashier::scan`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use paymux_core::new_id;
use paymux_store::QrCode;
use serde_json::{json, Value};

use super::auth::Caller;
use super::validate::{http_url, object, text, MAX_DESCRIPTION};
use super::{idempotency, view, ApiError};
use crate::error::FlowError;
use crate::AppState;

const FIELDS: [&str; 5] = ["name", "description", "notify_url", "amount", "currency"];

/// A name for the merchant's own use ("till 3"), at most this long.
const MAX_NAME: usize = 64;

fn parse(body: &[u8]) -> Result<(String, String, String, Option<paymux_core::Money>), ApiError> {
    let obj = object(body, &FIELDS)?;
    let amount = match obj.get("amount") {
        None | Some(Value::Null) => None,
        Some(_) => Some(super::validate::money(&obj)?),
    };
    Ok((
        text(&obj, "name", 1, MAX_NAME)?,
        text(&obj, "description", 1, MAX_DESCRIPTION)?,
        http_url(&obj, "notify_url")?,
        amount,
    ))
}

/// The code as the API shows it, with the URL it encodes and the code
/// itself drawn as SVG, ready to print.
fn shown(state: &AppState, qr: &QrCode) -> Result<Value, ApiError> {
    let url = crate::cashier::scan::url(state, qr);
    Ok(json!({
        "id": qr.id,
        "object": "qr_code",
        "name": qr.name,
        "description": qr.description,
        "amount": qr.amount,
        "currency": qr.currency.as_str(),
        "notify_url": qr.notify_url,
        "url": url,
        "qr_svg": crate::cashier::qr_svg(&url)?,
        "created_at": view::time(qr.created_at),
    }))
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
        "POST /v1/qr-codes",
        &body,
        async {
            let result = async {
                let (name, description, notify_url, amount) = parse(&body)?;
                state
                    .config
                    .check_notify_url(&notify_url)
                    .map_err(ApiError::invalid)?;
                let qr = QrCode {
                    id: new_id("qr"),
                    merchant_id: caller.merchant_id.clone(),
                    app_id: caller.app_id.clone(),
                    name,
                    description,
                    amount: amount.map(|m| m.minor),
                    currency: amount
                        .map(|m| m.currency)
                        .unwrap_or(paymux_core::Currency::CNY),
                    notify_url,
                    created_at: state.clock.now(),
                };
                state
                    .store
                    .insert_qr_code(&qr)
                    .await
                    .map_err(FlowError::from)?;
                tracing::info!(qr_code_id = %qr.id, merchant_id = %qr.merchant_id, "QR code created");
                shown(&state, &qr)
            };
            match result.await {
                Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
                Err(e) => e.into_response(),
            }
        },
    )
    .await
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such QR code");
    if id.len() > 64 {
        return Err(missing());
    }
    match state.store.qr_code(&id).await.map_err(FlowError::from)? {
        Some(qr) if qr.merchant_id == caller.merchant_id => Ok(Json(shown(&state, &qr)?)),
        _ => Err(missing()),
    }
}
