//! paymux persistence. One [`Store`] trait, two real backends: SQLite (the
//! embedded default) and PostgreSQL. Both pass the same conformance suite.
//!
//! Rules every backend keeps:
//! - every status change is a compare-and-set on the expected old status and
//!   writes its outbox row in the same transaction;
//! - a change that moves money writes its balanced ledger postings in the
//!   same transaction too (see [`ledger`]);
//! - `(merchant_id, merchant_order_no)` is unique;
//! - no method holds a transaction open across anything but its own SQL.

pub mod audit;
pub mod error;
pub mod ledger;
mod migrate;
pub mod model;
pub mod postgres;
mod row;
pub mod sealed;
pub mod secrets;
mod shared;
pub mod sqlite;
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use paymux_core::{ChannelKind, PaymentId, PaymentStatus, RefundStatus};

pub use error::StoreError;
pub use ledger::{
    AccountBalance, LedgerAccount, LedgerCheck, LedgerIssue, LedgerIssueKind, Posting,
};
pub use model::*;
pub use sealed::SealedStore;
pub use secrets::{Keyring, MasterKey};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is (`sqlite` or `postgres`), for logs and benchmarks.
    fn backend(&self) -> &'static str;

    /// Commits and the writes grouped into them, where the backend groups
    /// them (SQLite); `None` elsewhere.
    fn write_batches(&self) -> Option<WriteBatches> {
        None
    }

    /// Counts of what is waiting: events not acknowledged, open payments,
    /// processing refunds.
    async fn backlog(&self) -> Result<Backlog>;

    /// Answers whether the database is reachable (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// The version of apps and channel accounts: it changes, in the same
    /// transaction, whenever any of them is inserted, updated or deleted,
    /// so what a node keeps of them is current while it stays the same.
    async fn directory_version(&self) -> Result<i64>;

    // --- merchants and credentials -------------------------------------------------

    /// Inserts a merchant together with its first API app, in one transaction.
    async fn insert_merchant(&self, merchant: &Merchant, app: &App) -> Result<()>;
    async fn merchant(&self, id: &str) -> Result<Option<Merchant>>;
    async fn list_merchants(&self) -> Result<Vec<Merchant>>;
    async fn app(&self, app_id: &str) -> Result<Option<App>>;
    /// The merchant's apps, oldest first (the first one signs notifications).
    async fn merchant_apps(&self, merchant_id: &str) -> Result<Vec<App>>;

    /// Adds another app to an existing merchant.
    async fn insert_app(&self, app: &App) -> Result<()>;
    /// Replaces an app's secrets (current and previous, with its expiry).
    /// [`StoreError::NotFound`] if there is no such app.
    async fn update_app_secrets(&self, app: &App) -> Result<()>;
    /// Sets (or, with `None`, removes) the key an app signs its requests
    /// with. [`StoreError::NotFound`] if there is no such app.
    async fn update_app_request_key(&self, app_id: &str, key: Option<&RequestKey>) -> Result<()>;
    /// Binds (or, with `None`, unbinds) an app to a client certificate.
    /// [`StoreError::NotFound`] if there is no such app.
    async fn update_app_client_cert(&self, app_id: &str, sha256: Option<&str>) -> Result<()>;
    /// Sets (or, with `None`, resets to the default) the event types an
    /// app receives. [`StoreError::NotFound`] if there is no such app.
    async fn update_app_event_types(&self, app_id: &str, types: Option<&[String]>) -> Result<()>;

    async fn insert_channel_account(&self, account: &ChannelAccount) -> Result<()>;
    /// Every channel account, or the merchant's, oldest first, enabled or not.
    async fn list_channel_accounts(&self, merchant_id: Option<&str>)
        -> Result<Vec<ChannelAccount>>;
    /// Enables or disables an account; a disabled account is never picked by
    /// [`Store::channel_account_for`]. [`StoreError::NotFound`] if there is no such account.
    async fn set_channel_account_enabled(&self, id: &str, enabled: bool) -> Result<()>;
    /// Replaces an account's config (re-encrypting secrets under a new master
    /// key). [`StoreError::NotFound`] if there is no such account.
    async fn update_channel_account_config(
        &self,
        id: &str,
        config: &serde_json::Value,
    ) -> Result<()>;
    async fn channel_account(&self, id: &str) -> Result<Option<ChannelAccount>>;
    /// The merchant's newest enabled account for a channel.
    async fn channel_account_for(
        &self,
        merchant_id: &str,
        channel: ChannelKind,
    ) -> Result<Option<ChannelAccount>>;

    /// Makes data overwritten so far unrecoverable from the database's files
    /// (after secrets were re-sealed, the old values must not linger in free
    /// pages, a write-ahead log or dead tuples).
    async fn scrub(&self) -> Result<()>;

    // --- replay protection -------------------------------------------------------

    /// Records a request nonce. Returns `true` if it was fresh, `false` if the
    /// same app used it before and that use has not expired yet.
    async fn use_nonce(
        &self,
        app_id: &str,
        nonce: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Deletes expired nonces; returns how many.
    async fn purge_nonces(&self, now: DateTime<Utc>) -> Result<u64>;

    // --- payments ----------------------------------------------------------------

    /// Inserts a payment, or returns the one that already holds its
    /// `(merchant_id, merchant_order_no)`.
    async fn insert_payment(&self, payment: &Payment) -> Result<Inserted>;
    async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>>;
    /// One page of the merchant's payments matching the query, newest first.
    async fn list_payments(&self, query: &PaymentQuery) -> Result<Vec<Payment>>;
    /// One page of the merchant's refunds matching the query, newest first.
    async fn list_refunds(&self, query: &RefundQuery) -> Result<Vec<Refund>>;
    async fn payment_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Payment>>;

    /// Compare-and-set: moves the payment from `from` to `to`, applies `patch`
    /// and inserts `event` into the outbox, all in one transaction. If the
    /// payment is no longer in `from`, nothing is written and the current
    /// payment comes back as [`Transition::Unchanged`]. A checkout's attempt
    /// that succeeds wins its checkout, or, if another attempt won it first,
    /// is recorded as a [`CheckoutDuplicate`], in the same transaction. A
    /// group member's success counts in its group (completing it, with
    /// `patch.group_event`, when it is the last seat paid before expiry); its
    /// close or failure gives its seat back.
    async fn transition(
        &self,
        id: &PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        patch: &TransitionPatch,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<Transition>;

    /// Takes up to `limit` open (`created` or `pending`) payments due for a
    /// status check, leasing each for `lease` so that no other worker checks
    /// it meanwhile. Due means: its `next_poll_at` has come, or it has none
    /// yet and was created at or before `first_poll_before` or has expired.
    async fn claim_due_payments(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DuePayment>>;
    /// Records a check: `attempts` made so far, the next one at
    /// `next_poll_at`; releases the lease. [`StoreError::NotFound`] if there
    /// is no such payment.
    async fn schedule_payment_poll(
        &self,
        id: &PaymentId,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()>;

    // --- refunds -----------------------------------------------------------------

    /// Reserves a refund against its payment, in one transaction with the
    /// payment locked: the payment must be `succeeded` and the refunds not
    /// `failed`, this one included, must not add up to more than it. A taken
    /// `(merchant_id, merchant_refund_no)` returns the refund that holds it.
    async fn insert_refund(&self, refund: &Refund) -> Result<RefundInserted>;
    async fn refund(&self, id: &str) -> Result<Option<Refund>>;
    async fn refund_by_no(
        &self,
        merchant_id: &str,
        merchant_refund_no: &str,
    ) -> Result<Option<Refund>>;
    /// The payment's refunds, oldest first.
    async fn refunds_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<Refund>>;
    /// Compare-and-set on the refund's status with its outbox event, in one
    /// transaction, like [`Store::transition`].
    async fn transition_refund(
        &self,
        id: &str,
        from: RefundStatus,
        to: RefundStatus,
        patch: &RefundPatch,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<RefundTransition>;
    /// Takes up to `limit` processing refunds due for a status check, leased
    /// for `lease`. Due means: its `next_poll_at` has come, or it has none
    /// yet and was created at or before `first_poll_before`.
    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DueRefund>>;
    /// Records a check of a refund and releases its lease.
    async fn schedule_refund_poll(
        &self,
        id: &str,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()>;

    // --- checkouts ---------------------------------------------------------------

    /// Inserts a checkout, or returns the one that already holds its
    /// `(merchant_id, merchant_order_no)`.
    async fn insert_checkout(&self, checkout: &Checkout) -> Result<CheckoutInserted>;
    async fn checkout(&self, id: &str) -> Result<Option<Checkout>>;
    async fn checkout_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Checkout>>;
    /// The checkout's attempts (payments naming it), oldest first, at most
    /// [`MAX_CHECKOUT_ATTEMPTS`].
    async fn checkout_attempts(&self, checkout_id: &str) -> Result<Vec<Payment>>;
    /// Up to `limit` checkouts that were won and whose other attempts are not
    /// all known to be final, oldest won first.
    async fn checkouts_to_close(&self, limit: u32) -> Result<Vec<Checkout>>;
    /// Records that every other attempt of the won checkout is final.
    async fn mark_checkout_attempts_closed(&self, id: &str, now: DateTime<Utc>) -> Result<()>;
    /// Up to `limit` duplicates not resolved yet, oldest first.
    async fn open_duplicates(&self, limit: u32) -> Result<Vec<CheckoutDuplicate>>;
    async fn checkout_duplicate(&self, payment_id: &PaymentId)
        -> Result<Option<CheckoutDuplicate>>;
    /// Resolves a duplicate, once: records the refund that returns its money
    /// (`None` when nothing was left to refund) and writes `event`, in one
    /// transaction. `false` if it was resolved already (nothing is written).
    async fn resolve_duplicate(
        &self,
        payment_id: &PaymentId,
        refund_id: Option<&str>,
        event: &NewEvent,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    // --- group buys -----------------------------------------------------------------

    /// Inserts a group, or returns the one that already holds its
    /// `(merchant_id, merchant_group_no)`.
    async fn insert_group(&self, group: &GroupBuy) -> Result<GroupInserted>;
    async fn group(&self, id: &str) -> Result<Option<GroupBuy>>;
    /// The group's members (payments naming it), oldest first.
    async fn group_members(&self, id: &str) -> Result<Vec<Payment>>;
    /// Takes a seat in `payment.group_id` and inserts the member's payment,
    /// in one transaction, if the group is open, not expired at `now` and
    /// not full; otherwise writes nothing (see [`Joined`]). A payment that
    /// holds the order number already comes back as [`Joined::Existing`].
    async fn join_group(&self, payment: &Payment, now: DateTime<Utc>) -> Result<Joined>;
    /// Up to `limit` open groups whose expiry has passed at `now`, oldest first.
    async fn expired_groups(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<GroupBuy>>;
    /// Fails an open group whose expiry has passed, writing `event` (when
    /// given) in the same transaction. `false` if it is no longer open (it
    /// succeeded or failed meanwhile).
    async fn fail_group(
        &self,
        id: &str,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Up to `limit` failed groups whose members are not all settled yet.
    async fn groups_to_settle(&self, limit: u32) -> Result<Vec<GroupBuy>>;
    /// Records that a failed group's members are all closed or refunded.
    async fn mark_group_settled(&self, id: &str, now: DateTime<Utc>) -> Result<()>;

    // --- aggregated QR codes -------------------------------------------------------

    async fn insert_qr_code(&self, qr: &QrCode) -> Result<()>;
    async fn qr_code(&self, id: &str) -> Result<Option<QrCode>>;

    // --- outbox ------------------------------------------------------------------

    /// Takes up to `limit` undelivered events that are due, leasing each for
    /// `lease` so that no other worker takes it meanwhile. A worker that dies
    /// loses nothing: its lease runs out and another worker takes the event.
    async fn claim_due_events(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>> {
        let claim = EventClaim {
            limit,
            per_merchant: limit,
            skip_merchants: Vec::new(),
        };
        self.claim_events(now, lease, &claim).await
    }
    /// Like [`Store::claim_due_events`], fairly: at most
    /// `claim.per_merchant` events of any one merchant, none of the
    /// merchants in `claim.skip_merchants` (those whose deliveries already
    /// fill their slots), oldest due first.
    async fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        claim: &EventClaim,
    ) -> Result<Vec<OutboxEvent>>;
    /// Extends the lease of an event being delivered to `until`. `false` if
    /// the event was acknowledged or abandoned meanwhile.
    async fn renew_event_lease(&self, id: &str, until: DateTime<Utc>) -> Result<bool>;
    /// The merchant acknowledged the event on attempt number `attempts`; it is
    /// never delivered again.
    async fn mark_event_delivered(&self, id: &str, attempts: i32, now: DateTime<Utc>)
        -> Result<()>;
    /// Delivery failed; try again at `next_attempt_at`.
    async fn mark_event_failed(
        &self,
        id: &str,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()>;
    /// Delivery failed and the retry schedule is exhausted.
    async fn mark_event_dead(&self, id: &str, attempts: i32, error: &str) -> Result<()>;
    async fn event(&self, id: &str) -> Result<Option<OutboxEvent>>;
    async fn events_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<OutboxEvent>>;
    /// Events not acknowledged yet, oldest first: everyone's or one
    /// merchant's; only those whose retry schedule ran out (`dead_only`), or
    /// also those still being retried.
    async fn undelivered_events(
        &self,
        merchant_id: Option<&str>,
        dead_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>>;
    /// Puts an unacknowledged event back on the delivery schedule, due at
    /// `now`, with its attempts reset so it gets the whole schedule again.
    /// A lease a worker holds on it is kept, so it is never sent twice at
    /// once. [`StoreError::NotFound`] if there is no such event,
    /// [`StoreError::Invalid`] if it was delivered: an acknowledged event is
    /// never sent again.
    async fn retry_event(&self, id: &str, now: DateTime<Utc>) -> Result<OutboxEvent>;

    // --- ledger ------------------------------------------------------------------

    /// The merchant's ledger accounts, summed per channel account and currency.
    async fn balances(&self, merchant_id: &str) -> Result<Vec<AccountBalance>>;
    /// A payment's postings (its capture and its refunds'), oldest first.
    async fn payment_postings(&self, payment_id: &PaymentId) -> Result<Vec<Posting>>;
    /// Posts the channel's fee of `fee` minor units (from its bill) for a
    /// payment that succeeded, once: a fee already posted is left as it is
    /// and reported ([`ledger::FeePosted`]). [`StoreError::Invalid`] if the
    /// payment has not succeeded.
    async fn post_fee(
        &self,
        payment_id: &PaymentId,
        fee: i64,
        at: DateTime<Utc>,
    ) -> Result<ledger::FeePosted>;
    /// Checks the whole ledger: every transaction balanced, every posting on
    /// a known account of its own payment's merchant and channel account,
    /// and the books agreeing with payments and refunds. Reports at most
    /// `limit` issues of each kind.
    async fn ledger_check(&self, limit: u32) -> Result<LedgerCheck>;

    // --- audit trail --------------------------------------------------------------

    /// Chains up to `limit` rows not sealed yet, oldest written first, after
    /// the last sealed one (see [`audit`]); how many it sealed. One sealer at
    /// a time, across nodes.
    async fn seal_audit(&self, limit: u32) -> Result<u64>;
    /// Sealed rows after chain position `after_pos`, in chain order.
    async fn audit_chain(&self, after_pos: i64, limit: u32) -> Result<Vec<audit::AuditEntry>>;
    /// How many rows are not sealed yet.
    async fn audit_unsealed(&self) -> Result<i64>;
    /// One subject's rows (a payment, an app, …), oldest first.
    async fn audit_of(&self, subject_id: &str) -> Result<Vec<audit::AuditEntry>>;
    /// Rows written in `[from, to)`, sealed or not, after row `after_seq`,
    /// in the order they were written.
    async fn audit_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<audit::AuditEntry>>;
    /// The last sealed row: the chain's head.
    async fn audit_head(&self) -> Result<Option<audit::AuditEntry>>;

    // --- reconciliation ---------------------------------------------------------

    /// Records a run that has started (a manual one: any number per day).
    async fn insert_reconciliation(&self, run: &ReconciliationRun) -> Result<()>;
    /// Claims the daily run of `run`'s account and day for this node: `run`
    /// is recorded and its id returned, unless that day's daily run exists;
    /// then `None`, except when it failed before `retry_failed_before`:
    /// then it is running again, claimed, and its id is returned.
    async fn claim_daily_reconciliation(
        &self,
        run: &ReconciliationRun,
        retry_failed_before: DateTime<Utc>,
    ) -> Result<Option<String>>;
    /// Records how a running run ended: status, counts, discrepancies,
    /// error, finish time, as a compare-and-set on `running`.
    /// [`StoreError::Invalid`] if it ended already, [`StoreError::NotFound`]
    /// if there is no such run.
    async fn finish_reconciliation(&self, run: &ReconciliationRun) -> Result<()>;
    async fn reconciliation(&self, id: &str) -> Result<Option<ReconciliationRun>>;
    /// The account's runs for a day, newest first.
    async fn reconciliations(
        &self,
        channel_account_id: &str,
        bill_date: chrono::NaiveDate,
    ) -> Result<Vec<ReconciliationRun>>;
    /// One page of the account's payments that succeeded in the range.
    async fn settled_payments(&self, q: &SettledQuery) -> Result<Vec<Payment>>;
    /// One page of the refunds of the account's payments that succeeded in the range.
    async fn settled_refunds(&self, q: &SettledQuery) -> Result<Vec<Refund>>;

    // --- idempotency keys --------------------------------------------------------

    async fn idempotency_record(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>>;
    /// Saves a record for a key (a reservation, status
    /// [`IdempotencyRecord::IN_PROGRESS`], before the request runs). Returns
    /// `false` if a record for the key already existed (the first one stays).
    async fn save_idempotency_record(&self, record: &IdempotencyRecord) -> Result<bool>;
    /// Replaces the key's reservation made at `record.created_at` with the
    /// answer. `false` if that reservation is gone.
    async fn complete_idempotency_record(&self, record: &IdempotencyRecord) -> Result<bool>;
    /// Deletes the key's reservation made at `reserved_at` (its request
    /// failed, or it was left by a crash), so the key can be used again. An
    /// answer stored under the key is never deleted this way.
    async fn release_idempotency_key(
        &self,
        merchant_id: &str,
        key: &str,
        reserved_at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Deletes keys and answers created before `before`; returns how many.
    async fn purge_idempotency_records(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// How to open a store, beyond its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// PostgreSQL connections this node keeps at most.
    pub pg_pool_size: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            pg_pool_size: postgres::MAX_CONNECTIONS,
        }
    }
}

/// Opens the store named by a URL: `postgres://…` or `sqlite://PATH` / a plain file path.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, &OpenOptions::default()).await
}

/// [`open`] with options.
pub async fn open_with(url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect_with(url, options.pg_pool_size).await?,
        ))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    }
}
