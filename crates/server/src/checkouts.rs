//! Checkouts (收银台): one merchant order, paid through whichever channel the
//! payer picks, switching as often as they like, and paid once.
//!
//! Each try is an attempt: an ordinary payment naming its checkout, created,
//! prepared, polled and called back like any other. The store makes the
//! first attempt to succeed the checkout's winner in the transaction of
//! that success; one that succeeds after is recorded, in its own success's
//! transaction, as a duplicate. From there [`settle`] (run by
//! [`crate::workers::checkouts`], woken by every such success) closes the
//! other attempts at their channels and refunds every duplicate in full,
//! with a `payment.duplicate_refunded` event. Both steps are idempotent and
//! driven from what the store recorded, so a crash between them loses
//! nothing: the next round finds the same rows.

use chrono::Duration;
use paymux_core::{new_id, PaymentStatus, RefundStatus};
use paymux_store::{
    Checkout, CheckoutDuplicate, CheckoutInserted, NewEvent, Payment, Refund, MAX_CHECKOUT_ATTEMPTS,
};

use crate::api::checkout_request::{self, CreateCheckout};
use crate::api::view;
use crate::error::FlowError;
use crate::flow::{self, CloseReason, NewPayment};
use crate::{refunds, AppState};

pub const EVENT_DUPLICATE_REFUNDED: &str = "payment.duplicate_refunded";

/// Checkouts and duplicates handled per round of [`settle`].
const BATCH: u32 = 32;

/// Creates the checkout (or finds the one with the same order number).
/// Returns it and whether this call created it.
pub async fn create(
    state: &AppState,
    merchant_id: &str,
    app_id: &str,
    req: CreateCheckout,
) -> Result<(Checkout, bool), FlowError> {
    let fingerprint = req.fingerprint();
    let now = state.clock.now();
    let expires_in = req
        .expires_in_seconds
        .unwrap_or(state.config.default_expiry_secs);
    let checkout = Checkout {
        id: new_id("chk"),
        merchant_id: merchant_id.to_string(),
        app_id: app_id.to_string(),
        merchant_order_no: req.merchant_order_no,
        amount: req.amount,
        description: req.description,
        notify_url: req.notify_url,
        return_url: req.return_url,
        metadata: req.metadata,
        request_hash: fingerprint.clone(),
        cashier_token: crate::signing::new_nonce(),
        winner_payment_id: None,
        won_at: None,
        attempts_closed_at: None,
        expires_at: now + Duration::seconds(expires_in),
        created_at: now,
        updated_at: now,
    };
    match state.store.insert_checkout(&checkout).await? {
        CheckoutInserted::New => {
            metrics::counter!("paymux_checkouts_created_total").increment(1);
            tracing::info!(checkout_id = %checkout.id, merchant_id, "checkout created");
            Ok((checkout, true))
        }
        CheckoutInserted::Existing(existing) if existing.request_hash == fingerprint => {
            Ok((existing, false))
        }
        CheckoutInserted::Existing(_) => Err(FlowError::Conflict(
            "merchant_order_no was already used with a different request".into(),
        )),
    }
}

/// Starts (or resumes) an attempt to pay the checkout. The same channel,
/// method and payer as an attempt still open resumes that attempt, so a
/// payer switching back and forth does not pile up orders at the channels.
/// Returns the attempt and whether this call created it.
pub async fn attempt(
    state: &AppState,
    checkout: &Checkout,
    body: &[u8],
) -> Result<(Payment, bool), FlowError> {
    if checkout.winner_payment_id.is_some() {
        return Err(FlowError::CheckoutPaid(format!(
            "checkout {} is paid",
            checkout.id
        )));
    }
    if checkout.expires_at <= state.clock.now() {
        return Err(FlowError::CheckoutExpired(format!(
            "checkout {} expired unpaid",
            checkout.id
        )));
    }
    // Two attempts made at once may pick the same number; the one that
    // loses the insert looks again. Bounded: each turn, one more is taken.
    for _ in 0..MAX_CHECKOUT_ATTEMPTS {
        let attempts = state.store.checkout_attempts(&checkout.id).await?;
        let number = format!("{}.{}", checkout.id, attempts.len() + 1);
        let req = checkout_request::attempt(body, checkout, &number)
            .map_err(|e| FlowError::Invalid(e.message))?;
        let payer = req.payer_json();
        if let Some(open) = attempts.iter().find(|p| {
            !p.status.is_terminal()
                && p.channel == req.channel
                && p.method == req.method
                && p.payer == payer
        }) {
            return Ok((flow::prepare(state, open.clone()).await?, false));
        }
        if attempts.len() >= MAX_CHECKOUT_ATTEMPTS as usize {
            break;
        }
        let new = NewPayment {
            merchant_id: &checkout.merchant_id,
            app_id: &checkout.app_id,
            expires_at: checkout.expires_at,
            checkout_id: Some(checkout.id.clone()),
            group_id: None,
        };
        match flow::insert_and_prepare(state, new, req).await {
            // Another attempt took the number between the look and the insert.
            Err(FlowError::Conflict(_)) => continue,
            other => return other,
        }
    }
    Err(FlowError::TooManyAttempts(format!(
        "checkout {} has {MAX_CHECKOUT_ATTEMPTS} attempts, as many as one may have",
        checkout.id
    )))
}

/// What a round of [`settle`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub duplicates_refunded: usize,
    pub checkouts_closed: usize,
}

/// One round: refunds the duplicates not resolved yet and closes the other
/// attempts of won checkouts, up to [`BATCH`] of each. What fails (a channel
/// not answering) is left for the next round.
pub async fn settle(state: &AppState) -> Result<Settled, FlowError> {
    let mut done = Settled::default();
    for dup in state.store.open_duplicates(BATCH).await? {
        let id = dup.payment_id.clone();
        match refund_duplicate(state, dup).await {
            Ok(()) => done.duplicates_refunded += 1,
            Err(e) => {
                tracing::warn!(payment_id = %id, error = %e, "duplicate attempt not refunded yet")
            }
        }
    }
    for checkout in state.store.checkouts_to_close(BATCH).await? {
        match close_others(state, &checkout).await {
            Ok(true) => done.checkouts_closed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(checkout_id = %checkout.id, error = %e, "other attempts not closed yet")
            }
        }
    }
    Ok(done)
}

/// The merchant refund number of a duplicate's refund: one per payment.
fn duplicate_refund_no(dup: &CheckoutDuplicate) -> String {
    format!("duplicate-{}", dup.payment_id)
}

/// Refunds what is left of a duplicate attempt, records it with its event,
/// and sends the refund to the channel (an unknown outcome is carried on by
/// the refund checks).
async fn refund_duplicate(state: &AppState, dup: CheckoutDuplicate) -> Result<(), FlowError> {
    let payment = state
        .store
        .payment(&dup.payment_id)
        .await?
        .ok_or(FlowError::NotFound)?;
    // Recorded only by a success, and a success is final.
    if payment.status != PaymentStatus::Succeeded {
        return Err(FlowError::Internal(crate::ServerError::Invariant(format!(
            "duplicate {} is {}, not succeeded",
            payment.id, payment.status
        ))));
    }
    let no = duplicate_refund_no(&dup);
    let reason = "duplicate payment of a checkout";
    let refund = match refunds::reserve_rest(state, &payment, &no, reason).await? {
        Some(r) => r,
        None => {
            // The merchant refunded all of it already: nothing left to return.
            resolve(state, &dup, &payment, None).await?;
            return Ok(());
        }
    };
    resolve(state, &dup, &payment, Some(&refund)).await?;
    if refund.status == RefundStatus::Processing {
        refunds::submit(state, refund, &payment).await?;
    }
    Ok(())
}

/// Marks the duplicate resolved with its `payment.duplicate_refunded`
/// event, once.
async fn resolve(
    state: &AppState,
    dup: &CheckoutDuplicate,
    payment: &Payment,
    refund: Option<&Refund>,
) -> Result<(), FlowError> {
    let now = state.clock.now();
    let id = new_id("evt");
    let mut payload = view::event(&id, EVENT_DUPLICATE_REFUNDED, now, payment, None);
    payload["refund"] = refund.map(view::refund).unwrap_or_default();
    let event = NewEvent {
        payload,
        id,
        merchant_id: payment.merchant_id.clone(),
        payment_id: payment.id.clone(),
        refund_id: refund.map(|r| r.id.clone()),
        event_type: EVENT_DUPLICATE_REFUNDED.to_string(),
        notify_url: payment.notify_url.clone(),
        app_id: payment.app_id.clone(),
        created_at: now,
    };
    if state
        .store
        .resolve_duplicate(&dup.payment_id, refund.map(|r| r.id.as_str()), &event, now)
        .await?
    {
        metrics::counter!("paymux_checkout_duplicates_refunded_total").increment(1);
        tracing::warn!(payment_id = %payment.id, refund_id = ?refund.map(|r| &r.id), "duplicate attempt of a checkout: refunding it");
        state.outbox_wakeup.notify_one();
    }
    Ok(())
}

/// Closes every attempt of a won checkout but the winner. `true` once they
/// are all final (then the checkout is marked so); `false` while some
/// channel has not answered. An attempt found paid on closing becomes a
/// duplicate through its own success, and is refunded.
async fn close_others(state: &AppState, checkout: &Checkout) -> Result<bool, FlowError> {
    let Some(winner) = checkout.winner_payment_id.as_ref() else {
        return Ok(false);
    };
    let mut all_final = true;
    for attempt in state.store.checkout_attempts(&checkout.id).await? {
        if &attempt.id == winner || attempt.status.is_terminal() {
            continue;
        }
        let id = attempt.id.clone();
        match flow::close(state, attempt, CloseReason::CheckoutPaid).await {
            Ok(_) => {}
            // Paid meanwhile: now final, and a duplicate.
            Err(FlowError::InvalidState(_)) => {}
            Err(e) => {
                tracing::warn!(payment_id = %id, error = %e, "cannot close an attempt of a paid checkout yet");
                all_final = false;
            }
        }
    }
    if all_final {
        state
            .store
            .mark_checkout_attempts_closed(&checkout.id, state.clock.now())
            .await?;
    }
    Ok(all_final)
}
