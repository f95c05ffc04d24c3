//! Status checks of refunds still processing: a refund whose callback was
//! lost, whose call timed out or never reached the channel still ends in
//! its true final state.
//!
//! A processing refund is queried `first_delay_secs` after it was made, then
//! on the `[poller]` backoff schedule, and once that is spent at its last
//! interval until it is final (refunds have no expiry: a bank can take days).
//! What the channel reports goes through [`refunds::apply`], exactly like a
//! callback. A refund the channel does not know was never received (the
//! call was lost, or never made before a crash): it is sent again under the
//! same out_refund_no, which can never refund twice.
//!
//! Like payment checks, refunds are claimed under a lease and no database
//! transaction is open across a channel call.

use chrono::{DateTime, Utc};
use paymux_channels::ChannelError;
use paymux_store::{DueRefund, Refund};

use crate::error::FlowError;
use crate::guarded::Operation;
use crate::{flow, refunds, AppState};

/// How long a claimed refund stays reserved for its checker: it must
/// outlast a query and a repeated refund call.
const LEASE_SECS: i64 = 120;

pub async fn run(state: AppState) {
    super::run_checks(
        state,
        "refund checks",
        chrono::Duration::seconds(LEASE_SECS),
        |state, now, first_poll_before, lease, limit| async move {
            state
                .store
                .claim_due_refunds(now, first_poll_before, lease, limit)
                .await
        },
        |state, due| async move { check(&state, due).await },
    )
    .await
}

/// One check of one refund, and its bookkeeping.
pub async fn check(state: &AppState, due: DueRefund) {
    let id = due.refund.id.clone();
    let result = settle(state, due.refund).await;
    let mut attempts = due.poll_attempts.saturating_add(1);
    let mut wait = None;
    match &result {
        Ok(r) if r.status.is_terminal() => {
            metrics::counter!("paymux_refund_checks_total", "result" => "final").increment(1);
            tracing::info!(refund_id = %id, status = %r.status, attempts, "refund settled by a status check");
            return;
        }
        Ok(_) => {
            metrics::counter!("paymux_refund_checks_total", "result" => "open").increment(1);
        }
        // Turned away without a call (breaker, rate limit): keep the attempt.
        Err(FlowError::ChannelSuspended(w)) => {
            metrics::counter!("paymux_refund_checks_total", "result" => "deferred").increment(1);
            attempts = due.poll_attempts;
            wait = Some(chrono::Duration::from_std(*w).unwrap_or(chrono::Duration::hours(1)));
        }
        Err(e) => {
            metrics::counter!("paymux_refund_checks_total", "result" => "error").increment(1);
            tracing::warn!(refund_id = %id, attempts, error = %e, "refund status check failed");
        }
    }
    let wait = wait.unwrap_or_else(|| next_delay(&state.config.poller.schedule_secs, attempts));
    let now = state.clock.now();
    let next = now
        .checked_add_signed(wait)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if let Err(e) = state.store.schedule_refund_poll(&id, attempts, next).await {
        // The lease runs out and the refund is checked again.
        tracing::error!(refund_id = %id, error = %e, "refund checks: cannot record the check");
    }
}

/// Asks the channel where a processing refund stands and applies the answer.
async fn settle(state: &AppState, refund: Refund) -> Result<Refund, FlowError> {
    let payment = state
        .store
        .payment(&refund.payment_id)
        .await?
        .ok_or(FlowError::NotFound)?;
    if let Err(refused) = state
        .channels
        .breakers
        .check(&payment.channel_account_id, Operation::QueryRefund)
    {
        return Err(FlowError::ChannelSuspended(
            refused.retry_after(state.clock.now()),
        ));
    }
    let (_, channel) = flow::channel_for(state, &payment.channel_account_id).await?;
    let request = refunds::refund_request(state, &refund, &payment);
    match channel.query_refund(&request).await {
        Ok(reported) => refunds::apply(state, refund, &reported).await,
        Err(ChannelError::NotFound) => {
            tracing::info!(refund_id = %refund.id, "the channel never received the refund; sending it again");
            refunds::submit(state, refund, &payment).await
        }
        Err(e) => Err(flow::unavailable(e)),
    }
}

/// The wait before the next check after `attempts` checks: the schedule,
/// then its last step for as long as it takes.
fn next_delay(schedule_secs: &[u64], attempts: i32) -> chrono::Duration {
    let i = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
    let secs = schedule_secs
        .get(i)
        .or(schedule_secs.last())
        .copied()
        .unwrap_or(3600);
    super::secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_back_off_then_keep_the_last_step() {
        let s = [60, 120, 300];
        assert_eq!(next_delay(&s, 1), chrono::Duration::seconds(60));
        assert_eq!(next_delay(&s, 3), chrono::Duration::seconds(300));
        assert_eq!(next_delay(&s, 40), chrono::Duration::seconds(300));
        assert_eq!(next_delay(&[], 1), chrono::Duration::seconds(3600));
    }
}
