//! `/v1/events`: the merchant's notifications that were not acknowledged,
//! and sending one again once the merchant's endpoint works.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::ApiError;
use crate::{undelivered, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/events?status=dead|undelivered&limit=N`, oldest first.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let filter = undelivered::Filter::parse(q.status.as_deref())?;
    let limit = undelivered::limit(q.limit)?;
    let events = undelivered::list(
        state.store.as_ref(),
        Some(&caller.merchant_id),
        filter,
        limit,
    )
    .await?;
    Ok(Json(json!({
        "object": "list",
        "data": events.iter().map(undelivered::view).collect::<Vec<_>>(),
    })))
}

/// `POST /v1/events/{id}/retry`: deliver the event again, from the start of
/// the retry schedule. Repeating it only reschedules; an acknowledged event
/// is refused with `INVALID_STATE`.
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let event =
        undelivered::retry(state.store.as_ref(), Some(&caller.merchant_id), &id, now).await?;
    Ok(Json(undelivered::view(&event)))
}
