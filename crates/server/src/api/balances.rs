//! `GET /v1/balances`: the merchant's books, from the ledger.

use axum::extract::State;
use axum::{Extension, Json};
use paymux_store::ledger;
use serde_json::{json, Value};

use super::auth::Caller;
use super::ApiError;
use crate::error::FlowError;
use crate::AppState;

/// Per channel account and currency: captured, refunded, and what the
/// channel holds for the merchant (`receivable`), all in minor units.
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let rows = state
        .store
        .balances(&caller.merchant_id)
        .await
        .map_err(FlowError::from)?;
    Ok(Json(json!({
        "object": "balances",
        "data": ledger::summarise(&rows),
    })))
}
