//! Merchant notifications that were not acknowledged: listing them and
//! sending one again. Shared by the merchant API (`/v1/events`), the admin
//! API (`/admin/events`) and `paymux notify`.
//!
//! An event whose retry schedule ran out is dead-lettered: the notifier stops
//! sending it. Once the merchant's endpoint works again, a retry puts it back
//! on the schedule, due at once and with the whole schedule ahead of it. An
//! acknowledged event is never sent again.

use chrono::{DateTime, Utc};
use paymux_store::{OutboxEvent, Store, StoreError};
use serde_json::{json, Value};

use crate::api::view;
use crate::error::FlowError;

/// The most events one listing returns.
pub const MAX_LIMIT: u32 = 500;

/// Which unacknowledged events to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Given up on: the retry schedule ran out.
    Dead,
    /// Dead ones and those still being retried.
    Undelivered,
}

impl Filter {
    /// `dead` or `undelivered` (the default when absent).
    pub fn parse(s: Option<&str>) -> Result<Filter, FlowError> {
        match s {
            None | Some("undelivered") => Ok(Filter::Undelivered),
            Some("dead") => Ok(Filter::Dead),
            Some(other) => Err(FlowError::Invalid(format!(
                "status: must be \"dead\" or \"undelivered\", not {other:?}"
            ))),
        }
    }
}

/// Checks a requested page size: 1 to [`MAX_LIMIT`], 100 when absent.
pub fn limit(requested: Option<u32>) -> Result<u32, FlowError> {
    match requested {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(FlowError::Invalid(format!(
            "limit: must be between 1 and {MAX_LIMIT}, not {n}"
        ))),
    }
}

/// Unacknowledged events, oldest first: one merchant's, or everyone's.
pub async fn list(
    store: &dyn Store,
    merchant_id: Option<&str>,
    filter: Filter,
    limit: u32,
) -> Result<Vec<OutboxEvent>, FlowError> {
    Ok(store
        .undelivered_events(merchant_id, filter == Filter::Dead, limit)
        .await?)
}

/// Puts an unacknowledged event back on the delivery schedule. With a
/// merchant, only that merchant's events are found (others' look missing).
pub async fn retry(
    store: &dyn Store,
    merchant_id: Option<&str>,
    event_id: &str,
    now: DateTime<Utc>,
) -> Result<OutboxEvent, FlowError> {
    match store.event(event_id).await? {
        Some(e) if merchant_id.is_none_or(|m| m == e.merchant_id) => {}
        _ => return Err(FlowError::NotFound),
    }
    match store.retry_event(event_id, now).await {
        Ok(e) => Ok(e),
        Err(StoreError::Invalid(_)) => Err(FlowError::InvalidState(format!(
            "event {event_id} was already delivered and acknowledged; it is never sent again"
        ))),
        Err(StoreError::NotFound(_)) => Err(FlowError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// An event's delivery record, as the APIs and `paymux notify list --json` show it.
pub fn view(e: &OutboxEvent) -> Value {
    json!({
        "id": e.id,
        "object": "event_delivery",
        "type": e.event_type,
        "merchant_id": e.merchant_id,
        "payment_id": e.payment_id.as_str(),
        "refund_id": e.refund_id,
        "notify_url": e.notify_url,
        "created_at": view::time(e.created_at),
        "status": if e.delivered_at.is_some() { "delivered" } else if e.dead { "dead" } else { "retrying" },
        "attempts": e.attempts,
        "next_attempt_at": (!e.dead && e.delivered_at.is_none()).then(|| view::time(e.next_attempt_at)),
        "last_error": e.last_error,
    })
}
