//! The daily reconciliation: from `[reconcile] hour` (China time), every
//! enabled account whose channel's bills paymux reads is reconciled for
//! yesterday, once across all nodes (the store hands each account's day to
//! one of them), a failed run again after `retry_failed_secs`.

use std::time::Duration;

use chrono::Timelike;
use paymux_store::{ReconciliationRun, RunStatus};

use crate::reconcile::{self, china_date};
use crate::AppState;

pub async fn run(state: AppState) {
    let cfg = state.config.reconcile.clone();
    loop {
        if let Err(e) = round(&state).await {
            tracing::error!(error = %e, "daily reconciliation: cannot read what is due");
        }
        tokio::time::sleep(Duration::from_secs(cfg.check_interval_secs.max(1))).await;
    }
}

/// One look: reconciles what is due now.
async fn round(state: &AppState) -> Result<(), paymux_store::StoreError> {
    let cfg = &state.config.reconcile;
    let now = state.clock.now();
    let china_now = now.with_timezone(&paymux_core::clock::china_standard_time());
    if china_now.hour() < cfg.hour {
        return Ok(());
    }
    let Some(yesterday) = china_date(now).pred_opt() else {
        return Ok(());
    };
    let retry_before = now - paymux_core::clock::seconds(cfg.retry_failed_secs);
    for account in state.store.list_channel_accounts(None).await? {
        if !account.enabled {
            continue;
        }
        let reads = state
            .channels
            .client(&account)
            .is_ok_and(|c| c.reads_bills());
        if !reads {
            continue;
        }
        // A read first: a day made or being made needs no claim (a write)
        // at every round.
        let taken = state
            .store
            .reconciliations(&account.id, yesterday)
            .await?
            .iter()
            .any(|r| r.trigger == "daily" && r.status != RunStatus::Failed);
        if taken {
            continue;
        }
        let run = reconcile::new_run(state, &account, yesterday, "daily");
        let Some(id) = state
            .store
            .claim_daily_reconciliation(&run, retry_before)
            .await?
        else {
            continue;
        };
        let run = ReconciliationRun { id, ..run };
        reconcile::carry_out(state, &account, run).await?;
    }
    Ok(())
}
