//! The audit sealer: chains the trail's new rows (see
//! [`paymux_store::audit`]) every `[audit] seal_interval_ms`, a page at a
//! time until none is left, and logs the chain's head every
//! `head_log_interval_secs`. Every node runs one; the store admits one
//! sealer at a time.

use std::time::Duration;

use crate::AppState;

/// Rows sealed per transaction.
const PAGE: u32 = 1000;

pub async fn run(state: AppState) {
    let interval = Duration::from_millis(state.config.audit.seal_interval_ms.max(10));
    let head_every = Duration::from_secs(state.config.audit.head_log_interval_secs.max(1));
    let mut head_logged: Option<std::time::Instant> = None;
    loop {
        if head_logged.is_none_or(|at| at.elapsed() >= head_every) {
            log_head(&state).await;
            head_logged = Some(std::time::Instant::now());
        }
        loop {
            match state.store.seal_audit(PAGE).await {
                Ok(n) if n == u64::from(PAGE) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "audit sealer: cannot seal the trail");
                    break;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Writes the chain's head to the log, so a copy outside the database
/// (the log store) can anchor the chain: rewriting the trail from some row
/// on would change a head already logged.
async fn log_head(state: &AppState) {
    match state.store.audit_head().await {
        Ok(Some(head)) => tracing::info!(
            chain_pos = head.chain_pos.unwrap_or_default(),
            hash = head.hash.as_deref().unwrap_or_default(),
            "audit chain head"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "audit sealer: cannot read the chain head"),
    }
}
