//! [`SealedStore`]: any [`Store`], with secrets sealed on the way in and
//! opened on the way out.
//!
//! The backends store what they are given; this layer decides what is secret:
//! every app secret, and the channel-account config fields a channel names as
//! secret (the store does not know channels, so the caller passes that list).
//! The rest of paymux uses a `SealedStore` and sees plaintext.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use paymux_core::{ChannelKind, PaymentId, PaymentStatus, RefundStatus};

use crate::ledger::{AccountBalance, LedgerCheck, Posting};
use crate::model::*;
use crate::secrets::Keyring;
use crate::{Result, Store, StoreError};

/// Names the secret fields of a channel's account config (WeChat:
/// `private_key_pem`, `apiv3_key`).
pub type SecretFields = fn(ChannelKind) -> &'static [&'static str];

pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: Arc<Keyring>,
    secret_fields: SecretFields,
}

/// What [`SealedStore::reseal_all`] rewrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealCounts {
    pub apps: usize,
    pub channel_accounts: usize,
}

fn app_context(app_id: &str, field: &str) -> String {
    format!("apps/{app_id}/{field}")
}

fn account_context(id: &str, field: &str) -> String {
    format!("channel_accounts/{id}/{field}")
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, keys: Arc<Keyring>, secret_fields: SecretFields) -> Self {
        SealedStore {
            inner,
            keys,
            secret_fields,
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// The store underneath, which sees sealed values as stored.
    pub fn raw(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn map_app(&self, app: &App, f: impl Fn(&str, &str) -> Result<String>) -> Result<App> {
        let mut out = app.clone();
        out.secret = f(&app_context(&app.app_id, "secret"), &app.secret)?;
        out.previous_secret = app
            .previous_secret
            .as_deref()
            .map(|s| f(&app_context(&app.app_id, "previous_secret"), s))
            .transpose()?;
        Ok(out)
    }

    fn seal_app(&self, app: &App) -> Result<App> {
        self.map_app(app, |c, v| self.keys.seal(c, v))
    }

    fn open_app(&self, app: &App) -> Result<App> {
        self.map_app(app, |c, v| self.keys.open(c, v))
    }

    fn map_account(
        &self,
        account: &ChannelAccount,
        f: impl Fn(&str, &str) -> Result<String>,
    ) -> Result<ChannelAccount> {
        let mut out = account.clone();
        let Some(config) = out.config.as_object_mut() else {
            return Ok(out);
        };
        for field in (self.secret_fields)(account.channel) {
            if let Some(serde_json::Value::String(value)) = config.get_mut(*field) {
                *value = f(&account_context(&account.id, field), value)?;
            }
        }
        Ok(out)
    }

    fn seal_account(&self, account: &ChannelAccount) -> Result<ChannelAccount> {
        self.map_account(account, |c, v| self.keys.seal(c, v))
    }

    fn open_account(&self, account: &ChannelAccount) -> Result<ChannelAccount> {
        self.map_account(account, |c, v| self.keys.open(c, v))
    }

    /// Re-seals every app secret and every secret account field under the
    /// current master key: values sealed with an older key the keyring knows,
    /// and plaintext written before a master key was set. Values already
    /// under the current key are left alone, so an interrupted run can simply
    /// be repeated.
    pub async fn reseal_all(&self) -> Result<ResealCounts> {
        if !self.keys.seals() {
            return Err(StoreError::Secret(
                "re-sealing needs a master key to seal with".into(),
            ));
        }
        let mut counts = ResealCounts::default();
        let is_current = |v: &str| self.keys.is_current(v);
        for merchant in self.inner.list_merchants().await? {
            for app in self.inner.merchant_apps(&merchant.id).await? {
                let stale = !is_current(&app.secret)
                    || app
                        .previous_secret
                        .as_deref()
                        .is_some_and(|s| !is_current(s));
                if stale {
                    let resealed = self.seal_app(&self.open_app(&app)?)?;
                    self.inner.update_app_secrets(&resealed).await?;
                    counts.apps += 1;
                }
            }
        }
        for account in self.inner.list_channel_accounts(None).await? {
            let stale = (self.secret_fields)(account.channel).iter().any(|f| {
                account
                    .config
                    .get(*f)
                    .and_then(|v| v.as_str())
                    .is_some_and(|v| !is_current(v))
            });
            if stale {
                let resealed = self.seal_account(&self.open_account(&account)?)?;
                self.inner
                    .update_channel_account_config(&account.id, &resealed.config)
                    .await?;
                counts.channel_accounts += 1;
            }
        }
        self.inner.scrub().await?;
        Ok(counts)
    }
}

#[async_trait]
impl Store for SealedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn write_batches(&self) -> Option<WriteBatches> {
        self.inner.write_batches()
    }

    async fn directory_version(&self) -> Result<i64> {
        self.inner.directory_version().await
    }

    async fn backlog(&self) -> Result<Backlog> {
        self.inner.backlog().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn insert_merchant(&self, merchant: &Merchant, app: &App) -> Result<()> {
        self.inner
            .insert_merchant(merchant, &self.seal_app(app)?)
            .await
    }

    async fn merchant(&self, id: &str) -> Result<Option<Merchant>> {
        self.inner.merchant(id).await
    }

    async fn list_merchants(&self) -> Result<Vec<Merchant>> {
        self.inner.list_merchants().await
    }

    async fn app(&self, app_id: &str) -> Result<Option<App>> {
        self.inner
            .app(app_id)
            .await?
            .map(|a| self.open_app(&a))
            .transpose()
    }

    async fn merchant_apps(&self, merchant_id: &str) -> Result<Vec<App>> {
        self.inner
            .merchant_apps(merchant_id)
            .await?
            .iter()
            .map(|a| self.open_app(a))
            .collect()
    }

    async fn scrub(&self) -> Result<()> {
        self.inner.scrub().await
    }

    async fn insert_app(&self, app: &App) -> Result<()> {
        self.inner.insert_app(&self.seal_app(app)?).await
    }

    async fn update_app_request_key(&self, app_id: &str, key: Option<&RequestKey>) -> Result<()> {
        // A public key is no secret: stored as it is.
        self.inner.update_app_request_key(app_id, key).await
    }

    async fn update_app_client_cert(&self, app_id: &str, sha256: Option<&str>) -> Result<()> {
        self.inner.update_app_client_cert(app_id, sha256).await
    }

    async fn update_app_event_types(&self, app_id: &str, types: Option<&[String]>) -> Result<()> {
        self.inner.update_app_event_types(app_id, types).await
    }

    async fn update_app_secrets(&self, app: &App) -> Result<()> {
        self.inner.update_app_secrets(&self.seal_app(app)?).await
    }

    async fn insert_channel_account(&self, account: &ChannelAccount) -> Result<()> {
        self.inner
            .insert_channel_account(&self.seal_account(account)?)
            .await
    }

    async fn list_channel_accounts(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Vec<ChannelAccount>> {
        self.inner
            .list_channel_accounts(merchant_id)
            .await?
            .iter()
            .map(|a| self.open_account(a))
            .collect()
    }

    async fn set_channel_account_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        self.inner.set_channel_account_enabled(id, enabled).await
    }

    async fn update_channel_account_config(
        &self,
        id: &str,
        config: &serde_json::Value,
    ) -> Result<()> {
        let Some(current) = self.inner.channel_account(id).await? else {
            return Err(StoreError::NotFound(format!("channel account {id}")));
        };
        let next = ChannelAccount {
            config: config.clone(),
            ..current
        };
        self.inner
            .update_channel_account_config(id, &self.seal_account(&next)?.config)
            .await
    }

    async fn channel_account(&self, id: &str) -> Result<Option<ChannelAccount>> {
        self.inner
            .channel_account(id)
            .await?
            .map(|a| self.open_account(&a))
            .transpose()
    }

    async fn channel_account_for(
        &self,
        merchant_id: &str,
        channel: ChannelKind,
    ) -> Result<Option<ChannelAccount>> {
        self.inner
            .channel_account_for(merchant_id, channel)
            .await?
            .map(|a| self.open_account(&a))
            .transpose()
    }

    async fn use_nonce(
        &self,
        app_id: &str,
        nonce: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner.use_nonce(app_id, nonce, now, expires_at).await
    }

    async fn purge_nonces(&self, now: DateTime<Utc>) -> Result<u64> {
        self.inner.purge_nonces(now).await
    }

    async fn insert_payment(&self, payment: &Payment) -> Result<Inserted> {
        self.inner.insert_payment(payment).await
    }

    async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>> {
        self.inner.payment(id).await
    }

    async fn list_payments(&self, query: &PaymentQuery) -> Result<Vec<Payment>> {
        self.inner.list_payments(query).await
    }

    async fn list_refunds(&self, query: &RefundQuery) -> Result<Vec<Refund>> {
        self.inner.list_refunds(query).await
    }

    async fn payment_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Payment>> {
        self.inner
            .payment_by_order_no(merchant_id, merchant_order_no)
            .await
    }

    async fn transition(
        &self,
        id: &PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        patch: &TransitionPatch,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        self.inner.transition(id, from, to, patch, event, now).await
    }

    async fn claim_due_payments(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DuePayment>> {
        self.inner
            .claim_due_payments(now, first_poll_before, lease, limit)
            .await
    }

    async fn schedule_payment_poll(
        &self,
        id: &PaymentId,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()> {
        self.inner
            .schedule_payment_poll(id, attempts, next_poll_at)
            .await
    }

    async fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        claim: &EventClaim,
    ) -> Result<Vec<OutboxEvent>> {
        self.inner.claim_events(now, lease, claim).await
    }

    async fn renew_event_lease(&self, id: &str, until: DateTime<Utc>) -> Result<bool> {
        self.inner.renew_event_lease(id, until).await
    }

    async fn mark_event_delivered(
        &self,
        id: &str,
        attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.inner.mark_event_delivered(id, attempts, now).await
    }

    async fn mark_event_failed(
        &self,
        id: &str,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        self.inner
            .mark_event_failed(id, attempts, next_attempt_at, error)
            .await
    }

    async fn mark_event_dead(&self, id: &str, attempts: i32, error: &str) -> Result<()> {
        self.inner.mark_event_dead(id, attempts, error).await
    }

    async fn event(&self, id: &str) -> Result<Option<OutboxEvent>> {
        self.inner.event(id).await
    }

    async fn events_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<OutboxEvent>> {
        self.inner.events_for_payment(payment_id).await
    }
    async fn insert_refund(&self, refund: &Refund) -> Result<RefundInserted> {
        self.inner.insert_refund(refund).await
    }
    async fn refund(&self, id: &str) -> Result<Option<Refund>> {
        self.inner.refund(id).await
    }
    async fn refund_by_no(
        &self,
        merchant_id: &str,
        merchant_refund_no: &str,
    ) -> Result<Option<Refund>> {
        self.inner
            .refund_by_no(merchant_id, merchant_refund_no)
            .await
    }
    async fn refunds_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<Refund>> {
        self.inner.refunds_for_payment(payment_id).await
    }
    async fn insert_group(&self, group: &GroupBuy) -> Result<GroupInserted> {
        self.inner.insert_group(group).await
    }
    async fn group(&self, id: &str) -> Result<Option<GroupBuy>> {
        self.inner.group(id).await
    }
    async fn group_members(&self, id: &str) -> Result<Vec<Payment>> {
        self.inner.group_members(id).await
    }
    async fn join_group(&self, payment: &Payment, now: DateTime<Utc>) -> Result<Joined> {
        self.inner.join_group(payment, now).await
    }
    async fn expired_groups(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<GroupBuy>> {
        self.inner.expired_groups(now, limit).await
    }
    async fn fail_group(
        &self,
        id: &str,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner.fail_group(id, event, now).await
    }
    async fn groups_to_settle(&self, limit: u32) -> Result<Vec<GroupBuy>> {
        self.inner.groups_to_settle(limit).await
    }
    async fn mark_group_settled(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        self.inner.mark_group_settled(id, now).await
    }
    async fn insert_qr_code(&self, qr: &QrCode) -> Result<()> {
        self.inner.insert_qr_code(qr).await
    }
    async fn qr_code(&self, id: &str) -> Result<Option<QrCode>> {
        self.inner.qr_code(id).await
    }
    async fn insert_checkout(&self, checkout: &Checkout) -> Result<CheckoutInserted> {
        self.inner.insert_checkout(checkout).await
    }
    async fn checkout(&self, id: &str) -> Result<Option<Checkout>> {
        self.inner.checkout(id).await
    }
    async fn checkout_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Checkout>> {
        self.inner
            .checkout_by_order_no(merchant_id, merchant_order_no)
            .await
    }
    async fn checkout_attempts(&self, checkout_id: &str) -> Result<Vec<Payment>> {
        self.inner.checkout_attempts(checkout_id).await
    }
    async fn checkouts_to_close(&self, limit: u32) -> Result<Vec<Checkout>> {
        self.inner.checkouts_to_close(limit).await
    }
    async fn mark_checkout_attempts_closed(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        self.inner.mark_checkout_attempts_closed(id, now).await
    }
    async fn open_duplicates(&self, limit: u32) -> Result<Vec<CheckoutDuplicate>> {
        self.inner.open_duplicates(limit).await
    }
    async fn checkout_duplicate(
        &self,
        payment_id: &PaymentId,
    ) -> Result<Option<CheckoutDuplicate>> {
        self.inner.checkout_duplicate(payment_id).await
    }
    async fn resolve_duplicate(
        &self,
        payment_id: &PaymentId,
        refund_id: Option<&str>,
        event: &NewEvent,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner
            .resolve_duplicate(payment_id, refund_id, event, now)
            .await
    }
    async fn transition_refund(
        &self,
        id: &str,
        from: RefundStatus,
        to: RefundStatus,
        patch: &RefundPatch,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<RefundTransition> {
        self.inner
            .transition_refund(id, from, to, patch, event, now)
            .await
    }
    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DueRefund>> {
        self.inner
            .claim_due_refunds(now, first_poll_before, lease, limit)
            .await
    }
    async fn schedule_refund_poll(
        &self,
        id: &str,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()> {
        self.inner
            .schedule_refund_poll(id, attempts, next_poll_at)
            .await
    }
    async fn undelivered_events(
        &self,
        merchant_id: Option<&str>,
        dead_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>> {
        self.inner
            .undelivered_events(merchant_id, dead_only, limit)
            .await
    }
    async fn retry_event(&self, id: &str, now: DateTime<Utc>) -> Result<OutboxEvent> {
        self.inner.retry_event(id, now).await
    }

    async fn seal_audit(&self, limit: u32) -> Result<u64> {
        self.inner.seal_audit(limit).await
    }
    async fn audit_chain(
        &self,
        after_pos: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        self.inner.audit_chain(after_pos, limit).await
    }
    async fn audit_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        self.inner.audit_between(from, to, after_seq, limit).await
    }
    async fn audit_head(&self) -> Result<Option<crate::audit::AuditEntry>> {
        self.inner.audit_head().await
    }
    async fn audit_unsealed(&self) -> Result<i64> {
        self.inner.audit_unsealed().await
    }
    async fn audit_of(&self, subject_id: &str) -> Result<Vec<crate::audit::AuditEntry>> {
        self.inner.audit_of(subject_id).await
    }
    async fn insert_reconciliation(&self, run: &ReconciliationRun) -> Result<()> {
        self.inner.insert_reconciliation(run).await
    }
    async fn claim_daily_reconciliation(
        &self,
        run: &ReconciliationRun,
        retry_failed_before: DateTime<Utc>,
    ) -> Result<Option<String>> {
        self.inner
            .claim_daily_reconciliation(run, retry_failed_before)
            .await
    }
    async fn finish_reconciliation(&self, run: &ReconciliationRun) -> Result<()> {
        self.inner.finish_reconciliation(run).await
    }
    async fn reconciliation(&self, id: &str) -> Result<Option<ReconciliationRun>> {
        self.inner.reconciliation(id).await
    }
    async fn reconciliations(
        &self,
        channel_account_id: &str,
        bill_date: chrono::NaiveDate,
    ) -> Result<Vec<ReconciliationRun>> {
        self.inner
            .reconciliations(channel_account_id, bill_date)
            .await
    }
    async fn settled_payments(&self, q: &SettledQuery) -> Result<Vec<Payment>> {
        self.inner.settled_payments(q).await
    }
    async fn settled_refunds(&self, q: &SettledQuery) -> Result<Vec<Refund>> {
        self.inner.settled_refunds(q).await
    }
    async fn balances(&self, merchant_id: &str) -> Result<Vec<AccountBalance>> {
        self.inner.balances(merchant_id).await
    }
    async fn payment_postings(&self, payment_id: &PaymentId) -> Result<Vec<Posting>> {
        self.inner.payment_postings(payment_id).await
    }
    async fn post_fee(
        &self,
        payment_id: &PaymentId,
        fee: i64,
        at: DateTime<Utc>,
    ) -> Result<crate::ledger::FeePosted> {
        self.inner.post_fee(payment_id, fee, at).await
    }
    async fn ledger_check(&self, limit: u32) -> Result<LedgerCheck> {
        self.inner.ledger_check(limit).await
    }
    async fn idempotency_record(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        self.inner.idempotency_record(merchant_id, key).await
    }

    async fn save_idempotency_record(&self, record: &IdempotencyRecord) -> Result<bool> {
        self.inner.save_idempotency_record(record).await
    }

    async fn complete_idempotency_record(&self, record: &IdempotencyRecord) -> Result<bool> {
        self.inner.complete_idempotency_record(record).await
    }

    async fn release_idempotency_key(
        &self,
        merchant_id: &str,
        key: &str,
        reserved_at: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner
            .release_idempotency_key(merchant_id, key, reserved_at)
            .await
    }

    async fn purge_idempotency_records(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.purge_idempotency_records(before).await
    }
}
