//! `/admin/reconciliations`: start runs, read one, export its CSV report.
//! Mounted by the admin router, behind the operator token.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use paymux_core::ChannelKind;
use paymux_store::ReconciliationRun;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::ApiError;
use crate::error::FlowError;
use crate::AppState;

/// A run as the API and `paymux reconcile --json` show it.
pub fn view(run: &ReconciliationRun) -> Value {
    let mut v = json!({
        "run_id": run.id,
        "channel": run.channel.as_str(),
        "channel_account_id": run.channel_account_id,
        "merchant_id": run.merchant_id,
        "date": run.bill_date.to_string(),
        "trigger": run.trigger,
        "status": run.status.as_str(),
        "matched": run.matched,
        "discrepancy_count": run.discrepancy_count,
        "discrepancies": run.discrepancies,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    });
    if let Some(e) = &run.error {
        v["error"] = json!(e);
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    channel: String,
    /// One account; without it every enabled account of the channel.
    account_id: Option<String>,
    /// `YYYY-MM-DD`, a China-time day.
    date: String,
}

/// `POST /admin/reconciliations`: runs now and answers every run made.
pub async fn start(
    State(state): State<AppState>,
    body: Result<Json<Start>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::invalid(format!("body: {e}")))?;
    let channel: ChannelKind = req
        .channel
        .parse()
        .map_err(|_| ApiError::invalid(format!("channel {:?} is not a channel", req.channel)))?;
    let date = NaiveDate::parse_from_str(&req.date, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("date must be YYYY-MM-DD"))?;
    let accounts = match &req.account_id {
        Some(id) => {
            let account = state
                .store
                .channel_account(id)
                .await
                .map_err(FlowError::from)?
                .filter(|a| a.channel == channel)
                .ok_or_else(|| ApiError::invalid(format!("no {channel} channel account {id}")))?;
            vec![account]
        }
        None => state
            .store
            .list_channel_accounts(None)
            .await
            .map_err(FlowError::from)?
            .into_iter()
            .filter(|a| a.channel == channel && a.enabled)
            .collect(),
    };
    if accounts.is_empty() {
        return Err(ApiError::invalid(format!(
            "no enabled {channel} channel account"
        )));
    }
    // In a task of its own: a caller who gives up waiting (or a request
    // timeout) must not cut a run short and leave it `running`.
    let work = tokio::spawn(async move {
        let mut runs = Vec::new();
        for account in &accounts {
            runs.push(view(&super::run(&state, account, date).await?));
        }
        Ok::<_, FlowError>(runs)
    });
    let runs = work.await.map_err(|e| {
        FlowError::Internal(crate::ServerError::Config(format!("reconciliation: {e}")))
    })??;
    Ok(Json(json!({"object": "list", "data": runs})))
}

async fn find(state: &AppState, id: &str) -> Result<ReconciliationRun, ApiError> {
    state
        .store
        .reconciliation(id)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(ApiError::not_found)
}

/// `GET /admin/reconciliations/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&find(&state, &id).await?)))
}

/// `GET /admin/reconciliations/{id}/report.csv`.
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = find(&state, &id).await?;
    let name = format!("attachment; filename=\"{}.csv\"", run.id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        super::report::csv(&run),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    channel_account_id: String,
    date: String,
}

/// `GET /admin/reconciliations?channel_account_id=&date=`: that account's
/// runs of the day, newest first.
pub async fn list(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let date = NaiveDate::parse_from_str(&q.date, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("date must be YYYY-MM-DD"))?;
    let runs = state
        .store
        .reconciliations(&q.channel_account_id, date)
        .await
        .map_err(FlowError::from)?;
    Ok(Json(
        json!({"object": "list", "data": runs.iter().map(view).collect::<Vec<_>>()}),
    ))
}
