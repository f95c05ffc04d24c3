//! Small rules both backends apply the same way.

use chrono::{DateTime, Duration, Utc};

use paymux_core::PaymentStatus;

use crate::model::{OutboxEvent, Payment, Refund, RefundInserted};
use crate::{Result, StoreError};

/// A transition must be an edge of the payment state machine: the store
/// does not trust its caller to have asked the machine.
pub(crate) fn check_edge(from: PaymentStatus, to: PaymentStatus) -> Result<()> {
    if from.can_move_to(to) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a payment cannot move from {from} to {to}"
        )))
    }
}

/// When a lease taken at `now` runs out.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: Duration) -> Result<DateTime<Utc>> {
    now.checked_add_signed(lease)
        .ok_or_else(|| StoreError::Invalid(format!("lease {lease} overflows the clock")))
}

/// How many of the oldest due events a claim looks at: a few times what it
/// takes, so that the per-merchant share can pass over a merchant's surplus,
/// without ranking the whole backlog on every claim.
pub(crate) fn claim_window(limit: u32) -> i64 {
    i64::from(limit.max(1)).saturating_mul(8)
}

/// An update of an event by id that touched no row means the event does not exist.
pub(crate) fn event_updated(rows: u64, id: &str) -> Result<()> {
    if rows == 0 {
        return Err(StoreError::NotFound(format!("event {id}")));
    }
    Ok(())
}

/// An update by id that touched no row means the row does not exist.
pub(crate) fn updated(rows: u64, what: &str, id: &str) -> Result<()> {
    if rows == 0 {
        return Err(StoreError::NotFound(format!("{what} {id}")));
    }
    Ok(())
}

/// Orders claimed events the way they were selected: `UPDATE … RETURNING`
/// gives no order, and workers should deliver the most overdue first.
pub(crate) fn sort_due(events: &mut [OutboxEvent]) {
    events.sort_by(|a, b| {
        (a.next_attempt_at, a.created_at, &a.id).cmp(&(b.next_attempt_at, b.created_at, &b.id))
    });
}

/// Whether a refund may be reserved against its payment, given what other
/// refunds already hold: `None` if it fits, else why not.
pub(crate) fn refund_verdict(
    payment: &Payment,
    held: i64,
    refund: &Refund,
) -> Result<Option<RefundInserted>> {
    if payment.merchant_id != refund.merchant_id {
        return Err(StoreError::Invalid(format!(
            "refund {} is not the payment's merchant's",
            refund.id
        )));
    }
    if payment.amount.currency != refund.amount.currency {
        return Err(StoreError::Invalid(format!(
            "refund {} is in {}, its payment in {}",
            refund.id,
            refund.amount.currency.as_str(),
            payment.amount.currency.as_str()
        )));
    }
    if payment.status != paymux_core::PaymentStatus::Succeeded {
        return Ok(Some(RefundInserted::NotRefundable(payment.status)));
    }
    match paymux_core::refund::fits(payment.amount.minor, held, refund.amount.minor) {
        Some(_) => Ok(None),
        None => Ok(Some(RefundInserted::Exceeds {
            available: (payment.amount.minor - held).max(0),
        })),
    }
}

/// The fee a payment may be charged: positive, and only once it succeeded.
pub(crate) fn check_fee(payment: &Payment, fee: i64) -> Result<()> {
    if payment.status != PaymentStatus::Succeeded {
        return Err(StoreError::Invalid(format!(
            "a fee is posted for a succeeded payment; {} is {}",
            payment.id, payment.status
        )));
    }
    if fee <= 0 || fee > payment.amount.minor {
        return Err(StoreError::Invalid(format!(
            "a fee of {fee} does not fit payment {} of {}",
            payment.id, payment.amount.minor
        )));
    }
    Ok(())
}

/// What posting a fee did, given the fee posted before (if any).
pub(crate) fn fee_outcome(before: Option<i64>, fee: i64) -> crate::ledger::FeePosted {
    use crate::ledger::FeePosted;
    match before {
        None => FeePosted::New,
        Some(posted) if posted == fee => FeePosted::Already,
        Some(posted) => FeePosted::Differs { posted },
    }
}

/// Why finishing a reconciliation run changed nothing: it is not running
/// any more (finished already: a run ends once), or there is no such run.
pub(crate) fn not_finished(
    current: Option<crate::model::ReconciliationRun>,
    id: &str,
) -> Result<()> {
    match current {
        Some(run) => Err(StoreError::Invalid(format!(
            "reconciliation {id} is {}, not running",
            run.status.as_str()
        ))),
        None => Err(StoreError::NotFound(format!("reconciliation {id}"))),
    }
}

/// A row is sealed (given its chain position) once: the sealing update is a
/// compare-and-set on `chain_pos IS NULL`, and a miss means two sealers ran
/// at once, which the store must never allow. The transaction rolls back.
pub(crate) fn sealed_once(rows: u64, seq: i64) -> Result<()> {
    if rows != 1 {
        return Err(StoreError::Invalid(format!(
            "audit row {seq} was sealed by someone else meanwhile"
        )));
    }
    Ok(())
}
