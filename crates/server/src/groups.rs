//! Group buys (拼团): a deal that happens only when `size` buyers have paid
//! before the group's deadline.
//!
//! A member joins with an ordinary create carrying `group_id`; the store
//! takes the seat in the transaction that inserts the payment, so a full
//! group refuses (409 `GROUP_FULL`) before any payment exists, however many
//! join at once. A member's payment that closes or fails gives its seat
//! back. The member's success that pays the last seat succeeds the group
//! in its own transaction, with `group.succeeded`. A group still short at
//! its deadline fails ([`settle`], with `group.failed`): its open members
//! are closed at their channels and every paid member is refunded in full;
//! a member whose payment succeeds after that is refunded too. Every step
//! is idempotent and driven from what the store recorded.

use chrono::{DateTime, Utc};
use paymux_core::{new_id, PaymentStatus, RefundStatus};
use paymux_store::{GroupBuy, GroupInserted, GroupStatus, NewEvent, Payment};
use serde_json::{json, Value};

use crate::api::validate::CreatePayment;
use crate::api::view;
use crate::error::FlowError;
use crate::flow::{self, CloseReason};
use crate::{refunds, AppState};

pub const EVENT_GROUP_SUCCEEDED: &str = "group.succeeded";
pub const EVENT_GROUP_FAILED: &str = "group.failed";

/// Groups failed or settled per round of [`settle`].
const BATCH: u32 = 32;

/// What a create-group request asks for, checked.
pub struct NewGroup {
    pub merchant_group_no: String,
    pub size: i32,
    pub amount: Option<i64>,
    pub currency: paymux_core::Currency,
    pub notify_url: String,
    pub expires_at: DateTime<Utc>,
    pub request_hash: String,
}

/// Creates the group (or finds the one with the same number). Returns it
/// and whether this call created it.
pub async fn create(
    state: &AppState,
    merchant_id: &str,
    app_id: &str,
    req: NewGroup,
) -> Result<(GroupBuy, bool), FlowError> {
    let now = state.clock.now();
    let group = GroupBuy {
        id: new_id("grp"),
        merchant_id: merchant_id.to_string(),
        app_id: app_id.to_string(),
        merchant_group_no: req.merchant_group_no,
        size: req.size,
        amount: req.amount,
        currency: req.currency,
        notify_url: req.notify_url,
        request_hash: req.request_hash.clone(),
        status: GroupStatus::Open,
        seats_taken: 0,
        paid_count: 0,
        expires_at: req.expires_at,
        succeeded_at: None,
        failed_at: None,
        settled_at: None,
        created_at: now,
        updated_at: now,
    };
    match state.store.insert_group(&group).await? {
        GroupInserted::New => {
            tracing::info!(group_id = %group.id, merchant_id, size = group.size, "group buy created");
            Ok((group, true))
        }
        GroupInserted::Existing(g) if g.request_hash == req.request_hash => Ok((g, false)),
        GroupInserted::Existing(_) => Err(FlowError::Conflict(
            "merchant_group_no was already used with a different request".into(),
        )),
    }
}

/// The merchant's group a create asks to join, if the request fits it (its
/// amount and currency). Whether a seat is free is the store's to say.
pub async fn joinable(
    state: &AppState,
    merchant_id: &str,
    group_id: &str,
    req: &CreatePayment,
) -> Result<GroupBuy, FlowError> {
    let group = match state.store.group(group_id).await? {
        Some(g) if g.merchant_id == merchant_id => g,
        _ => return Err(FlowError::Invalid("group_id: no such group".into())),
    };
    if req.amount.currency != group.currency {
        return Err(FlowError::Invalid(format!(
            "currency: the group is in {}",
            group.currency
        )));
    }
    if let Some(amount) = group.amount {
        if req.amount.minor != amount {
            return Err(FlowError::Invalid(format!(
                "amount: each member of this group pays {amount}"
            )));
        }
    }
    Ok(group)
}

/// The group as the API and its events show it.
pub fn view(g: &GroupBuy, members: Option<&[Payment]>) -> Value {
    let mut v = json!({
        "id": g.id,
        "object": "group",
        "merchant_group_no": g.merchant_group_no,
        "status": g.status.as_str(),
        "size": g.size,
        "amount": g.amount,
        "currency": g.currency.as_str(),
        "notify_url": g.notify_url,
        "seats_taken": g.seats_taken,
        "paid_count": g.paid_count,
        "expires_at": view::time(g.expires_at),
        "succeeded_at": g.succeeded_at.map(view::time),
        "failed_at": g.failed_at.map(view::time),
        "created_at": view::time(g.created_at),
    });
    if let Some(members) = members {
        v["members"] = members
            .iter()
            .map(|p| {
                json!({"payment_id": p.id.as_str(), "status": p.status.as_str(),
                            "refunded_amount": p.refunded})
            })
            .collect::<Vec<_>>()
            .into();
    }
    v
}

fn group_event(g: &GroupBuy, event_type: &str, payment: &Payment, now: DateTime<Utc>) -> NewEvent {
    let id = new_id("evt");
    NewEvent {
        payload: json!({
            "id": id,
            "type": event_type,
            "created_at": view::time(now),
            "data": view(g, None),
        }),
        id,
        merchant_id: g.merchant_id.clone(),
        payment_id: payment.id.clone(),
        refund_id: None,
        event_type: event_type.to_string(),
        notify_url: g.notify_url.clone(),
        app_id: Some(g.app_id.clone()),
        created_at: now,
    }
}

/// The `group.succeeded` event to write if `member`'s success completes its
/// group (the store writes it only then), showing the group as it will be.
pub async fn completion_event(
    state: &AppState,
    member: &Payment,
    now: DateTime<Utc>,
) -> Result<Option<NewEvent>, FlowError> {
    let Some(group_id) = &member.group_id else {
        return Ok(None);
    };
    let Some(g) = state.store.group(group_id).await? else {
        return Ok(None);
    };
    if g.status != GroupStatus::Open {
        return Ok(None);
    }
    let done = GroupBuy {
        status: GroupStatus::Succeeded,
        paid_count: g.size,
        succeeded_at: Some(now),
        updated_at: now,
        ..g
    };
    Ok(Some(group_event(&done, EVENT_GROUP_SUCCEEDED, member, now)))
}

/// What a round of [`settle`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub failed: usize,
    pub settled: usize,
}

/// One round: fails the groups past their deadline, then closes the open
/// members and refunds the paid members of failed groups, up to [`BATCH`]
/// groups of each. What a channel does not answer is left for the next round.
pub async fn settle(state: &AppState) -> Result<Settled, FlowError> {
    let mut done = Settled::default();
    let now = state.clock.now();
    for g in state.store.expired_groups(now, BATCH).await? {
        let members = state.store.group_members(&g.id).await?;
        let failed = GroupBuy {
            status: GroupStatus::Failed,
            failed_at: Some(now),
            updated_at: now,
            ..g.clone()
        };
        // An event names a payment: a group nobody joined fails silently.
        let event = members
            .first()
            .map(|m| group_event(&failed, EVENT_GROUP_FAILED, m, now));
        if state.store.fail_group(&g.id, event.as_ref(), now).await? {
            done.failed += 1;
            metrics::counter!("paymux_groups_failed_total").increment(1);
            tracing::info!(group_id = %g.id, paid = g.paid_count, size = g.size, "group buy failed short of members");
            state.outbox_wakeup.notify_one();
        }
    }
    for g in state.store.groups_to_settle(BATCH).await? {
        match settle_members(state, &g).await {
            Ok(true) => {
                state
                    .store
                    .mark_group_settled(&g.id, state.clock.now())
                    .await?;
                done.settled += 1;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(group_id = %g.id, error = %e, "failed group not settled yet"),
        }
    }
    Ok(done)
}

/// Closes the failed group's open members and refunds its paid ones.
/// `true` once every member is closed, failed or has its refund.
async fn settle_members(state: &AppState, g: &GroupBuy) -> Result<bool, FlowError> {
    let mut all = true;
    for member in state.store.group_members(&g.id).await? {
        match member.status {
            PaymentStatus::Created | PaymentStatus::Pending => {
                let id = member.id.clone();
                match flow::close(state, member, CloseReason::GroupFailed).await {
                    Ok(_) => {}
                    // Paid meanwhile: refunded next round.
                    Err(FlowError::InvalidState(_)) => all = false,
                    Err(e) => {
                        tracing::warn!(payment_id = %id, error = %e, "cannot close a member of a failed group yet");
                        all = false;
                    }
                }
            }
            PaymentStatus::Succeeded => {
                let no = format!("group-{}", member.id);
                let reason = "the group buy did not fill in time";
                if let Some(refund) = refunds::reserve_rest(state, &member, &no, reason).await? {
                    if refund.status == RefundStatus::Processing {
                        refunds::submit(state, refund, &member).await?;
                    }
                }
            }
            PaymentStatus::Failed | PaymentStatus::Closed => {}
        }
    }
    Ok(all)
}
