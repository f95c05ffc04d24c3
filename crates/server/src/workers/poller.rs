//! Status checks of open payments at their channel (补单): every payment ends
//! in its true final state even when callbacks are lost, a prepay's answer
//! never came back, or the payer walked away.
//!
//! - A `pending` payment with no final callback is queried, first
//!   `first_delay_secs` after creation, then on the `schedule_secs` backoff;
//!   what the channel reports goes through [`flow::apply_trade`] exactly like
//!   a callback, so the merchant hears about it once.
//! - A `created` payment is one whose prepay outcome is unknown (timeout,
//!   5xx, a crash). If the channel knows it, it is resumed; if the channel
//!   still does not know it once the prepay window has passed, the order
//!   never arrived and the payment is closed.
//! - An expired payment is queried, then closed at the channel, then here. A
//!   channel that says it was paid wins. A channel that cannot be reached
//!   means "try again later", never "closed".
//!
//! Checks are claimed from the store under a lease, so several nodes never
//! check one payment at once, and no database transaction is open across a
//! channel call: claim (commit), call the channel, write through the usual
//! compare-and-set transitions, record the next check.

use chrono::{DateTime, Utc};
use paymux_channels::{ChannelError, ChannelTrade, TradeState};
use paymux_core::PaymentStatus;
use paymux_store::{DuePayment, Payment};

use super::{later, secs};
use crate::config::PollerConfig;
use crate::error::FlowError;
use crate::flow;
use crate::guarded::Operation;
use crate::AppState;

/// How long a claimed payment stays reserved for its checker. It must outlast
/// one check (a query and a close, each bounded by the channel client's
/// timeout); a checker that dies delays that payment by at most this.
const LEASE_SECS: u64 = 120;

pub async fn run(state: AppState) {
    super::run_checks(
        state,
        "poller",
        secs(LEASE_SECS),
        |state, now, first_poll_before, lease, limit| async move {
            state
                .store
                .claim_due_payments(now, first_poll_before, lease, limit)
                .await
        },
        |state, due| async move { check(&state, due).await },
    )
    .await
}

/// One check of one payment, and its bookkeeping.
pub async fn check(state: &AppState, due: DuePayment) {
    let id = due.payment.id.clone();
    let expires_at = due.payment.expires_at;
    let started = state.clock.now();
    let expired = started >= expires_at;
    // A channel whose breaker is open is not asked: the check moves to when
    // the breaker lets calls through again, and does not count as an attempt.
    if let Some(retry_at) = suspended_until(state, &due.payment.channel_account_id, expired) {
        metrics::counter!("paymux_payment_checks_total", "result" => "deferred").increment(1);
        tracing::debug!(payment_id = %id, %retry_at, "channel suspended; check deferred");
        if let Err(e) = state
            .store
            .schedule_payment_poll(&id, due.poll_attempts, retry_at)
            .await
        {
            tracing::error!(payment_id = %id, error = %e, "poller: cannot record the check");
        }
        return;
    }
    let result = if expired {
        expire(state, due.payment).await
    } else {
        poll(state, due.payment, started).await
    };
    let mut attempts = due.poll_attempts.saturating_add(1);
    let mut next = None;
    match &result {
        Ok(p) if p.status.is_terminal() => {
            metrics::counter!("paymux_payment_checks_total", "result" => "final").increment(1);
            tracing::info!(payment_id = %id, status = %p.status, attempts, expired, "payment settled by a status check");
            // Final payments are never claimed again; nothing to schedule.
            return;
        }
        Ok(_) => {
            metrics::counter!("paymux_payment_checks_total", "result" => "open").increment(1);
        }
        // The channel turned us away without doing anything (breaker
        // opened meanwhile, rate limit): come back when it said, and keep
        // the attempt.
        Err(FlowError::ChannelSuspended(wait)) => {
            metrics::counter!("paymux_payment_checks_total", "result" => "deferred").increment(1);
            attempts = due.poll_attempts;
            let wait = chrono::Duration::from_std(*wait).unwrap_or(chrono::Duration::hours(1));
            next = Some(later(state.clock.now(), wait));
        }
        Err(e) => {
            metrics::counter!("paymux_payment_checks_total", "result" => "error").increment(1);
            tracing::warn!(payment_id = %id, attempts, expired, error = %e, "payment status check failed");
        }
    }
    let next = next.unwrap_or_else(|| {
        next_check(
            &state.config.poller,
            attempts,
            state.clock.now(),
            expires_at,
        )
    });
    if let Err(e) = state.store.schedule_payment_poll(&id, attempts, next).await {
        // The lease runs out and the payment is checked again.
        tracing::error!(payment_id = %id, error = %e, "poller: cannot record the check");
    }
}

/// When the channel calls a check needs (a query; for an expired payment
/// also a close) are refused by their breaker, the time they may be tried.
fn suspended_until(state: &AppState, account_id: &str, expired: bool) -> Option<DateTime<Utc>> {
    let breakers = &state.channels.breakers;
    let mut ops = vec![Operation::Query];
    if expired {
        ops.push(Operation::Close);
    }
    ops.into_iter()
        .filter_map(|op| breakers.check(account_id, op).err())
        .map(|refused| refused.retry_at)
        .max()
}

/// When an open payment is checked next: on the backoff schedule, never
/// later than its expiry; once expired, every `expiry_retry_secs` until it
/// is closed or found paid.
fn next_check(
    cfg: &PollerConfig,
    attempts: i32,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> DateTime<Utc> {
    if now >= expires_at {
        return later(now, secs(cfg.expiry_retry_secs));
    }
    let attempts = usize::try_from(attempts).unwrap_or(usize::MAX);
    match cfg.delay_after(attempts) {
        Some(delay) => later(now, secs(delay.as_secs())).min(expires_at),
        None => expires_at,
    }
}

/// Asks the channel about a payment that has not expired.
async fn poll(
    state: &AppState,
    payment: Payment,
    now: DateTime<Utc>,
) -> Result<Payment, FlowError> {
    let (_, channel) = flow::channel_for(state, &payment.channel_account_id).await?;
    match channel.query(payment.id.as_str()).await {
        Ok(trade) => apply_found(state, payment, &trade).await,
        Err(ChannelError::NotFound) if payment.status == PaymentStatus::Created => {
            let window = secs(state.config.poller.prepay_window_secs);
            if now < later(payment.created_at, window) {
                // A prepay may still be on its way; ask again later.
                return Ok(payment);
            }
            tracing::info!(payment_id = %payment.id, "prepay never reached the channel; closing the payment");
            close(state, payment, flow::CloseReason::NotPrepared).await
        }
        Err(ChannelError::NotFound) => {
            tracing::warn!(payment_id = %payment.id, "the channel does not know a prepared payment");
            Ok(payment)
        }
        Err(e) => Err(flow::unavailable(e)),
    }
}

/// Settles an expired payment: paid if the channel says so, else closed at
/// the channel and then here.
async fn expire(state: &AppState, payment: Payment) -> Result<Payment, FlowError> {
    let (_, channel) = flow::channel_for(state, &payment.channel_account_id).await?;
    // Ask first: a payment paid at the last moment whose callback was lost
    // is paid, not expired.
    match channel.query(payment.id.as_str()).await {
        Ok(trade) if trade.state != TradeState::NotPaid => {
            return apply_found(state, payment, &trade).await
        }
        Ok(_) | Err(ChannelError::NotFound) => {}
        Err(e) => return Err(flow::unavailable(e)),
    }
    tracing::info!(payment_id = %payment.id, "payment expired; closing it");
    close(state, payment, flow::CloseReason::Expired).await
}

/// [`flow::close`], where "cannot be closed because it was paid meanwhile"
/// is a settled payment, not an error.
async fn close(
    state: &AppState,
    payment: Payment,
    reason: flow::CloseReason,
) -> Result<Payment, FlowError> {
    let id = payment.id.clone();
    match flow::close(state, payment, reason).await {
        Err(FlowError::InvalidState(why)) => match state.store.payment(&id).await? {
            Some(current) if current.status.is_terminal() => Ok(current),
            _ => Err(FlowError::InvalidState(why)),
        },
        other => other,
    }
}

/// Applies what the channel reported about a payment.
async fn apply_found(
    state: &AppState,
    payment: Payment,
    trade: &ChannelTrade,
) -> Result<Payment, FlowError> {
    if payment.status != PaymentStatus::Created {
        return flow::apply_trade(state, payment, trade).await;
    }
    // The channel knows an order whose prepay answer we never got.
    if trade.state == TradeState::NotPaid {
        // Still payable: prepare it again. The channel answers the same
        // prepay for the same out_trade_no and request, so this charges
        // nothing twice and gives the merchant its pay_params.
        return flow::prepare(state, payment).await;
    }
    let payment = flow::mark_prepared(state, payment).await?;
    flow::apply_trade(state, payment, trade).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_back_off_and_never_pass_expiry() {
        let cfg = PollerConfig {
            schedule_secs: vec![60, 120],
            expiry_retry_secs: 30,
            ..Default::default()
        };
        let now = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let expires = now + chrono::Duration::hours(1);
        let secs = chrono::Duration::seconds;
        assert_eq!(next_check(&cfg, 1, now, expires), now + secs(60));
        assert_eq!(next_check(&cfg, 2, now, expires), now + secs(120));
        // Schedule spent: the next check is the expiry check.
        assert_eq!(next_check(&cfg, 3, now, expires), expires);
        // Never later than expiry.
        assert_eq!(next_check(&cfg, 2, now, now + secs(90)), now + secs(90));
        // Expired and still open (the channel was unreachable): retry.
        assert_eq!(next_check(&cfg, 9, expires, expires), expires + secs(30));
    }
}
