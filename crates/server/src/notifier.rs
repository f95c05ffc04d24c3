//! Delivers outbox events to merchants' `notify_url`s.
//!
//! An event is written in the same transaction as the change it reports, so a
//! crash between the change and the delivery loses nothing: the next worker
//! (on this node after a restart, or on another node) finds it due. A 2xx
//! answer acknowledges; an acknowledged event is never sent again. Failures
//! are retried on the configured schedule; after the last one the event is
//! marked dead and stays for an operator to see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderValue;
use paymux_store::{EventClaim, OutboxEvent};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::signing::{self, HEADER_APP_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use crate::AppState;

/// How long a claimed event stays reserved beyond the delivery timeout: the
/// delivery always ends (by its timeout) before its lease does, and the
/// lease is renewed while it runs, so an event being delivered is never
/// claimed a second time. A worker that dies mid-delivery delays that event
/// by at most the lease.
const LEASE_MARGIN_SECS: u64 = 5;
const BATCH: u32 = 64;
/// After a claim that found less than it could take, the next one waits at
/// least this long: waking on every new event would otherwise re-read the
/// backlog of merchants whose slots are full thousands of times a second.
const CLAIM_SPACING: Duration = Duration::from_millis(5);

/// Deliveries in flight, per merchant: the claim leaves out merchants whose
/// slots are full, so one merchant's dead endpoint holds at most
/// `per_merchant_concurrency` of the `concurrency` slots.
#[derive(Default)]
struct InFlight {
    total: usize,
    by_merchant: HashMap<String, usize>,
}

/// One delivery's slot, given back when the delivery ends however it ends
/// (finished, panicked or aborted with the server).
struct Slot {
    in_flight: Arc<Mutex<InFlight>>,
    merchant: String,
    finished: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        f.total = f.total.saturating_sub(1);
        if let Some(n) = f.by_merchant.get_mut(&self.merchant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                f.by_merchant.remove(&self.merchant);
            }
        }
        drop(f);
        self.finished.notify_one();
    }
}

pub async fn run(state: AppState) {
    let cfg = state.config.notifier.clone();
    let slots = cfg.concurrency.max(1);
    let per_merchant = cfg.per_merchant_concurrency.clamp(1, slots);
    let lease = chrono::Duration::seconds((cfg.timeout_secs.max(1) + LEASE_MARGIN_SECS) as i64);
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    let finished = Arc::new(Notify::new());
    let mut deliveries = JoinSet::new();
    loop {
        // Reap finished deliveries so the set stays as small as what runs.
        while deliveries.try_join_next().is_some() {}
        let (free, skip) = {
            let f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let skip: Vec<String> = f
                .by_merchant
                .iter()
                .filter(|(_, n)| **n >= per_merchant)
                .map(|(m, _)| m.clone())
                .collect();
            (slots.saturating_sub(f.total), skip)
        };
        if free == 0 {
            finished.notified().await;
            continue;
        }
        // Claim no more than can start now: a claimed event never waits for
        // a slot while its lease runs out.
        let claim = EventClaim {
            limit: (free as u32).min(BATCH),
            per_merchant: per_merchant as u32,
            skip_merchants: skip,
        };
        let now = state.clock.now();
        let asked = claim.limit as usize;
        match state.store.claim_events(now, lease, &claim).await {
            Ok(events) if !events.is_empty() => {
                let full = events.len() >= asked;
                for event in events {
                    let merchant = event.merchant_id.clone();
                    let has_slot = {
                        let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                        let n = f.by_merchant.entry(merchant.clone()).or_default();
                        let has_slot = *n < per_merchant;
                        if has_slot {
                            *n += 1;
                            f.total += 1;
                        }
                        has_slot
                    };
                    if !has_slot {
                        // Claimed in the same round as the merchant's last
                        // free slot: release it for a later round.
                        let _ = state.store.renew_event_lease(&event.id, now).await;
                        continue;
                    }
                    let slot = Slot {
                        in_flight: in_flight.clone(),
                        merchant,
                        finished: finished.clone(),
                    };
                    let state = state.clone();
                    deliveries.spawn(async move {
                        let _slot = slot;
                        deliver_leased(&state, event, lease).await;
                    });
                }
                if full {
                    continue; // there may be more due right now
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "notifier: cannot read the outbox"),
        }
        let claimed_at = tokio::time::Instant::now();
        tokio::select! {
            _ = state.outbox_wakeup.notified() => {}
            _ = finished.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(cfg.poll_interval_ms)) => {}
        }
        tokio::time::sleep_until(claimed_at + CLAIM_SPACING).await;
    }
}

/// Delivers one claimed event, renewing its lease every third of it while
/// the delivery runs.
async fn deliver_leased(state: &AppState, event: OutboxEvent, lease: chrono::Duration) {
    let renew_every = (lease / 3).to_std().unwrap_or(Duration::from_secs(1));
    let id = event.id.clone();
    let delivery = deliver(state, event);
    tokio::pin!(delivery);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    loop {
        tokio::select! {
            () = &mut delivery => return,
            _ = ticker.tick() => {
                let until = crate::workers::later(state.clock.now(), lease);
                if let Err(e) = state.store.renew_event_lease(&id, until).await {
                    tracing::warn!(event_id = %id, error = %e, "notifier: cannot renew a lease");
                }
            }
        }
    }
}

/// One delivery attempt, and its bookkeeping.
pub async fn deliver(state: &AppState, event: OutboxEvent) {
    let attempts = event.attempts + 1;
    let result = send(state, &event).await;
    let now = state.clock.now();
    let stored = match &result {
        Ok(Sent::NotReceived) => {
            metrics::counter!("paymux_notifications_total", "result" => "not_received")
                .increment(1);
            tracing::debug!(event_id = %event.id, event_type = %event.event_type, "event type not received by the app: not sent");
            state
                .store
                .mark_event_delivered(&event.id, event.attempts, now)
                .await
        }
        Ok(Sent::Delivered) => {
            metrics::counter!("paymux_notifications_total", "result" => "delivered").increment(1);
            tracing::info!(event_id = %event.id, payment_id = %event.payment_id, attempts, "merchant notified");
            state
                .store
                .mark_event_delivered(&event.id, attempts, now)
                .await
        }
        Err(error) => match state.config.notifier.delay_after(attempts as usize) {
            Some(delay) => {
                metrics::counter!("paymux_notifications_total", "result" => "retry").increment(1);
                tracing::warn!(event_id = %event.id, merchant_id = %event.merchant_id, attempts, %error, retry_in = ?delay, "merchant notification failed");
                let next = crate::workers::later(
                    now,
                    chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(6)),
                );
                state
                    .store
                    .mark_event_failed(&event.id, attempts, next, error.public)
                    .await
            }
            None => {
                metrics::counter!("paymux_notifications_total", "result" => "dead").increment(1);
                tracing::error!(event_id = %event.id, merchant_id = %event.merchant_id, attempts, %error, "merchant notification abandoned");
                state
                    .store
                    .mark_event_dead(&event.id, attempts, error.public)
                    .await
            }
        },
    };
    if let Err(e) = stored {
        // The lease runs out and the event is tried again: at-least-once.
        tracing::error!(event_id = %event.id, error = %e, "notifier: cannot record the attempt");
    }
}

/// Why a delivery failed, in two forms: the full cause for the operator's
/// log, and a generic text for the merchant's `last_error`, which must not
/// tell a scanner whether something listened at an address.
struct Failure {
    detail: String,
    public: &'static str,
}

impl Failure {
    fn internal(detail: impl Into<String>) -> Self {
        Failure {
            detail: detail.into(),
            public: "not delivered: paymux could not prepare the notification",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        300..=399 => "not delivered: notify_url answered a redirect, which is not followed",
        400..=499 => "not delivered: notify_url answered 4xx",
        _ => "not delivered: notify_url answered 5xx or another non-2xx status",
    }
}

/// The app whose secret signs an event: the one that created its payment,
/// or (for payments older than that record, or an app since removed) the
/// merchant's oldest.
async fn signing_app(
    state: &AppState,
    event: &OutboxEvent,
) -> Result<Option<paymux_store::App>, paymux_store::StoreError> {
    let app_id = match &event.app_id {
        Some(app_id) => Some(app_id.clone()),
        None => state
            .store
            .payment(&event.payment_id)
            .await?
            .and_then(|p| p.app_id),
    };
    if let Some(app_id) = app_id {
        if let Some(app) = state.directory.app(&*state.store, &app_id).await? {
            return Ok(Some(app));
        }
    }
    Ok(state
        .store
        .merchant_apps(&event.merchant_id)
        .await?
        .into_iter()
        .next())
}

/// What became of a delivery that did not fail.
enum Sent {
    Delivered,
    /// The app does not receive events of this type: not sent, and done.
    NotReceived,
}

async fn send(state: &AppState, event: &OutboxEvent) -> Result<Sent, Failure> {
    let url = reqwest::Url::parse(&event.notify_url).map_err(|e| Failure {
        detail: format!("notify_url does not parse: {e}"),
        public: "not delivered: notify_url is not a valid URL",
    })?;
    let blocked = |detail: String| Failure {
        detail,
        public: "not delivered: notify_url is not an allowed destination",
    };

    let app = signing_app(state, event)
        .await
        .map_err(|e| Failure::internal(e.to_string()))?
        .ok_or_else(|| Failure::internal("merchant has no app to sign with"))?;
    if !crate::event_types::receives(&app, &event.event_type) {
        return Ok(Sent::NotReceived);
    }
    let body = serde_json::to_vec(&event.payload).map_err(|e| Failure::internal(e.to_string()))?;
    let timestamp = state.clock.now().timestamp().to_string();
    let nonce = signing::new_nonce();
    let signature = signing::sign_response(&app.secret, &timestamp, &nonce, &body);
    let response = state
        .http
        .post(url)
        .map_err(|b| blocked(b.to_string()))?
        .header("content-type", "application/json")
        .header(
            HEADER_APP_ID,
            HeaderValue::from_str(&app.app_id).map_err(|e| Failure::internal(e.to_string()))?,
        )
        .header(HEADER_TIMESTAMP, timestamp)
        .header(HEADER_NONCE, nonce)
        .header(HEADER_SIGNATURE, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| match crate::outbound::blocked_cause(&e) {
            Some(b) => blocked(b.to_string()),
            None => Failure {
                detail: format!("request failed: {e:?}"),
                public: "not delivered: no answer from notify_url",
            },
        })?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(Sent::Delivered)
    } else {
        Err(Failure {
            detail: format!("merchant answered HTTP {status}"),
            public: status_text(status),
        })
    }
}
