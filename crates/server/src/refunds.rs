//! The refund flow: reserve, ask the channel, apply what the channel reports.
//!
//! A refund is first reserved in the store against its payment (atomically:
//! concurrent refunds never add up to more than was paid), then sent to the
//! channel under its own id as the channel's out_refund_no, so a repeated
//! call never refunds twice. No database transaction is open across the
//! channel call. A call whose outcome is unknown (timeout, 5xx, breaker)
//! leaves the refund `processing`: the refund checks in
//! [`crate::workers::refund_checks`] query it until it is final.

use paymux_channels::{ChannelError, ChannelRefund, RefundRequest, RefundState};
use paymux_core::{new_id, Money, PaymentId, RefundEvent, RefundStatus};
use paymux_store::{NewEvent, Payment, Refund, RefundInserted, RefundPatch, RefundTransition};

use crate::api::refund_request::CreateRefund;
use crate::api::view;
use crate::error::FlowError;
use crate::guarded::Operation;
use crate::{flow, AppState};

pub const EVENT_REFUND_SUCCEEDED: &str = "refund.succeeded";
pub const EVENT_REFUND_FAILED: &str = "refund.failed";

/// Creates the refund (or finds the one with the same refund number) and
/// sends it to the channel. Returns the refund and whether this call created it.
pub async fn create(
    state: &AppState,
    merchant_id: &str,
    req: CreateRefund,
) -> Result<(Refund, bool), FlowError> {
    let fingerprint = req.fingerprint();
    if let Some(existing) = state
        .store
        .refund_by_no(merchant_id, &req.merchant_refund_no)
        .await?
    {
        return Ok((repeat(existing, &fingerprint)?, false));
    }
    let payment = owned_payment(state, merchant_id, &req.payment_id).await?;
    // While the account's refund breaker is open, refuse before reserving
    // anything: a repeat of the same request later is simply a new refund.
    if let Err(refused) = state
        .channels
        .breakers
        .check(&payment.channel_account_id, Operation::Refund)
    {
        return Err(FlowError::ChannelSuspended(
            refused.retry_after(state.clock.now()),
        ));
    }
    let amount = Money::new(req.amount, payment.amount.currency)
        .map_err(|e| FlowError::Invalid(format!("amount: {e}")))?;
    let now = state.clock.now();
    let refund = Refund {
        id: new_id("ref"),
        merchant_id: merchant_id.to_string(),
        payment_id: payment.id.clone(),
        merchant_refund_no: req.merchant_refund_no.clone(),
        amount,
        status: RefundStatus::Processing,
        reason: req.reason.clone(),
        notify_url: req
            .notify_url
            .clone()
            .unwrap_or_else(|| payment.notify_url.clone()),
        request_hash: fingerprint.clone(),
        channel_refund_no: None,
        failure_reason: None,
        refunded_at: None,
        created_at: now,
        updated_at: now,
    };
    match state.store.insert_refund(&refund).await? {
        RefundInserted::New => {
            metrics::counter!("paymux_refunds_created_total", "channel" => payment.channel.as_str())
                .increment(1);
            tracing::info!(refund_id = %refund.id, payment_id = %payment.id, amount = refund.amount.minor, "refund reserved");
            Ok((submit(state, refund, &payment).await?, true))
        }
        RefundInserted::Existing(existing) => Ok((repeat(existing, &fingerprint)?, false)),
        RefundInserted::NotRefundable(status) => Err(FlowError::NotRefundable(format!(
            "payment {} is {status}; only a succeeded payment can be refunded",
            payment.id
        ))),
        RefundInserted::Exceeds { available } => Err(FlowError::RefundExceeds(format!(
            "amount: {} exceeds what is left to refund of payment {} ({available})",
            refund.amount.minor, payment.id
        ))),
    }
}

/// Reserves a refund of all that is left of `payment` under the merchant
/// refund number `no` (paymux's own refunds: a checkout's duplicate, a
/// failed group's members), or finds the one reserved under it before.
/// `None` when nothing is left to refund. The caller sends it
/// ([`submit`]); the refund checks carry one whose sending was lost.
pub async fn reserve_rest(
    state: &AppState,
    payment: &Payment,
    no: &str,
    reason: &str,
) -> Result<Option<Refund>, FlowError> {
    if let Some(existing) = state.store.refund_by_no(&payment.merchant_id, no).await? {
        return Ok(Some(existing));
    }
    let held: i64 = state
        .store
        .refunds_for_payment(&payment.id)
        .await?
        .iter()
        .filter(|r| r.status != RefundStatus::Failed)
        .map(|r| r.amount.minor)
        .sum();
    let left = payment.amount.minor - held;
    if left <= 0 {
        return Ok(None);
    }
    let now = state.clock.now();
    let refund = Refund {
        id: new_id("ref"),
        merchant_id: payment.merchant_id.clone(),
        payment_id: payment.id.clone(),
        merchant_refund_no: no.to_string(),
        amount: Money::new(left, payment.amount.currency)
            .map_err(|e| FlowError::Invalid(e.to_string()))?,
        status: RefundStatus::Processing,
        reason: Some(reason.to_string()),
        notify_url: payment.notify_url.clone(),
        request_hash: no.to_string(),
        channel_refund_no: None,
        failure_reason: None,
        refunded_at: None,
        created_at: now,
        updated_at: now,
    };
    match state.store.insert_refund(&refund).await? {
        RefundInserted::New => {
            metrics::counter!("paymux_refunds_created_total", "channel" => payment.channel.as_str())
                .increment(1);
            tracing::info!(payment_id = %payment.id, refund_id = %refund.id, amount = left, reason, "refunding what is left of a payment");
            Ok(Some(refund))
        }
        RefundInserted::Existing(existing) => Ok(Some(existing)),
        // A merchant refund raced this one and took the rest.
        RefundInserted::Exceeds { .. } => Ok(None),
        RefundInserted::NotRefundable(status) => Err(FlowError::NotRefundable(format!(
            "payment {} is {status}",
            payment.id
        ))),
    }
}

/// A repeated create answers the refund as it is now; the refund checks
/// carry an unfinished one forward, so nothing is sent twice from here.
fn repeat(existing: Refund, fingerprint: &str) -> Result<Refund, FlowError> {
    if existing.request_hash != fingerprint {
        return Err(FlowError::Conflict(
            "merchant_refund_no was already used with a different request".into(),
        ));
    }
    Ok(existing)
}

/// The merchant's own payment (others' look missing).
async fn owned_payment(
    state: &AppState,
    merchant_id: &str,
    id: &str,
) -> Result<Payment, FlowError> {
    let id = PaymentId::parse(id).map_err(|_| FlowError::NotFound)?;
    match state.store.payment(&id).await? {
        Some(p) if p.merchant_id == merchant_id => Ok(p),
        _ => Err(FlowError::NotFound),
    }
}

/// What the channel is asked for a refund. The same refund always gives the
/// same request, so a repeated call is the same refund at the channel.
pub fn refund_request(state: &AppState, refund: &Refund, payment: &Payment) -> RefundRequest {
    RefundRequest {
        out_trade_no: payment.id.to_string(),
        method: payment.method,
        out_refund_no: refund.id.clone(),
        amount: refund.amount,
        total: payment.amount,
        reason: refund.reason.clone(),
        notify_url: format!(
            "{}/notify/{}/{}/refund",
            state.public_url, payment.channel, payment.channel_account_id
        ),
        channel_trade_no: payment.channel_trade_no.clone(),
        created_at: refund.created_at,
    }
}

/// Sends a reserved refund to the channel and applies the answer. A
/// definite refusal fails the refund (its amount is free again); an unknown
/// outcome leaves it processing for the refund checks.
pub async fn submit(
    state: &AppState,
    refund: Refund,
    payment: &Payment,
) -> Result<Refund, FlowError> {
    let (_, channel) = flow::channel_for(state, &payment.channel_account_id).await?;
    let request = refund_request(state, &refund, payment);
    let refusal = match channel.refund(&request).await {
        Ok(reported) => return apply(state, refund, &reported).await,
        Err(ChannelError::Rejected { code, message }) => format!("{code}: {message}"),
        // The paid trade unknown to the channel is as final as a refusal.
        Err(ChannelError::NotFound) => {
            "TRADE_NOT_FOUND: the channel does not know the trade".into()
        }
        Err(e) => {
            tracing::warn!(refund_id = %refund.id, error = %e, "refund outcome unknown; it will be checked");
            return Ok(refund);
        }
    };
    tracing::warn!(refund_id = %refund.id, %refusal, "channel refused the refund");
    let reported = ChannelRefund {
        out_refund_no: refund.id.clone(),
        state: RefundState::Failed,
        refund_id: None,
        amount: None,
        refunded_at: None,
        failure: Some(refusal),
    };
    apply(state, refund, &reported).await
}

/// Applies a channel's report about a refund (from the call, a callback or a
/// query). Duplicates change nothing; a report that contradicts the refund
/// (another amount, a final status reversed) changes nothing and is an error.
pub async fn apply(
    state: &AppState,
    refund: Refund,
    reported: &ChannelRefund,
) -> Result<Refund, FlowError> {
    // A refund has one edge out of `processing`: losing more races than
    // this means something other than a race.
    const MAX_LOST_RACES: usize = 4;
    let mut refund = refund;
    for _ in 0..MAX_LOST_RACES {
        match apply_once(state, refund, reported).await? {
            Ok(settled) => return Ok(settled),
            // Another report won the race; apply this one to where it got.
            Err(current) => refund = current,
        }
    }
    Err(FlowError::Internal(crate::ServerError::Invariant(format!(
        "refund {} lost {MAX_LOST_RACES} races in a row",
        reported.out_refund_no
    ))))
}

/// One try of [`apply`]: `Ok(refund)` when done, `Err(current)` when another
/// writer moved the refund first.
async fn apply_once(
    state: &AppState,
    refund: Refund,
    reported: &ChannelRefund,
) -> Result<Result<Refund, Refund>, FlowError> {
    if reported.out_refund_no != refund.id {
        return Err(FlowError::Invalid(format!(
            "the channel reported refund {}, not {}",
            reported.out_refund_no, refund.id
        )));
    }
    let event = match reported.state {
        RefundState::Processing => return Ok(Ok(refund)),
        RefundState::Succeeded => RefundEvent::Refunded,
        RefundState::Failed => RefundEvent::RefundFailed,
    };
    if let Some(amount) = reported.amount {
        if event == RefundEvent::Refunded && amount != refund.amount {
            tracing::error!(refund_id = %refund.id, reported = amount.minor, expected = refund.amount.minor, "refunded amount does not match");
            return Err(FlowError::Invalid(format!(
                "the channel refunded {}, the refund is for {}",
                amount.minor, refund.amount.minor
            )));
        }
    }
    let to = match refund.status.on(event) {
        Ok(None) => return Ok(Ok(refund)),
        Ok(Some(to)) => to,
        Err(e) => {
            tracing::error!(refund_id = %refund.id, error = %e, "channel report contradicts the refund");
            return Err(FlowError::InvalidState(e.to_string()));
        }
    };
    let now = state.clock.now();
    let patch = RefundPatch {
        channel_refund_no: reported.refund_id.clone(),
        failure_reason: reported.failure.clone(),
        refunded_at: (to == RefundStatus::Succeeded).then(|| reported.refunded_at.unwrap_or(now)),
    };
    let event_type = match to {
        RefundStatus::Succeeded => EVENT_REFUND_SUCCEEDED,
        _ => EVENT_REFUND_FAILED,
    };
    let after = Refund {
        status: to,
        channel_refund_no: patch
            .channel_refund_no
            .clone()
            .or_else(|| refund.channel_refund_no.clone()),
        failure_reason: patch
            .failure_reason
            .clone()
            .or_else(|| refund.failure_reason.clone()),
        refunded_at: patch.refunded_at.or(refund.refunded_at),
        updated_at: now,
        ..refund.clone()
    };
    let id = new_id("evt");
    let event = NewEvent {
        payload: view::refund_event(&id, event_type, now, &after),
        id,
        merchant_id: refund.merchant_id.clone(),
        payment_id: refund.payment_id.clone(),
        refund_id: Some(refund.id.clone()),
        event_type: event_type.to_string(),
        notify_url: refund.notify_url.clone(),
        created_at: now,
        app_id: None,
    };
    match state
        .store
        .transition_refund(&refund.id, refund.status, to, &patch, Some(&event), now)
        .await?
    {
        RefundTransition::Applied(r) => {
            metrics::counter!("paymux_refunds_final_total", "status" => r.status.as_str())
                .increment(1);
            tracing::info!(refund_id = %r.id, status = %r.status, "refund settled");
            state.outbox_wakeup.notify_one();
            Ok(Ok(r))
        }
        RefundTransition::Unchanged(current) => Ok(Err(current)),
    }
}
