//! Settles checkouts: refunds attempts paid after their checkout was won
//! and closes the other attempts of won checkouts (see [`checkouts`]).
//! Woken by every success of an attempt, and every `[poller] interval_ms`
//! in any case, so whatever a crash or an unreachable channel left is taken
//! up again. Several nodes may settle at once: every step is idempotent.

use std::time::Duration;

use crate::{checkouts, AppState};

pub async fn run(state: AppState) {
    let interval = Duration::from_millis(state.config.poller.interval_ms.max(1));
    loop {
        match checkouts::settle(&state).await {
            Ok(done) if done != checkouts::Settled::default() => {
                tracing::info!(
                    duplicates_refunded = done.duplicates_refunded,
                    checkouts_closed = done.checkouts_closed,
                    "checkouts settled"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "checkouts: cannot read what to settle"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = state.checkout_wakeup.notified() => {}
        }
    }
}
