//! The audit sealer: chains the trail's new rows (see
//! [`paymux_store::audit`]) every `[audit] seal_interval_ms`, a page at a
//! time until none is left. Every node runs one; the store admits one
//! sealer at a time.

use std::time::Duration;

use crate::AppState;

/// Rows sealed per transaction.
const PAGE: u32 = 1000;

pub async fn run(state: AppState) {
    let interval = Duration::from_millis(state.config.audit.seal_interval_ms.max(10));
    loop {
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
