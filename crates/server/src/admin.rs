//! The operator's HTTP API under `/admin/...`: channel accounts, the same
//! operations as `paymux channel`, and undelivered merchant notifications,
//! the same as `paymux notify`, and reconciliation runs (`paymux reconcile`). Authenticated with the operator token
//! (`Authorization: Bearer …`), never with merchant app credentials. Without
//! a configured token none of these routes exist (404), so a forgotten
//! setting cannot open them. Nothing secret is ever returned: accounts are
//! shown masked and errors name fields, not values.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use paymux_channels::wechat::{WechatConfig, PRODUCTION_BASE_URL};
use paymux_store::StoreError;
use serde::Deserialize;

use crate::api::ApiError;
use crate::{accounts, reconcile, undelivered};
use crate::{AppState, ServerError};

/// The admin routes, or none when no operator token is configured.
pub fn router(state: AppState) -> Router<AppState> {
    if state.config.admin_token.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/admin/channel-accounts", get(list))
        .route("/admin/channel-accounts/wechat", post(add_wechat))
        .route("/admin/channel-accounts/{id}", get(show))
        .route("/admin/channel-accounts/{id}/disable", post(disable))
        .route("/admin/channel-accounts/{id}/enable", post(enable))
        .route("/admin/channel-accounts/{id}/test", post(test))
        .route("/admin/events", get(list_events))
        .route("/admin/events/{id}/retry", post(retry_event))
        .route(
            "/admin/reconciliations",
            post(reconcile::http::start).get(reconcile::http::list),
        )
        .route("/admin/reconciliations/{id}", get(reconcile::http::show))
        .route(
            "/admin/reconciliations/{id}/report.csv",
            get(reconcile::http::report),
        )
        .layer(middleware::from_fn_with_state(state, authenticate))
}

async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &state.config.admin_token else {
        return ApiError::not_found().into_response();
    };
    // Wrong operator tokens count against the caller's address like failed
    // merchant signatures do: logged, counted, and backed off.
    let ip = crate::http_limits::remote_addr(&req).map(|a| a.ip());
    let now = std::time::Instant::now();
    if let Some(wait) = state.auth_failures.blocked(ip, now) {
        return ApiError::too_many_auth_failures(wait).into_response();
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !expected.matches(given) {
        state.auth_failures.record(ip, None, "ADMIN_TOKEN", now);
        return ApiError::unauthorized("UNAUTHORIZED", "missing or wrong operator token")
            .into_response();
    }
    next.run(req).await
}

fn error(e: ServerError) -> ApiError {
    match e {
        ServerError::NotFound(what) => {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no {what}"))
        }
        ServerError::Store(StoreError::NotFound(what)) => {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no {what}"))
        }
        ServerError::Store(StoreError::Duplicate(_)) => {
            ApiError::new(StatusCode::CONFLICT, "CONFLICT", "already exists")
        }
        // Configuration errors name the field that is wrong, never its value.
        ServerError::Channel(paymux_channels::ChannelError::Config(m)) | ServerError::Config(m) => {
            ApiError::invalid(m)
        }
        other => {
            tracing::error!(error = %other, "admin request failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            )
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    merchant_id: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<accounts::AccountView>>, ApiError> {
    let all = state
        .store
        .list_channel_accounts(q.merchant_id.as_deref())
        .await
        .map_err(|e| error(e.into()))?;
    Ok(Json(all.iter().map(accounts::view).collect()))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<accounts::AccountView>, ApiError> {
    let account = state
        .store
        .channel_account(&id)
        .await
        .map_err(|e| error(e.into()))?
        .ok_or_else(|| error(ServerError::NotFound(format!("channel account {id}"))))?;
    Ok(Json(accounts::view(&account)))
}

/// `POST /admin/channel-accounts/wechat`: the fields of `paymux channel add
/// wechat`, with the key files' contents inline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddWechat {
    merchant_id: String,
    appid: String,
    mchid: String,
    serial_no: String,
    private_key_pem: String,
    apiv3_key: String,
    platform_public_key_id: Option<String>,
    platform_public_key_pem: Option<String>,
    oauth_app_secret: Option<String>,
    base_url: Option<String>,
}

async fn add_wechat(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<accounts::AccountView>), ApiError> {
    // Parsed by hand: serde's messages for a bad body could quote a value.
    let req: AddWechat = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!(
            "body must be a JSON object with the WeChat account fields (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let config = WechatConfig {
        base_url: req.base_url.unwrap_or_else(|| PRODUCTION_BASE_URL.into()),
        appid: req.appid,
        mchid: req.mchid,
        serial_no: req.serial_no.trim().to_uppercase(),
        private_key_pem: req.private_key_pem,
        apiv3_key: req.apiv3_key,
        platform_public_key_id: req.platform_public_key_id,
        platform_public_key_pem: req.platform_public_key_pem,
        oauth_app_secret: req.oauth_app_secret,
    };
    let account = accounts::add_wechat(&*state.store, &*state.clock, &req.merchant_id, config)
        .await
        .map_err(error)?;
    Ok((StatusCode::CREATED, Json(accounts::view(&account))))
}

async fn set_enabled(state: &AppState, id: &str, enabled: bool) -> Result<Response, ApiError> {
    accounts::set_enabled(&*state.store, id, enabled)
        .await
        .map_err(error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(&state, &id, false).await
}

async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(&state, &id, true).await
}

async fn test(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<accounts::TestOutcome>, ApiError> {
    let account = state
        .store
        .channel_account(&id)
        .await
        .map_err(|e| error(e.into()))?
        .ok_or_else(|| error(ServerError::NotFound(format!("channel account {id}"))))?;
    Ok(Json(accounts::test(&account, state.clock.clone()).await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    merchant_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/events?merchant_id=&status=dead|undelivered&limit=`, oldest first.
async fn list_events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let filter = undelivered::Filter::parse(q.status.as_deref())?;
    let limit = undelivered::limit(q.limit)?;
    let events = undelivered::list(
        state.store.as_ref(),
        q.merchant_id.as_deref(),
        filter,
        limit,
    )
    .await?;
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": events.iter().map(undelivered::view).collect::<Vec<_>>(),
    })))
}

/// `POST /admin/events/{id}/retry`: any merchant's event.
async fn retry_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = state.clock.now();
    let event = undelivered::retry(state.store.as_ref(), None, &id, now).await?;
    Ok(Json(undelivered::view(&event)))
}
