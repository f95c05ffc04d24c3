//! Background workers that are not about delivering notifications.

pub mod audit;
pub mod checkouts;
pub mod groups;
pub mod poller;
pub mod reconcile;
pub mod refund_checks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use paymux_store::StoreError;
use tokio::sync::Semaphore;

use crate::AppState;

/// Items claimed per round.
const BATCH: u32 = 32;

/// The loop both status-check workers run: claim due items under a lease
/// (`claim(state, now, first_check_before, lease, limit)`), check each with
/// at most `[poller] concurrency` in flight, and come back at once after a
/// full batch or after `[poller] interval_ms` otherwise. Runs until its
/// task is aborted, which aborts the checks in flight with it.
pub(crate) async fn run_checks<T, Claim, ClaimFut, Check, CheckFut>(
    state: AppState,
    what: &'static str,
    lease: chrono::Duration,
    claim: Claim,
    check: Check,
) where
    T: Send + 'static,
    Claim: Fn(AppState, DateTime<Utc>, DateTime<Utc>, chrono::Duration, u32) -> ClaimFut,
    ClaimFut: Future<Output = Result<Vec<T>, StoreError>>,
    Check: Fn(AppState, T) -> CheckFut,
    CheckFut: Future<Output = ()> + Send + 'static,
{
    let cfg = state.config.poller.clone();
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let first_delay = secs(cfg.first_delay_secs);
    // Owned here, so that ending this loop (the server stopping) ends the
    // checks in flight too.
    let mut checks = tokio::task::JoinSet::new();
    loop {
        while checks.try_join_next().is_some() {}
        let now = state.clock.now();
        let first_check_before = now
            .checked_sub_signed(first_delay)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match claim(state.clone(), now, first_check_before, lease, BATCH).await {
            Ok(due) => {
                let full = due.len() >= BATCH as usize;
                for item in due {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let checking = check(state.clone(), item);
                    checks.spawn(async move {
                        checking.await;
                        drop(permit);
                    });
                }
                // A full batch means more may be due right now.
                if full {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "{what}: cannot read what is due"),
        }
        tokio::time::sleep(Duration::from_millis(cfg.interval_ms)).await;
    }
}

pub(crate) use paymux_core::clock::{later, seconds as secs};
