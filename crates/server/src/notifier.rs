//! Delivers outbox events to merchants' `notify_url`s.
//!
//! An event is written in the same transaction as the change it reports, so a
//! crash between the change and the delivery loses nothing: the next worker
//! (on this node after a restart, or on another node) finds it due. A 2xx
//! answer acknowledges; an acknowledged event is never sent again. Failures
//! are retried on the configured schedule; after the last one the event is
//! marked dead and stays for an operator to see.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use paymux_store::OutboxEvent;
use tokio::sync::Semaphore;

use crate::signing::{self, HEADER_APP_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use crate::AppState;

/// How long a claimed event stays reserved beyond the delivery timeout. A
/// worker that dies mid-delivery delays that event by at most the lease.
const LEASE_MARGIN_SECS: u64 = 5;
const BATCH: u32 = 64;

pub async fn run(state: AppState) {
    let cfg = state.config.notifier.clone();
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let lease = chrono::Duration::seconds((cfg.timeout_secs + LEASE_MARGIN_SECS) as i64);
    loop {
        let now = state.clock.now();
        match state.store.claim_due_events(now, lease, BATCH).await {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        deliver(&state, event).await;
                        drop(permit);
                    });
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "notifier: cannot read the outbox"),
        }
        tokio::select! {
            _ = state.outbox_wakeup.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(cfg.poll_interval_ms)) => {}
        }
    }
}

/// One delivery attempt, and its bookkeeping.
pub async fn deliver(state: &AppState, event: OutboxEvent) {
    let attempts = event.attempts + 1;
    let result = send(state, &event).await;
    let now = state.clock.now();
    let stored = match &result {
        Ok(()) => {
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
                tracing::warn!(event_id = %event.id, attempts, %error, retry_in = ?delay, "merchant notification failed");
                let next =
                    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(6));
                state
                    .store
                    .mark_event_failed(&event.id, attempts, next, error)
                    .await
            }
            None => {
                metrics::counter!("paymux_notifications_total", "result" => "dead").increment(1);
                tracing::error!(event_id = %event.id, attempts, %error, "merchant notification abandoned");
                state
                    .store
                    .mark_event_dead(&event.id, attempts, error)
                    .await
            }
        },
    };
    if let Err(e) = stored {
        // The lease runs out and the event is tried again: at-least-once.
        tracing::error!(event_id = %event.id, error = %e, "notifier: cannot record the attempt");
    }
}

async fn send(state: &AppState, event: &OutboxEvent) -> Result<(), String> {
    let apps = state
        .store
        .merchant_apps(&event.merchant_id)
        .await
        .map_err(|e| e.to_string())?;
    let app = apps.first().ok_or("merchant has no app to sign with")?;
    let body = serde_json::to_vec(&event.payload).map_err(|e| e.to_string())?;
    let timestamp = state.clock.now().timestamp().to_string();
    let nonce = signing::new_nonce();
    let signature = signing::sign_response(&app.secret, &timestamp, &nonce, &body);
    let response = state
        .http
        .post(&event.notify_url)
        .header("content-type", "application/json")
        .header(
            HEADER_APP_ID,
            HeaderValue::from_str(&app.app_id).map_err(|e| e.to_string())?,
        )
        .header(HEADER_TIMESTAMP, timestamp)
        .header(HEADER_NONCE, nonce)
        .header(HEADER_SIGNATURE, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "merchant answered HTTP {}",
            response.status().as_u16()
        ))
    }
}
