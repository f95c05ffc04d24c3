//! Payments and refunds as the merchant API and notifications show them.

use chrono::{DateTime, SecondsFormat, Utc};
use paymux_store::{Checkout, Payment, Refund};
use serde_json::{json, Value};

pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn payment(p: &Payment) -> Value {
    json!({
        "id": p.id.as_str(),
        "object": "payment",
        "status": p.status.as_str(),
        "merchant_order_no": p.merchant_order_no,
        "amount": p.amount.minor,
        "currency": p.amount.currency.as_str(),
        "channel": p.channel.as_str(),
        "method": p.method.as_str(),
        "description": p.description,
        "notify_url": p.notify_url,
        "payer": p.payer,
        "metadata": p.metadata,
        "pay_params": p.pay_params,
        "channel_trade_no": p.channel_trade_no,
        "created_at": time(p.created_at),
        "expires_at": time(p.expires_at),
        "paid_at": p.paid_at.map(time),
        "refunded_amount": p.refunded,
        "checkout_id": p.checkout_id,
    })
}

/// A checkout with its attempts, oldest first. `status`: `paid` once an
/// attempt won it, `expired` past its expiry unpaid, `open` otherwise.
/// `cashier_url` is the hosted page that takes the payer through it.
pub fn checkout(
    k: &Checkout,
    attempts: &[Payment],
    cashier_url: &str,
    now: DateTime<Utc>,
) -> Value {
    let status = match (&k.winner_payment_id, k.expires_at <= now) {
        (Some(_), _) => "paid",
        (None, true) => "expired",
        (None, false) => "open",
    };
    json!({
        "id": k.id,
        "object": "checkout",
        "status": status,
        "merchant_order_no": k.merchant_order_no,
        "amount": k.amount.minor,
        "currency": k.amount.currency.as_str(),
        "description": k.description,
        "notify_url": k.notify_url,
        "return_url": k.return_url,
        "metadata": k.metadata,
        "paid_payment_id": k.winner_payment_id.as_ref().map(|id| id.as_str()),
        "paid_at": k.won_at.map(time),
        "attempts": attempts.iter().map(payment).collect::<Vec<_>>(),
        "cashier_url": cashier_url,
        "created_at": time(k.created_at),
        "expires_at": time(k.expires_at),
    })
}

/// The body POSTed to the merchant's `notify_url` for an event.
/// A payment event; closes and failures say why (`reason`).
pub fn event(
    id: &str,
    event_type: &str,
    created_at: DateTime<Utc>,
    p: &Payment,
    reason: Option<&str>,
) -> Value {
    let mut e = json!({
        "id": id,
        "type": event_type,
        "created_at": time(created_at),
        "data": payment(p),
    });
    if let Some(reason) = reason {
        e["reason"] = reason.into();
    }
    e
}

pub fn refund(r: &Refund) -> Value {
    json!({
        "id": r.id,
        "object": "refund",
        "status": r.status.as_str(),
        "payment_id": r.payment_id.as_str(),
        "merchant_refund_no": r.merchant_refund_no,
        "amount": r.amount.minor,
        "currency": r.amount.currency.as_str(),
        "reason": r.reason,
        "notify_url": r.notify_url,
        "channel_refund_no": r.channel_refund_no,
        "failure_reason": r.failure_reason,
        "created_at": time(r.created_at),
        "refunded_at": r.refunded_at.map(time),
    })
}

/// The body POSTed to the merchant's `notify_url` for a refund event.
pub fn refund_event(id: &str, event_type: &str, created_at: DateTime<Utc>, r: &Refund) -> Value {
    json!({
        "id": id,
        "type": event_type,
        "created_at": time(created_at),
        "data": refund(r),
    })
}
