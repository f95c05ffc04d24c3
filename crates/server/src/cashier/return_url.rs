//! The merchant's `return_url`, with what the payer's return says, signed
//! with the checkout's app secret like a notification, so the merchant's
//! page can trust it without asking paymux:
//!
//! `return_url?paymux_checkout_id=…&paymux_merchant_order_no=…&paymux_payment_id=…&paymux_status=paid&paymux_timestamp=…&paymux_nonce=…&paymux_signature=…`
//!
//! `paymux_signature` = base64(HMAC-SHA256(app_secret,
//! "TIMESTAMP\nNONCE\nQUERY\n")) where QUERY is the first four parameters
//! exactly as they appear in the URL (`paymux_checkout_id=…&…&paymux_status=paid`).

use paymux_store::Checkout;

use crate::api::ApiError;
use crate::error::FlowError;
use crate::{signing, AppState, ServerError};

/// The signed return URL of a paid checkout that has a `return_url`.
pub async fn signed(state: &AppState, checkout: &Checkout) -> Result<String, ApiError> {
    let (Some(base), Some(winner)) = (&checkout.return_url, &checkout.winner_payment_id) else {
        return Err(FlowError::InvalidState("the checkout is not paid".into()).into());
    };
    let app = state
        .directory
        .app(&*state.store, &checkout.app_id)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(|| {
            FlowError::Internal(ServerError::Invariant(format!(
                "app {} of checkout {} is gone",
                checkout.app_id, checkout.id
            )))
        })?;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("paymux_checkout_id", &checkout.id)
        .append_pair("paymux_merchant_order_no", &checkout.merchant_order_no)
        .append_pair("paymux_payment_id", winner.as_str())
        .append_pair("paymux_status", "paid")
        .finish();
    let timestamp = state.clock.now().timestamp().to_string();
    let nonce = signing::new_nonce();
    let signature = signing::sign_response(&app.secret, &timestamp, &nonce, query.as_bytes());
    let signed = url::form_urlencoded::Serializer::new(query)
        .append_pair("paymux_timestamp", &timestamp)
        .append_pair("paymux_nonce", &nonce)
        .append_pair("paymux_signature", &signature)
        .finish();
    // The query goes before a fragment, after a query the URL has.
    let (base, fragment) = match base.split_once('#') {
        Some((b, f)) => (b, format!("#{f}")),
        None => (base.as_str(), String::new()),
    };
    let joiner = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{joiner}{signed}{fragment}"))
}
