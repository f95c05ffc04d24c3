//! Decoding rows into model types, shared by both backends.
//!
//! Each backend stores timestamps, JSON and booleans its own way; [`Cols`]
//! hides that, so every row type is decoded by one function. Anything that
//! does not decode is [`StoreError::Corrupt`], never a panic.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use paymux_core::{Currency, Money, PaymentId};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::ledger::{AccountBalance, LedgerIssue, LedgerIssueKind, Posting};
use crate::model::{
    App, ChannelAccount, Checkout, CheckoutDuplicate, GroupBuy, IdempotencyRecord, Merchant,
    OutboxEvent, Payment, QrCode, ReconciliationRun, Refund,
};
use crate::{RequestKey, Result, StoreError};

/// Typed column access over one backend's row.
pub(crate) trait Cols {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn int32(&self, col: &str) -> Result<i32>;
    fn flag(&self, col: &str) -> Result<bool>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>>;
    fn ts(&self, col: &str) -> Result<DateTime<Utc>>;
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
    fn json(&self, col: &str) -> Result<serde_json::Value>;
    fn opt_json(&self, col: &str) -> Result<Option<serde_json::Value>>;
}

/// `row.try_get`, with a failure reported as corruption of that column.
pub(crate) fn get<'r, R, T>(row: &'r R, col: &str) -> Result<T>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

fn parse<T: FromStr>(col: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub(crate) fn merchant(r: &impl Cols) -> Result<Merchant> {
    Ok(Merchant {
        id: r.text("id")?,
        name: r.text("name")?,
        created_at: r.ts("created_at")?,
    })
}

pub(crate) fn app(r: &impl Cols) -> Result<App> {
    Ok(App {
        app_id: r.text("app_id")?,
        merchant_id: r.text("merchant_id")?,
        secret: r.text("secret")?,
        created_at: r.ts("created_at")?,
        previous_secret: r.opt_text("previous_secret")?,
        previous_secret_expires_at: r.opt_ts("previous_secret_expires_at")?,
        request_key: match (
            r.opt_text("request_key_alg")?,
            r.opt_text("request_key_pem")?,
        ) {
            (Some(alg), Some(pem)) => Some(RequestKey {
                alg: alg
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("apps.request_key_alg: {e}")))?,
                public_key_pem: pem,
            }),
            _ => None,
        },
        client_cert_sha256: r.opt_text("client_cert_sha256")?,
        event_types: r
            .opt_json("event_types")?
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| StoreError::Corrupt(format!("apps.event_types: {e}")))
            })
            .transpose()?,
    })
}

pub(crate) fn channel_account(r: &impl Cols) -> Result<ChannelAccount> {
    Ok(ChannelAccount {
        id: r.text("id")?,
        merchant_id: r.text("merchant_id")?,
        channel: parse("channel", &r.text("channel")?)?,
        config: r.json("config")?,
        sandbox: r.flag("sandbox")?,
        enabled: r.flag("enabled")?,
        created_at: r.ts("created_at")?,
    })
}

/// `amount_minor` and `currency` as money.
fn money(r: &impl Cols) -> Result<Money> {
    let currency = r.text("currency")?;
    let currency = Currency::parse(&currency)
        .map_err(|e| StoreError::Corrupt(format!("column currency: {e}")))?;
    Money::new(r.int("amount_minor")?, currency)
        .map_err(|e| StoreError::Corrupt(format!("column amount_minor: {e}")))
}

pub(crate) fn refund(r: &impl Cols) -> Result<Refund> {
    Ok(Refund {
        id: r.text("id")?,
        merchant_id: r.text("merchant_id")?,
        payment_id: payment_id("payment_id", &r.text("payment_id")?)?,
        merchant_refund_no: r.text("merchant_refund_no")?,
        amount: money(r)?,
        status: parse("status", &r.text("status")?)?,
        reason: r.opt_text("reason")?,
        notify_url: r.text("notify_url")?,
        request_hash: r.text("request_hash")?,
        channel_refund_no: r.opt_text("channel_refund_no")?,
        failure_reason: r.opt_text("failure_reason")?,
        refunded_at: r.opt_ts("refunded_at")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
    })
}

pub(crate) fn checkout(r: &impl Cols) -> Result<Checkout> {
    Ok(Checkout {
        id: r.text("id")?,
        merchant_id: r.text("merchant_id")?,
        app_id: r.text("app_id")?,
        merchant_order_no: r.text("merchant_order_no")?,
        amount: money(r)?,
        description: r.text("description")?,
        notify_url: r.text("notify_url")?,
        return_url: r.opt_text("return_url")?,
        metadata: r.json("metadata")?,
        request_hash: r.text("request_hash")?,
        cashier_token: r.text("cashier_token")?,
        winner_payment_id: r
            .opt_text("winner_payment_id")?
            .map(|id| payment_id("winner_payment_id", &id))
            .transpose()?,
        won_at: r.opt_ts("won_at")?,
        attempts_closed_at: r.opt_ts("attempts_closed_at")?,
        expires_at: r.ts("expires_at")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
    })
}

pub(crate) fn qr_code(r: &impl Cols) -> Result<QrCode> {
    let currency = r.text("currency")?;
    Ok(QrCode {
        id: r.text("id")?,
        merchant_id: r.text("merchant_id")?,
        app_id: r.text("app_id")?,
        name: r.text("name")?,
        description: r.text("description")?,
        amount: r.opt_int("amount_minor")?,
        currency: Currency::parse(&currency)
            .map_err(|e| StoreError::Corrupt(format!("column currency: {e}")))?,
        notify_url: r.text("notify_url")?,
        created_at: r.ts("created_at")?,
    })
}

pub(crate) fn group_buy(r: &impl Cols) -> Result<GroupBuy> {
    let currency = r.text("currency")?;
    Ok(GroupBuy {
        id: r.text("id")?,
        merchant_id: r.text("merchant_id")?,
        app_id: r.text("app_id")?,
        merchant_group_no: r.text("merchant_group_no")?,
        size: r.int32("size")?,
        amount: r.opt_int("amount_minor")?,
        currency: Currency::parse(&currency)
            .map_err(|e| StoreError::Corrupt(format!("column currency: {e}")))?,
        notify_url: r.text("notify_url")?,
        request_hash: r.text("request_hash")?,
        status: parse("status", &r.text("status")?)?,
        seats_taken: r.int32("seats_taken")?,
        paid_count: r.int32("paid_count")?,
        expires_at: r.ts("expires_at")?,
        succeeded_at: r.opt_ts("succeeded_at")?,
        failed_at: r.opt_ts("failed_at")?,
        settled_at: r.opt_ts("settled_at")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
    })
}

pub(crate) fn checkout_duplicate(r: &impl Cols) -> Result<CheckoutDuplicate> {
    Ok(CheckoutDuplicate {
        payment_id: payment_id("payment_id", &r.text("payment_id")?)?,
        checkout_id: r.text("checkout_id")?,
        refund_id: r.opt_text("refund_id")?,
        created_at: r.ts("created_at")?,
        resolved_at: r.opt_ts("resolved_at")?,
    })
}

pub(crate) fn reconciliation(r: &impl Cols) -> Result<ReconciliationRun> {
    let date = r.text("bill_date")?;
    Ok(ReconciliationRun {
        id: r.text("id")?,
        merchant_id: r.text("merchant_id")?,
        channel_account_id: r.text("channel_account_id")?,
        channel: parse("channel", &r.text("channel")?)?,
        bill_date: chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
            .map_err(|e| StoreError::Corrupt(format!("column bill_date: {e}")))?,
        trigger: r.text("trigger_kind")?,
        status: parse("status", &r.text("status")?)?,
        matched: r.int("matched")?,
        discrepancy_count: r.int("discrepancy_count")?,
        discrepancies: r.json("discrepancies")?,
        error: r.opt_text("error")?,
        started_at: r.ts("started_at")?,
        finished_at: r.opt_ts("finished_at")?,
    })
}

pub(crate) fn audit_entry(r: &impl Cols) -> Result<crate::audit::AuditEntry> {
    Ok(crate::audit::AuditEntry {
        seq: r.int("seq")?,
        at: r.ts("at")?,
        subject_kind: r.text("subject_kind")?,
        subject_id: r.text("subject_id")?,
        action: r.text("action")?,
        detail: r.text("detail")?,
        chain_pos: r.opt_int("chain_pos")?,
        prev_hash: r.opt_text("prev_hash")?,
        hash: r.opt_text("hash")?,
    })
}

pub(crate) fn posting(r: &impl Cols) -> Result<Posting> {
    Ok(Posting {
        txn_id: r.text("txn_id")?,
        account: parse("account", &r.text("account")?)?,
        merchant_id: r.text("merchant_id")?,
        channel_account_id: r.text("channel_account_id")?,
        currency: r.text("currency")?,
        debit: r.int("debit_minor")?,
        credit: r.int("credit_minor")?,
        payment_id: r.text("payment_id")?,
        refund_id: r.opt_text("refund_id")?,
        created_at: r.ts("created_at")?,
    })
}

pub(crate) fn account_balance(r: &impl Cols) -> Result<AccountBalance> {
    Ok(AccountBalance {
        channel_account_id: r.text("channel_account_id")?,
        channel: parse("channel", &r.text("channel")?)?,
        currency: r.text("currency")?,
        account: parse("account", &r.text("account")?)?,
        debit: r.int("debit")?,
        credit: r.int("credit")?,
    })
}

pub(crate) fn ledger_issue(kind: LedgerIssueKind, r: &impl Cols) -> Result<LedgerIssue> {
    Ok(LedgerIssue {
        kind,
        subject: r.text("subject")?,
        expected: r.int("expected")?,
        actual: r.int("actual")?,
    })
}

pub(crate) fn payment(r: &impl Cols) -> Result<Payment> {
    let amount = money(r)?;
    Ok(Payment {
        id: payment_id("id", &r.text("id")?)?,
        merchant_id: r.text("merchant_id")?,
        merchant_order_no: r.text("merchant_order_no")?,
        amount,
        channel: parse("channel", &r.text("channel")?)?,
        method: parse("method", &r.text("method")?)?,
        status: parse("status", &r.text("status")?)?,
        description: r.text("description")?,
        notify_url: r.text("notify_url")?,
        payer: r.json("payer")?,
        metadata: r.json("metadata")?,
        request_hash: r.text("request_hash")?,
        channel_account_id: r.text("channel_account_id")?,
        app_id: r.opt_text("app_id")?,
        checkout_id: r.opt_text("checkout_id")?,
        group_id: r.opt_text("group_id")?,
        pay_params: r.opt_json("pay_params")?,
        channel_trade_no: r.opt_text("channel_trade_no")?,
        paid_at: r.opt_ts("paid_at")?,
        refunded: r.int("refunded_minor")?,
        expires_at: r.ts("expires_at")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
    })
}

pub(crate) fn event(r: &impl Cols) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        id: r.text("id")?,
        merchant_id: r.text("merchant_id")?,
        payment_id: payment_id("payment_id", &r.text("payment_id")?)?,
        refund_id: r.opt_text("refund_id")?,
        event_type: r.text("event_type")?,
        payload: r.json("payload")?,
        notify_url: r.text("notify_url")?,
        created_at: r.ts("created_at")?,
        attempts: r.int32("attempts")?,
        next_attempt_at: r.ts("next_attempt_at")?,
        delivered_at: r.opt_ts("delivered_at")?,
        dead: r.flag("dead")?,
        last_error: r.opt_text("last_error")?,
        app_id: r.opt_text("app_id")?,
    })
}

pub(crate) fn idempotency_record(r: &impl Cols) -> Result<IdempotencyRecord> {
    let status = r.int32("status")?;
    Ok(IdempotencyRecord {
        merchant_id: r.text("merchant_id")?,
        key: r.text("key")?,
        request_hash: r.text("request_hash")?,
        status: u16::try_from(status).map_err(|_| {
            StoreError::Corrupt(format!("column status: {status} is no HTTP status"))
        })?,
        body: r.bytes("body")?,
        created_at: r.ts("created_at")?,
    })
}

fn payment_id(col: &str, value: &str) -> Result<PaymentId> {
    PaymentId::parse(value).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}
