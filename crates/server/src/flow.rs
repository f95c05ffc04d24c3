//! The payment flow: create, prepare at the channel, apply what the channel
//! reports, close. Handlers and workers call these; none of them holds a
//! database transaction across a channel call (write, commit, call, write).

use std::sync::Arc;

use chrono::Duration;
use paymux_channels::{Channel, ChannelError, ChannelTrade, PrepayRequest, TradeState};
use paymux_core::{
    check_paid_amount, new_id, ChannelKind, PaymentEvent, PaymentId, PaymentStatus, Step,
};
use paymux_store::{
    ChannelAccount, Inserted, Joined, NewEvent, Payment, Transition, TransitionPatch,
};

use crate::api::validate::CreatePayment;
use crate::api::view;
use crate::error::FlowError;
use crate::guarded::Operation;
use crate::locks::KeyGuard;
use crate::{AppState, ServerError};

pub const EVENT_PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub const EVENT_PAYMENT_FAILED: &str = "payment.failed";
pub const EVENT_PAYMENT_CLOSED: &str = "payment.closed";

/// Why a payment was closed (or failed), as its event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The merchant closed it (`POST /v1/payments/{id}/close`).
    Merchant,
    /// Its `expires_at` passed unpaid.
    Expired,
    /// Its prepay never reached the channel.
    NotPrepared,
    /// The channel reported it closed or failed.
    Channel,
    /// The channel refused to prepare it.
    ChannelRefused,
    /// Another attempt of its checkout was paid.
    CheckoutPaid,
    /// Its group buy expired short of members.
    GroupFailed,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Merchant => "merchant",
            CloseReason::Expired => "expired",
            CloseReason::NotPrepared => "not_prepared",
            CloseReason::Channel => "channel",
            CloseReason::ChannelRefused => "channel_refused",
            CloseReason::CheckoutPaid => "checkout_paid",
            CloseReason::GroupFailed => "group_failed",
        }
    }
}

/// The merchant event a step writes: its type and, for a close or a
/// failure, why.
#[derive(Debug, Clone, Copy)]
struct Notice {
    event_type: &'static str,
    reason: Option<CloseReason>,
}

impl Notice {
    fn of(to: PaymentStatus, reason: CloseReason) -> Option<Notice> {
        let event_type = match to {
            PaymentStatus::Succeeded => EVENT_PAYMENT_SUCCEEDED,
            PaymentStatus::Failed => EVENT_PAYMENT_FAILED,
            PaymentStatus::Closed => EVENT_PAYMENT_CLOSED,
            PaymentStatus::Created | PaymentStatus::Pending => return None,
        };
        let reason = (to != PaymentStatus::Succeeded).then_some(reason);
        Some(Notice { event_type, reason })
    }
}

/// Creates the payment (or finds the one with the same order number) and makes
/// sure it is prepared at the channel. Returns the payment and whether this
/// call created it.
pub async fn create(
    state: &AppState,
    merchant_id: &str,
    app_id: &str,
    req: CreatePayment,
) -> Result<(Payment, bool), FlowError> {
    let fingerprint = req.fingerprint();
    // A repeat of a known order needs no channel account lookup or insert attempt.
    if let Some(existing) = state
        .store
        .payment_by_order_no(merchant_id, &req.merchant_order_no)
        .await?
    {
        return Ok((resume(state, existing, &fingerprint).await?, false));
    }
    let expires_in = req
        .expires_in_seconds
        .unwrap_or(state.config.default_expiry_secs);
    let mut expires_at = state.clock.now() + Duration::seconds(expires_in);
    if let Some(group_id) = &req.group_id {
        // A member pays before the group's deadline or not at all.
        let group = crate::groups::joinable(state, merchant_id, group_id, &req).await?;
        expires_at = expires_at.min(group.expires_at);
    }
    let new = NewPayment {
        merchant_id,
        app_id,
        expires_at,
        checkout_id: None,
        group_id: req.group_id.clone(),
    };
    insert_and_prepare(state, new, req).await
}

/// Who a new payment is for and when it expires.
pub struct NewPayment<'a> {
    pub merchant_id: &'a str,
    pub app_id: &'a str,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The checkout it is an attempt of.
    pub checkout_id: Option<String>,
    /// The group buy it takes a seat in.
    pub group_id: Option<String>,
}

/// Inserts the payment `req` asks for (or finds the one holding its order
/// number) and prepares it at the channel. Returns it and whether this call
/// created it.
pub async fn insert_and_prepare(
    state: &AppState,
    new: NewPayment<'_>,
    req: CreatePayment,
) -> Result<(Payment, bool), FlowError> {
    let NewPayment {
        merchant_id,
        app_id,
        expires_at,
        checkout_id,
        group_id,
    } = new;
    let fingerprint = req.fingerprint();
    let account = channel_account(state, merchant_id, req.channel).await?;
    // While the account's prepay breaker is open, refuse before writing
    // anything: a quick 503 and no payment, so a later repeat of the same
    // request is simply a new create.
    if let Err(refused) = state
        .channels
        .breakers
        .check(&account.id, Operation::Prepay)
    {
        metrics::counter!("paymux_payments_refused_total", "reason" => "breaker_open").increment(1);
        return Err(FlowError::ChannelSuspended(
            refused.retry_after(state.clock.now()),
        ));
    }
    let now = state.clock.now();
    let payment = Payment {
        id: PaymentId::generate(),
        merchant_id: merchant_id.to_string(),
        merchant_order_no: req.merchant_order_no.clone(),
        amount: req.amount,
        channel: req.channel,
        method: req.method,
        status: PaymentStatus::Created,
        description: req.description.clone(),
        notify_url: req.notify_url.clone(),
        payer: req.payer_json(),
        metadata: req.metadata.clone(),
        request_hash: fingerprint.clone(),
        channel_account_id: account.id.clone(),
        app_id: Some(app_id.to_string()),
        checkout_id,
        group_id,
        pay_params: None,
        channel_trade_no: None,
        paid_at: None,
        refunded: 0,
        expires_at,
        created_at: now,
        updated_at: now,
    };
    let inserted = match &payment.group_id {
        // A member's payment exists only with its seat.
        Some(group_id) => match state.store.join_group(&payment, now).await? {
            Joined::New => Inserted::New,
            Joined::Existing(p) => Inserted::Existing(p),
            Joined::Full => {
                return Err(FlowError::GroupFull(format!(
                    "group {group_id} has no seat left"
                )))
            }
            Joined::Closed(status) => {
                return Err(FlowError::GroupClosed(format!(
                    "group {group_id} is {status} and takes no more members"
                )))
            }
        },
        None => state.store.insert_payment(&payment).await?,
    };
    match inserted {
        Inserted::New => {
            metrics::counter!("paymux_payments_created_total", "channel" => payment.channel.as_str())
                .increment(1);
            tracing::info!(payment_id = %payment.id, merchant_id, "payment created");
            Ok((prepare(state, payment).await?, true))
        }
        Inserted::Existing(existing) => Ok((resume(state, existing, &fingerprint).await?, false)),
    }
}

/// A repeated create: the same request continues where the first left off; a
/// different request under the same order number is refused.
async fn resume(
    state: &AppState,
    existing: Payment,
    fingerprint: &str,
) -> Result<Payment, FlowError> {
    if existing.request_hash != fingerprint {
        return Err(FlowError::Conflict(
            "merchant_order_no was already used with a different request".into(),
        ));
    }
    prepare(state, existing).await
}

async fn channel_account(
    state: &AppState,
    merchant_id: &str,
    channel: ChannelKind,
) -> Result<ChannelAccount, FlowError> {
    if let Some(account) = state
        .store
        .channel_account_for(merchant_id, channel)
        .await?
    {
        return Ok(account);
    }
    match &state.sandbox {
        Some(sandbox) => {
            Ok(crate::sandbox::ensure_account(state, sandbox, merchant_id, channel).await?)
        }
        None => Err(FlowError::ChannelNotConfigured(format!(
            "no {channel} account for this merchant"
        ))),
    }
}

pub async fn channel_for(
    state: &AppState,
    account_id: &str,
) -> Result<(ChannelAccount, Arc<dyn Channel>), FlowError> {
    let account = state
        .store
        .channel_account(account_id)
        .await?
        .ok_or_else(|| {
            FlowError::Internal(crate::ServerError::Config(format!(
                "channel account {account_id} is gone"
            )))
        })?;
    let client = state
        .channels
        .client(&account)
        .map_err(|e| FlowError::Internal(e.into()))?;
    Ok((account, client))
}

/// Moves a `created` payment to `pending` by preparing it at the channel.
/// Concurrent calls for one order make one channel call; the order id is the
/// channel's out_trade_no, so even calls from different nodes charge once.
pub async fn prepare(state: &AppState, payment: Payment) -> Result<Payment, FlowError> {
    if payment.status != PaymentStatus::Created {
        return Ok(payment);
    }
    let order = state.order_locks.lock(payment.id.as_str()).await;
    let payment = reload(state, &payment.id).await?;
    if payment.status != PaymentStatus::Created {
        return Ok(payment);
    }
    let (_, channel) = channel_for(state, &payment.channel_account_id).await?;
    let request = prepay_request(state, &payment);
    match channel.prepay(&request).await {
        Ok(prepared) => {
            let patch = TransitionPatch {
                pay_params: Some(prepared.pay_params),
                ..Default::default()
            };
            let pending = move_to(
                state,
                &payment,
                PaymentEvent::PrepayAccepted,
                patch,
                CloseReason::Channel,
            )
            .await?;
            match &prepared.trade {
                // Settled in the same call (barcode): apply it like a callback,
                // with the same amount check.
                Some(trade) => apply_trade_with(state, Some(&order), pending, trade).await,
                None => Ok(pending),
            }
        }
        Err(ChannelError::Rejected { code, message }) => {
            tracing::warn!(payment_id = %payment.id, %code, %message, "channel rejected prepay");
            move_to(
                state,
                &payment,
                PaymentEvent::PrepayRejected,
                TransitionPatch::default(),
                CloseReason::ChannelRefused,
            )
            .await?;
            Err(FlowError::ChannelRejected(format!("{code}: {message}")))
        }
        // Outcome unknown (or never sent: breaker open, rate limited): the
        // payment stays `created`; the same request resumes it.
        Err(e) => {
            tracing::warn!(payment_id = %payment.id, error = %e, "prepay failed");
            Err(unavailable(e))
        }
    }
}

/// A channel call that did not get an answer, as the merchant API says it:
/// calls paymux did not make (breaker open, backing off after a rate limit)
/// carry how long to wait.
pub fn unavailable(e: ChannelError) -> FlowError {
    match e {
        ChannelError::CircuitOpen { retry_after } => FlowError::ChannelSuspended(retry_after),
        ChannelError::RateLimited {
            retry_after: Some(wait),
        } => FlowError::ChannelSuspended(wait),
        e => FlowError::ChannelUnavailable(e.to_string()),
    }
}

fn payer_field(payment: &Payment, field: &str) -> Option<String> {
    payment
        .payer
        .get(field)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// What the channel is asked to prepare for a payment. The same payment always
/// gives the same request, so a retried prepay is the same order at the channel.
pub fn prepay_request(state: &AppState, payment: &Payment) -> PrepayRequest {
    PrepayRequest {
        out_trade_no: payment.id.to_string(),
        description: payment.description.clone(),
        amount: payment.amount,
        method: payment.method,
        notify_url: format!(
            "{}/notify/{}/{}",
            state.public_url, payment.channel, payment.channel_account_id
        ),
        expires_at: payment.expires_at,
        payer_openid: payer_field(payment, "openid"),
        payer_client_ip: payer_field(payment, "client_ip"),
        payer_buyer_id: payer_field(payment, "buyer_id"),
        auth_code: payer_field(payment, "auth_code"),
    }
}

/// The payment as committed now (after waiting for its order lock).
async fn reload(state: &AppState, id: &PaymentId) -> Result<Payment, FlowError> {
    state.store.payment(id).await?.ok_or(FlowError::NotFound)
}

/// Applies a channel's report about a trade (from a callback or a query).
/// Duplicates are successes that change nothing; a report that contradicts
/// the payment (wrong amount) changes nothing and is an error. The caller
/// must not hold the order's lock (see [`apply_trade_with`]).
pub async fn apply_trade(
    state: &AppState,
    payment: Payment,
    trade: &ChannelTrade,
) -> Result<Payment, FlowError> {
    apply_trade_with(state, None, payment, trade).await
}

/// [`apply_trade`] for a caller that may hold the order's lock already
/// (`held`): the lock is taken only where it is needed and not held, never
/// twice, which would wait forever.
async fn apply_trade_with(
    state: &AppState,
    held: Option<&KeyGuard<'_>>,
    payment: Payment,
    trade: &ChannelTrade,
) -> Result<Payment, FlowError> {
    let event = match trade.state {
        TradeState::Paid => PaymentEvent::Paid,
        TradeState::Failed => PaymentEvent::PayFailed,
        TradeState::Closed => PaymentEvent::Closed,
        TradeState::NotPaid => return Ok(payment),
    };
    // A fully refunded trade is closed at the channel (Alipay says
    // TRADE_CLOSED): the payment stays succeeded; its refunds say the rest.
    if event == PaymentEvent::Closed && payment.status == PaymentStatus::Succeeded {
        return Ok(payment);
    }
    if event == PaymentEvent::Paid {
        let reported = trade.amount.ok_or_else(|| {
            FlowError::Invalid("the channel reported a payment without an amount".into())
        })?;
        check_paid_amount(payment.amount, reported).map_err(|e| {
            tracing::error!(payment_id = %payment.id, error = %e, "paid amount does not match");
            FlowError::Invalid(e.to_string())
        })?;
    }
    // A verified report that the payer paid means the prepay reached the
    // channel, even if its answer never reached us: count it as prepared so
    // the payment can succeed instead of the report bouncing forever.
    let payment = if event == PaymentEvent::Paid && payment.status == PaymentStatus::Created {
        match held {
            Some(order) => mark_prepared_locked(state, order, payment).await?,
            None => mark_prepared(state, payment).await?,
        }
    } else {
        payment
    };
    let patch = TransitionPatch {
        channel_trade_no: trade.transaction_id.clone(),
        paid_at: trade
            .paid_at
            .or_else(|| (event == PaymentEvent::Paid).then(|| state.clock.now())),
        ..Default::default()
    };
    move_to(state, &payment, event, patch, CloseReason::Channel).await
}

/// A `created` payment that the channel turned out to know (the answer to
/// its prepay was lost) counts as prepared, so that what the channel reports
/// about it can be applied. It gets no pay_params: the payer already has
/// them or never will.
pub async fn mark_prepared(state: &AppState, payment: Payment) -> Result<Payment, FlowError> {
    let order = state.order_locks.lock(payment.id.as_str()).await;
    mark_prepared_locked(state, &order, payment).await
}

/// [`mark_prepared`] under the order's lock, which the caller holds.
async fn mark_prepared_locked(
    state: &AppState,
    order: &KeyGuard<'_>,
    payment: Payment,
) -> Result<Payment, FlowError> {
    assert_eq!(
        order.key(),
        payment.id.as_str(),
        "the order lock held is this payment's"
    );
    let payment = reload(state, &payment.id).await?;
    if payment.status != PaymentStatus::Created {
        return Ok(payment);
    }
    move_to(
        state,
        &payment,
        PaymentEvent::PrepayAccepted,
        TransitionPatch::default(),
        CloseReason::Channel,
    )
    .await
}

/// How often one step may lose a race before giving up: each lost race
/// means the payment moved on a legal edge, and there are fewer edges than
/// this between `created` and any final status.
const MAX_LOST_RACES: usize = 8;

/// One step of the state machine, persisted with a compare-and-set; a step
/// to a final status writes the merchant's event with it (`reason` is why,
/// for a close or a failure; unused otherwise). An event
/// that already happened returns the payment unchanged. When another writer
/// moved the payment first, the event is applied again to where it is now.
async fn move_to(
    state: &AppState,
    payment: &Payment,
    event: PaymentEvent,
    patch: TransitionPatch,
    reason: CloseReason,
) -> Result<Payment, FlowError> {
    let mut payment = payment.clone();
    for _ in 0..MAX_LOST_RACES {
        let to = match payment.status.on(event) {
            Ok(Step::Already) => return Ok(payment),
            Ok(Step::Move(to)) => to,
            Err(e) => {
                tracing::error!(payment_id = %payment.id, error = %e, "channel report contradicts the payment");
                return Err(FlowError::InvalidState(format!(
                    "payment is {}: {e}",
                    payment.status
                )));
            }
        };
        let now = state.clock.now();
        // A member's success may complete its group: the group's event goes
        // with it, written only if it does.
        let mut patch = patch.clone();
        if to == PaymentStatus::Succeeded && payment.group_id.is_some() {
            patch.group_event = crate::groups::completion_event(state, &payment, now).await?;
        }
        // Every final status is reported to the merchant, in the same
        // transaction; `reason` says why when it is a close or a failure.
        let notice = match Notice::of(to, reason) {
            Some(n) => Some(n),
            // `payment.pending` only for the apps that receive it.
            None if to == PaymentStatus::Pending && wants_pending(state, &payment).await? => {
                Some(Notice {
                    event_type: crate::event_types::PAYMENT_PENDING,
                    reason: None,
                })
            }
            None => None,
        };
        let outbox = notice.map(|notice| outbox_event(&payment, to, &patch, notice, now));
        match state
            .store
            .transition(
                &payment.id,
                payment.status,
                to,
                &patch,
                outbox.as_ref(),
                now,
            )
            .await?
        {
            Transition::Applied(after) => {
                metrics::counter!("paymux_payment_transitions_total", "to" => to.as_str())
                    .increment(1);
                tracing::info!(payment_id = %after.id, from = %payment.status, to = %to, "payment status changed");
                if outbox.is_some() {
                    state.outbox_wakeup.notify_one();
                }
                // A checkout's attempt succeeded: it won the checkout (the
                // others are closed) or is a duplicate (refunded).
                if to == PaymentStatus::Succeeded && after.checkout_id.is_some() {
                    state.checkout_wakeup.notify_one();
                }
                return Ok(after);
            }
            Transition::Unchanged(current) => payment = current,
        }
    }
    Err(FlowError::Internal(ServerError::Invariant(format!(
        "payment {} lost {MAX_LOST_RACES} races in a row for one step",
        payment.id
    ))))
}

/// Whether the app that created the payment receives `payment.pending`.
async fn wants_pending(state: &AppState, payment: &Payment) -> Result<bool, FlowError> {
    let Some(app_id) = &payment.app_id else {
        return Ok(false);
    };
    Ok(state
        .directory
        .app(&*state.store, app_id)
        .await?
        .is_some_and(|app| crate::event_types::receives(&app, crate::event_types::PAYMENT_PENDING)))
}

/// The outbox row reporting the payment as it will be after moving to `to`.
fn outbox_event(
    payment: &Payment,
    to: PaymentStatus,
    patch: &TransitionPatch,
    notice: Notice,
    now: chrono::DateTime<chrono::Utc>,
) -> NewEvent {
    let event_type = notice.event_type;
    let after = Payment {
        status: to,
        pay_params: patch
            .pay_params
            .clone()
            .or_else(|| payment.pay_params.clone()),
        channel_trade_no: patch
            .channel_trade_no
            .clone()
            .or_else(|| payment.channel_trade_no.clone()),
        paid_at: patch.paid_at.or(payment.paid_at),
        updated_at: now,
        ..payment.clone()
    };
    let id = new_id("evt");
    NewEvent {
        payload: view::event(
            &id,
            event_type,
            now,
            &after,
            notice.reason.map(CloseReason::as_str),
        ),
        id,
        merchant_id: payment.merchant_id.clone(),
        payment_id: payment.id.clone(),
        refund_id: None,
        event_type: event_type.to_string(),
        notify_url: payment.notify_url.clone(),
        app_id: payment.app_id.clone(),
        created_at: now,
    }
}

/// Closes a payment at the channel, then here. A payment the channel says was
/// paid is marked paid instead, and the close is refused.
pub async fn close(
    state: &AppState,
    payment: Payment,
    reason: CloseReason,
) -> Result<Payment, FlowError> {
    let order = state.order_locks.lock(payment.id.as_str()).await;
    let payment = reload(state, &payment.id).await?;
    match payment.status {
        PaymentStatus::Closed => return Ok(payment),
        PaymentStatus::Succeeded | PaymentStatus::Failed => {
            return Err(FlowError::InvalidState(format!(
                "payment is {} and cannot be closed",
                payment.status
            )))
        }
        PaymentStatus::Created | PaymentStatus::Pending => {}
    }
    let (_, channel) = channel_for(state, &payment.channel_account_id).await?;
    match channel.close(payment.id.as_str()).await {
        Ok(()) | Err(ChannelError::NotFound) => {}
        Err(ChannelError::Rejected { code, message }) => {
            // Most often: the payer paid meanwhile. Ask, and believe the channel.
            let trade = channel
                .query(payment.id.as_str())
                .await
                .map_err(unavailable)?;
            if trade.state == TradeState::Paid {
                let paid = apply_trade_with(state, Some(&order), payment, &trade).await?;
                return Err(FlowError::InvalidState(format!(
                    "payment is {} and cannot be closed",
                    paid.status
                )));
            }
            return Err(FlowError::ChannelRejected(format!("{code}: {message}")));
        }
        Err(e) => return Err(unavailable(e)),
    }
    move_to(
        state,
        &payment,
        PaymentEvent::Closed,
        TransitionPatch::default(),
        reason,
    )
    .await
}
