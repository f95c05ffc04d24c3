//! Channel callbacks: `POST /notify/{channel}/{account_id}`. The channel
//! client verifies and decrypts; the flow applies the result; the channel
//! gets the answer it expects (anything but success makes it retry).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use std::sync::Arc;

use paymux_channels::{Callback, CallbackReply, Channel};
use paymux_core::PaymentId;
use paymux_store::ChannelAccount;

use crate::{flow, refunds, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/notify/{channel}/{account_id}", post(notify))
        .route("/notify/{channel}/{account_id}/refund", post(notify_refund))
}

/// The account a callback is addressed to and its channel client, or the
/// answer to give when there is none.
async fn addressee(
    state: &AppState,
    channel: &str,
    account_id: &str,
) -> Result<(ChannelAccount, Arc<dyn Channel>), Response> {
    let account = match state
        .directory
        .channel_account(&*state.store, account_id)
        .await
    {
        Ok(Some(a)) if a.channel.as_str() == channel => a,
        Ok(_) => return Err(StatusCode::NOT_FOUND.into_response()),
        Err(e) => {
            tracing::error!(error = %e, "callback: store unavailable");
            return Err(StatusCode::SERVICE_UNAVAILABLE.into_response());
        }
    };
    match state.channels.client(&account) {
        Ok(c) => Ok((account, c)),
        Err(e) => {
            tracing::error!(account_id, error = %e, "callback: channel account unusable");
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

async fn notify(
    State(state): State<AppState>,
    Path((channel, account_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (account, client) = match addressee(&state, &channel, &account_id).await {
        Ok(found) => found,
        Err(response) => return response,
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

/// A refund callback, at the refund's own URL: verified by the channel
/// client, then applied to the refund it names, exactly once.
async fn notify_refund(
    State(state): State<AppState>,
    Path((channel, account_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (account, client) = match addressee(&state, &channel, &account_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let notification = match client
        .parse_refund_callback(
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
            metrics::counter!("paymux_refund_callbacks_total", "result" => "rejected").increment(1);
            tracing::warn!(account_id, error = %e, "refund callback rejected");
            return reply(client.callback_reply(false));
        }
    };
    let out_refund_no = &notification.refund.out_refund_no;
    let refund = match state.store.refund(out_refund_no).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            tracing::error!(account_id, %out_refund_no, "refund callback for an unknown refund");
            return reply(client.callback_reply(false));
        }
        Err(e) => {
            tracing::error!(error = %e, "refund callback: store unavailable");
            return reply(client.callback_reply(false));
        }
    };
    // The refund must be of a payment made through this very account.
    match state.store.payment(&refund.payment_id).await {
        Ok(Some(p)) if p.channel_account_id == account.id => {}
        Ok(_) => {
            tracing::error!(account_id, %out_refund_no, "refund callback from another account");
            return reply(client.callback_reply(false));
        }
        Err(e) => {
            tracing::error!(error = %e, "refund callback: store unavailable");
            return reply(client.callback_reply(false));
        }
    }
    match refunds::apply(&state, refund, &notification.refund).await {
        Ok(r) => {
            metrics::counter!("paymux_refund_callbacks_total", "result" => "ok").increment(1);
            tracing::info!(refund_id = %r.id, status = %r.status, event_id = %notification.event_id, "refund callback applied");
            reply(client.callback_reply(true))
        }
        Err(e) => {
            metrics::counter!("paymux_refund_callbacks_total", "result" => "failed").increment(1);
            tracing::error!(%out_refund_no, error = %e, "refund callback not applied");
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
