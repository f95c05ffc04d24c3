//! Reconciliation (对账): a channel account's bill of one China-time day
//! matched against paymux's payments and refunds, every difference
//! classified ([`classify::Kind`]), and what can be settled settled.
//!
//! The bill is downloaded to disk and read on a blocking thread, its
//! records passed through a bounded queue, so a bill of millions of rows is
//! matched in bounded memory: what stays in memory is the set of ids the
//! bill named (to find what it lacks) and at most [`MAX_LISTED`]
//! differences. Nothing is settled until the whole bill has been read and
//! has agreed with its own summary: a bill that turns out broken changes
//! nothing.

pub mod classify;
pub mod http;
pub mod report;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use paymux_channels::bill::{BillFile, BillRecord};
use paymux_channels::{Channel, ChannelError};
use paymux_core::{new_id, PaymentId, PaymentStatus};
use paymux_store::ledger::FeePosted;
use paymux_store::{ChannelAccount, Payment, ReconciliationRun, RunStatus, SettledQuery};
use serde_json::json;
use tokio::sync::mpsc;

use self::classify::{BilledRefund, BilledTrade, Discrepancy, Kind};
use crate::error::FlowError;
use crate::{flow, AppState};

/// Differences a run lists at most (it counts them all).
pub const MAX_LISTED: usize = 10_000;
/// Bill records read ahead of the matching.
const RECORD_QUEUE: usize = 1024;
/// Payments or refunds read per page of paymux's side.
const PAGE: u32 = 500;

// The China-time days runs are for.
pub use paymux_core::clock::{china_date, china_day};

/// Starts a run for `account` and `date` and carries it out.
pub async fn run(
    state: &AppState,
    account: &ChannelAccount,
    date: NaiveDate,
) -> Result<ReconciliationRun, FlowError> {
    let run = new_run(state, account, date, "manual");
    state.store.insert_reconciliation(&run).await?;
    Ok(carry_out(state, account, run).await?)
}

pub(crate) fn new_run(
    state: &AppState,
    account: &ChannelAccount,
    date: NaiveDate,
    trigger: &str,
) -> ReconciliationRun {
    ReconciliationRun {
        id: new_id("rec"),
        merchant_id: account.merchant_id.clone(),
        channel_account_id: account.id.clone(),
        channel: account.channel,
        bill_date: date,
        trigger: trigger.into(),
        status: RunStatus::Running,
        matched: 0,
        discrepancy_count: 0,
        discrepancies: json!([]),
        error: None,
        started_at: now_micros(state),
        finished_at: None,
    }
}

/// The time to the microsecond, as the store keeps it, so a run reads back
/// exactly as it was answered.
fn now_micros(state: &AppState) -> DateTime<Utc> {
    state.clock.now().trunc_subsecs(6)
}

/// Matches, settles, and records how the run ended (a failure included:
/// it is stored with its error, not returned as one).
pub(crate) async fn carry_out(
    state: &AppState,
    account: &ChannelAccount,
    mut run: ReconciliationRun,
) -> Result<ReconciliationRun, paymux_store::StoreError> {
    let channel = account.channel.as_str();
    match reconcile(state, account, run.bill_date).await {
        Ok(found) => {
            run.status = RunStatus::Succeeded;
            run.matched = found.matched;
            run.discrepancy_count = found.count;
            for (kind, n) in &found.by_kind {
                metrics::counter!("paymux_reconciliation_discrepancies_total",
                    "channel" => channel, "kind" => kind.as_str())
                .increment(*n);
            }
            run.discrepancies = serde_json::to_value(&found.listed).unwrap_or_else(|_| json!([]));
            if found.count > 0 {
                tracing::warn!(
                    run_id = %run.id, account = %account.id, date = %run.bill_date,
                    discrepancies = found.count, matched = found.matched,
                    "RECONCILIATION: the channel's bill and paymux differ"
                );
            } else {
                tracing::info!(run_id = %run.id, account = %account.id, date = %run.bill_date,
                    matched = found.matched, "reconciliation: the bill agrees");
            }
        }
        Err(e) => {
            run.status = RunStatus::Failed;
            run.error = Some(e.to_string());
            tracing::error!(run_id = %run.id, account = %account.id, date = %run.bill_date,
                error = %e, "reconciliation failed");
        }
    }
    metrics::counter!("paymux_reconciliation_runs_total",
        "channel" => channel, "status" => run.status.as_str())
    .increment(1);
    run.finished_at = Some(now_micros(state));
    state.store.finish_reconciliation(&run).await?;
    Ok(run)
}

#[derive(Default)]
struct Found {
    matched: i64,
    count: i64,
    /// Every difference counted by kind, listed or not.
    by_kind: HashMap<Kind, u64>,
    listed: Vec<Discrepancy>,
    /// Open payments the bill says were paid, with their billed fee:
    /// settled once the bill is read.
    to_settle: Vec<(usize, Payment, i64)>,
}

impl Found {
    fn add(&mut self, d: Discrepancy) -> Option<usize> {
        self.count += 1;
        *self.by_kind.entry(d.kind).or_default() += 1;
        if self.listed.len() >= MAX_LISTED {
            return None;
        }
        self.listed.push(d);
        Some(self.listed.len() - 1)
    }
}

async fn reconcile(
    state: &AppState,
    account: &ChannelAccount,
    date: NaiveDate,
) -> Result<Found, FlowError> {
    let client = state
        .channels
        .client(account)
        .map_err(|e| FlowError::ChannelNotConfigured(e.to_string()))?;
    if !client.reads_bills() {
        return Err(FlowError::Invalid(format!(
            "paymux does not read {} bills yet",
            account.channel
        )));
    }
    let file = client.bill(date).await.map_err(flow::unavailable)?;
    let (reader, mut rx) = read(file);

    let mut found = Found::default();
    // Every paid trade the bill names, with the fee to post for it once the
    // bill is known to be whole (0: none, it did not agree).
    let mut billed_fees: HashMap<String, i64> = HashMap::new();
    let mut seen_refunds = HashSet::new();
    while let Some(record) = rx.recv().await {
        let record = record.map_err(|e| FlowError::ChannelRejected(format!("the bill: {e}")))?;
        match record {
            BillRecord::Payment {
                out_trade_no,
                channel_trade_no,
                amount,
                currency,
                fee_milli,
            } => {
                // The channel rounds each fee to the minor unit, half up.
                let fee = (fee_milli + 500) / 1000;
                let ours = match PaymentId::parse(&out_trade_no) {
                    Ok(id) => state.store.payment(&id).await?,
                    Err(_) => None,
                };
                let billed = BilledTrade {
                    out_trade_no: &out_trade_no,
                    channel_trade_no: &channel_trade_no,
                    amount,
                    currency: &currency,
                };
                let mut fee_due = 0;
                match classify::paid_trade(account, &billed, ours.as_ref()) {
                    None => {
                        found.matched += 1;
                        fee_due = fee;
                    }
                    Some(d) => {
                        let open = d.kind == Kind::MissingHere && d.ours.is_some();
                        if let (Some(at), true, Some(p)) = (found.add(d), open, ours) {
                            found.to_settle.push((at, p, fee));
                        }
                    }
                }
                billed_fees.insert(out_trade_no, fee_due);
            }
            BillRecord::Refund {
                out_trade_no,
                out_refund_no,
                amount,
                currency,
                succeeded,
                ..
            } => {
                let ours = state.store.refund(&out_refund_no).await?;
                let billed = BilledRefund {
                    out_trade_no: &out_trade_no,
                    out_refund_no: &out_refund_no,
                    amount,
                    currency: &currency,
                    succeeded,
                };
                match classify::billed_refund(account, &billed, ours.as_ref()) {
                    None => found.matched += 1,
                    Some(d) => {
                        found.add(d);
                    }
                }
                seen_refunds.insert(out_refund_no);
            }
        }
    }
    finished(reader).await?;

    lacking_at_channel(
        state,
        account,
        date,
        &billed_fees,
        &seen_refunds,
        &mut found,
    )
    .await?;
    for (at, payment, fee) in std::mem::take(&mut found.to_settle) {
        let id = payment.id.to_string();
        let (resolution, settled) = settle(state, client.as_ref(), payment).await;
        found.listed[at].resolution = Some(resolution);
        if settled {
            billed_fees.insert(id, fee);
        }
    }
    post_fees(state, &billed_fees, &mut found).await?;
    Ok(found)
}

/// The blocking thread reading a bill.
type Reader = tokio::task::JoinHandle<Result<(), ChannelError>>;
/// The bill's records as the reader passes them on.
type Records = mpsc::Receiver<Result<BillRecord, ChannelError>>;

/// Reads the bill's records on a blocking thread into a bounded queue; the
/// first error ends them.
fn read(file: BillFile) -> (Reader, Records) {
    let (tx, rx) = mpsc::channel(RECORD_QUEUE);
    let reader = tokio::task::spawn_blocking(move || {
        for record in file.records()? {
            let failed = record.is_err();
            if tx.blocking_send(record).is_err() || failed {
                break;
            }
        }
        Ok(())
    });
    (reader, rx)
}

async fn finished(reader: Reader) -> Result<(), FlowError> {
    reader
        .await
        .map_err(|e| FlowError::Internal(crate::ServerError::Config(format!("bill reader: {e}"))))?
        .map_err(|e| FlowError::ChannelRejected(format!("the bill: {e}")))
}

/// Once the bill is known to be whole: the fee of every payment that agreed
/// with it goes into the ledger, once; a fee that differs from one posted
/// before is reported.
async fn post_fees(
    state: &AppState,
    billed_fees: &HashMap<String, i64>,
    found: &mut Found,
) -> Result<(), FlowError> {
    let now = state.clock.now();
    for (out_trade_no, &fee) in billed_fees {
        if fee <= 0 {
            continue;
        }
        let Ok(id) = PaymentId::parse(out_trade_no) else {
            continue;
        };
        let FeePosted::Differs { posted } = state.store.post_fee(&id, fee, now).await? else {
            continue;
        };
        // Rare: read the payment only to describe the difference.
        let p = state.store.payment(&id).await?.ok_or(FlowError::NotFound)?;
        let currency = p.amount.currency.as_str();
        found.add(Discrepancy {
            kind: Kind::FeeMismatch,
            payment_id: Some(out_trade_no.clone()),
            refund_id: None,
            channel_trade_no: p.channel_trade_no.clone(),
            ours: Some(json!({"fee": posted, "currency": currency})),
            theirs: Some(json!({"fee": fee, "currency": currency})),
            resolution: Some("the fee posted first stays in the books".into()),
        });
    }
    Ok(())
}

/// What paymux settled that day that the bill does not name.
async fn lacking_at_channel(
    state: &AppState,
    account: &ChannelAccount,
    date: NaiveDate,
    billed_fees: &HashMap<String, i64>,
    seen_refunds: &HashSet<String>,
    found: &mut Found,
) -> Result<(), FlowError> {
    let (from, to) = china_day(date);
    let mut q = SettledQuery {
        channel_account_id: account.id.clone(),
        from,
        to,
        after: None,
        limit: PAGE,
    };
    loop {
        let page = state.store.settled_payments(&q).await?;
        for p in &page {
            if !billed_fees.contains_key(p.id.as_str()) {
                found.add(Discrepancy {
                    kind: Kind::MissingAtChannel,
                    payment_id: Some(p.id.to_string()),
                    refund_id: None,
                    channel_trade_no: p.channel_trade_no.clone(),
                    ours: Some(classify::ours_payment(p)),
                    theirs: None,
                    resolution: None,
                });
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => q.after = Some(last.id.to_string()),
            _ => break,
        }
    }
    q.after = None;
    loop {
        let page = state.store.settled_refunds(&q).await?;
        for r in &page {
            if !seen_refunds.contains(&r.id) {
                found.add(Discrepancy {
                    kind: Kind::RefundMismatch,
                    payment_id: Some(r.payment_id.to_string()),
                    refund_id: Some(r.id.clone()),
                    channel_trade_no: r.channel_refund_no.clone(),
                    ours: Some(classify::ours_refund(r)),
                    theirs: None,
                    resolution: None,
                });
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => q.after = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(())
}

/// Settles an open payment the bill says was paid: the channel is asked
/// and its answer applied like any query's, through the normal transition
/// (which writes the merchant's event). Says what happened, and whether
/// the payment is now succeeded.
async fn settle(state: &AppState, client: &dyn Channel, payment: Payment) -> (String, bool) {
    let trade = match client.query(payment.id.as_str()).await {
        Ok(trade) => trade,
        Err(e) => {
            return (
                format!("not settled: querying the channel failed: {e}"),
                false,
            )
        }
    };
    match flow::apply_trade(state, payment, &trade).await {
        Ok(p) if p.status == PaymentStatus::Succeeded => (
            "settled: the channel's query says paid; the payment is now succeeded \
             and the merchant is notified"
                .into(),
            true,
        ),
        Ok(p) => (
            format!(
                "not settled: the channel's query says {:?}; the payment stays {}",
                trade.state, p.status
            ),
            false,
        ),
        Err(e) => (format!("not settled: {e}"), false),
    }
}
