//! Fails group buys past their deadline and settles failed ones (closes
//! their open members, refunds their paid ones; see [`groups`]), every
//! `[poller] interval_ms`. Several nodes may run it at once: every step is
//! idempotent.

use std::time::Duration;

use crate::{groups, AppState};

pub async fn run(state: AppState) {
    let interval = Duration::from_millis(state.config.poller.interval_ms.max(1));
    loop {
        match groups::settle(&state).await {
            Ok(done) if done != groups::Settled::default() => {
                tracing::info!(
                    failed = done.failed,
                    settled = done.settled,
                    "group buys settled"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "group buys: cannot read what to settle"),
        }
        tokio::time::sleep(interval).await;
    }
}
