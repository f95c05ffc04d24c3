//! `GET /v1/event-types` and `PUT /v1/event-types {types: [...]}`: which
//! event types the calling app receives (see [`crate::event_types`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::auth::Caller;
use super::validate::object;
use super::ApiError;
use crate::error::FlowError;
use crate::{event_types, AppState};

fn shown(app: &paymux_store::App) -> Json<Value> {
    Json(json!({
        "object": "event_types",
        "app_id": app.app_id,
        "types": event_types::of(app),
        "available": event_types::ALL,
    }))
}

async fn caller_app(state: &AppState, caller: &Caller) -> Result<paymux_store::App, ApiError> {
    state
        .directory
        .app(&*state.store, &caller.app_id)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(ApiError::not_found)
}

pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    Ok(shown(&caller_app(&state, &caller).await?))
}

/// Replaces the app's choice; `{"types": null}` goes back to the default.
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let obj = object(&body, &["types"])?;
    let types = match obj.get("types") {
        Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut types: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                let t = item
                    .as_str()
                    .filter(|t| event_types::ALL.contains(t))
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "types: {item} is not one of: {}",
                            event_types::ALL.join(", ")
                        ))
                    })?;
                if !types.iter().any(|k| k == t) {
                    types.push(t.to_string());
                }
            }
            Some(types)
        }
        _ => {
            return Err(ApiError::invalid(
                "types: required, a list of event types or null",
            ))
        }
    };
    state
        .store
        .update_app_event_types(&caller.app_id, types.as_deref())
        .await
        .map_err(FlowError::from)?;
    tracing::info!(app_id = %caller.app_id, types = ?types, "event types chosen");
    Ok(shown(&caller_app(&state, &caller).await?))
}
