//! Channel callbacks: `POST /notify/{channel}/{account_id}`. The channel
//! client verifies and decrypts; the flow applies the result; the channel
//! gets the answer it expects (anything but success makes it retry).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use paymux_channels::{Callback, CallbackReply};
use paymux_core::PaymentId;

use crate::{flow, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/notify/{channel}/{account_id}", post(notify))
}

async fn notify(
    State(state): State<AppState>,
    Path((channel, account_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let account = match state.store.channel_account(&account_id).await {
        Ok(Some(a)) if a.channel.as_str() == channel => a,
        Ok(_) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "callback: store unavailable");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let client = match state.channels.client(&account) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(account_id, error = %e, "callback: channel account unusable");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let notification = match client
        .parse_callback(
            Callback {
                headers: &headers,
                body: &body,
            },
            state.clock.now(),
        )
        .await
    {
        Ok(n) => n,
        Err(e) => {
            metrics::counter!("paymux_callbacks_total", "result" => "rejected").increment(1);
            tracing::warn!(account_id, error = %e, "callback rejected");
            return reply(client.callback_reply(false));
        }
    };
    let trade = &notification.trade;
    let payment = match PaymentId::parse(&trade.out_trade_no) {
        Ok(id) => state.store.payment(&id).await,
        Err(_) => Ok(None),
    };
    let payment = match payment {
        Ok(Some(p)) if p.channel_account_id == account.id => p,
        Ok(_) => {
            metrics::counter!("paymux_callbacks_total", "result" => "unknown_order").increment(1);
            tracing::error!(account_id, out_trade_no = %trade.out_trade_no, "callback for an unknown order");
            return reply(client.callback_reply(false));
        }
        Err(e) => {
            tracing::error!(error = %e, "callback: store unavailable");
            return reply(client.callback_reply(false));
        }
    };
    match flow::apply_trade(&state, payment, trade).await {
        Ok(p) => {
            metrics::counter!("paymux_callbacks_total", "result" => "ok").increment(1);
            tracing::info!(payment_id = %p.id, status = %p.status, event_id = %notification.event_id, "callback applied");
            reply(client.callback_reply(true))
        }
        Err(e) => {
            metrics::counter!("paymux_callbacks_total", "result" => "failed").increment(1);
            tracing::error!(out_trade_no = %trade.out_trade_no, error = %e, "callback not applied");
            reply(client.callback_reply(false))
        }
    }
}

fn reply(r: CallbackReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut response = (status, r.body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    response
}
