//! Rows as the rest of paymux sees them.

use chrono::{DateTime, Utc};
use paymux_core::{ChannelKind, Money, PayMethod, PaymentId, PaymentStatus, RefundStatus};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// API credentials of a merchant: `app_id` is public, `secret` keys the HMAC.
#[derive(Clone, PartialEq)]
pub struct App {
    pub app_id: String,
    pub merchant_id: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// The secret before the last rotation; it still verifies requests until
    /// `previous_secret_expires_at`, so merchants can roll the new one out.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The app signs its requests with this key pair's private half instead
    /// of the secret (which still signs paymux's answers and notifications).
    pub request_key: Option<RequestKey>,
    /// The client certificate (SHA-256 of its DER, hex) every request of the
    /// app must come with, over mutual TLS.
    pub client_cert_sha256: Option<String>,
    /// The event types the app receives; `None` for the default set.
    pub event_types: Option<Vec<String>>,
}

/// A merchant's public key for request signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub alg: RequestKeyAlg,
    /// SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub public_key_pem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKeyAlg {
    Ed25519,
    /// RSASSA-PKCS1-v1_5 with SHA-256, at least 2048 bits.
    RsaSha256,
}

impl RequestKeyAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKeyAlg::Ed25519 => "ed25519",
            RequestKeyAlg::RsaSha256 => "rsa-sha256",
        }
    }
}

impl std::str::FromStr for RequestKeyAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ed25519" => Ok(RequestKeyAlg::Ed25519),
            "rsa-sha256" => Ok(RequestKeyAlg::RsaSha256),
            other => Err(format!("{other:?} is not ed25519 or rsa-sha256")),
        }
    }
}

impl App {
    /// A new app with no previous secret.
    pub fn new(
        app_id: String,
        merchant_id: String,
        secret: String,
        created_at: DateTime<Utc>,
    ) -> Self {
        App {
            app_id,
            merchant_id,
            secret,
            created_at,
            previous_secret: None,
            previous_secret_expires_at: None,
            request_key: None,
            client_cert_sha256: None,
            event_types: None,
        }
    }

    /// The secrets a request may be signed with at `now`: the current one,
    /// then the previous one while its grace period lasts.
    pub fn valid_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &str> {
        let previous = match (&self.previous_secret, self.previous_secret_expires_at) {
            (Some(s), Some(until)) if now < until => Some(s.as_str()),
            _ => None,
        };
        std::iter::once(self.secret.as_str()).chain(previous)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs and panic messages.
        f.debug_struct("App")
            .field("app_id", &self.app_id)
            .field("merchant_id", &self.merchant_id)
            .field("created_at", &self.created_at)
            .field(
                "previous_secret_expires_at",
                &self.previous_secret_expires_at,
            )
            .finish_non_exhaustive()
    }
}

/// A merchant's account at a channel. `config` is channel-specific (for
/// WeChat: appid, mchid, serial_no, private key, APIv3 key, base_url).
#[derive(Clone, PartialEq)]
pub struct ChannelAccount {
    pub id: String,
    pub merchant_id: String,
    pub channel: ChannelKind,
    pub config: serde_json::Value,
    pub sandbox: bool,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for ChannelAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `config` holds keys; only its field names are shown.
        let fields: Vec<&String> = self
            .config
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        f.debug_struct("ChannelAccount")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("channel", &self.channel)
            .field("config_fields", &fields)
            .field("sandbox", &self.sandbox)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub id: PaymentId,
    pub merchant_id: String,
    pub merchant_order_no: String,
    pub amount: Money,
    pub channel: ChannelKind,
    pub method: PayMethod,
    pub status: PaymentStatus,
    pub description: String,
    /// The merchant's URL for event notifications.
    pub notify_url: String,
    /// `{openid, client_ip}` as given by the merchant.
    pub payer: serde_json::Value,
    pub metadata: serde_json::Value,
    /// Hash of the normalised create request; a different request for the
    /// same `merchant_order_no` is an idempotency conflict.
    pub request_hash: String,
    pub channel_account_id: String,
    /// The app that created the payment; its secret signs the payment's
    /// notifications (`None` for payments older than this field).
    pub app_id: Option<String>,
    /// The checkout this payment is an attempt of, if any.
    pub checkout_id: Option<String>,
    /// The group buy this payment is a member's seat in, if any.
    pub group_id: Option<String>,
    pub pay_params: Option<serde_json::Value>,
    /// The channel's transaction id, once paid.
    pub channel_trade_no: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Minor units refunded so far (refunds that succeeded). Only the store
    /// changes it, with the refund; inserts ignore it.
    pub refunded: i64,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

// Returned once per create request; boxing the payment would only make
// callers' matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    New,
    Existing(Payment),
}

/// Fields a transition may set alongside the status. `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransitionPatch {
    pub pay_params: Option<serde_json::Value>,
    pub channel_trade_no: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    /// A group member's success that completes its group writes this
    /// `group.succeeded` event, in the same transaction; otherwise unused.
    pub group_event: Option<NewEvent>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The compare-and-set won; this is the payment after the change.
    Applied(Payment),
    /// The payment was not in the expected status; this is how it is now.
    Unchanged(Payment),
}

/// An open payment claimed for a status check at its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct DuePayment {
    pub payment: Payment,
    /// Checks made before this one.
    pub poll_attempts: i32,
}

/// An event for the merchant, written in the same transaction as the change it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub merchant_id: String,
    pub payment_id: PaymentId,
    /// The refund the event is about, if it is about one.
    pub refund_id: Option<String>,
    /// `payment.succeeded`, …
    pub event_type: String,
    /// The full notification body sent to the merchant.
    pub payload: serde_json::Value,
    pub notify_url: String,
    pub created_at: DateTime<Utc>,
    /// The app whose secret signs the notification, when known.
    pub app_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: String,
    pub merchant_id: String,
    pub payment_id: PaymentId,
    pub refund_id: Option<String>,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub notify_url: String,
    pub created_at: DateTime<Utc>,
    /// Delivery attempts made so far.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The schedule ran out without an acknowledgement.
    pub dead: bool,
    pub last_error: Option<String>,
    /// The app whose secret signs the notification, when recorded.
    pub app_id: Option<String>,
}

/// A page of a merchant's payments, newest first (by id: ids are ULIDs, so
/// a page never shifts when newer payments arrive).
#[derive(Debug, Clone, Default)]
pub struct PaymentQuery {
    pub merchant_id: String,
    pub status: Option<PaymentStatus>,
    pub channel: Option<ChannelKind>,
    pub method: Option<PayMethod>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    pub order_no_prefix: Option<String>,
    /// Only payments older than this one (the last of the previous page).
    pub starting_after: Option<PaymentId>,
    pub limit: u32,
}

/// A page of a merchant's refunds, newest first, like [`PaymentQuery`].
#[derive(Debug, Clone, Default)]
pub struct RefundQuery {
    pub merchant_id: String,
    pub status: Option<RefundStatus>,
    pub payment_id: Option<PaymentId>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub starting_after: Option<String>,
    pub limit: u32,
}

/// How the SQLite writer has grouped writes into commits since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteBatches {
    pub commits: u64,
    pub writes: u64,
}

/// What is waiting, for the operator's gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    pub undelivered_events: i64,
    pub dead_events: i64,
    pub oldest_undelivered: Option<DateTime<Utc>>,
    pub open_payments: i64,
    pub processing_refunds: i64,
}

/// What a notifier asks of [`crate::Store::claim_events`].
#[derive(Debug, Clone, Default)]
pub struct EventClaim {
    pub limit: u32,
    pub per_merchant: u32,
    pub skip_merchants: Vec<String>,
}

/// One merchant order that the payer may try to pay through several
/// channels (收银台). Each try is a payment naming the checkout; the first to
/// succeed wins it, and any paid after is refunded.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkout {
    /// `chk_<ULID>`.
    pub id: String,
    pub merchant_id: String,
    /// The app that created it; its attempts are created under it too.
    pub app_id: String,
    /// Unique per merchant: a repeat of the same request finds this checkout.
    pub merchant_order_no: String,
    pub amount: Money,
    pub description: String,
    pub notify_url: String,
    /// Where the payer goes back to once paid.
    pub return_url: Option<String>,
    pub metadata: serde_json::Value,
    pub request_hash: String,
    /// The secret in its cashier URL (whoever has the URL may pay it).
    pub cashier_token: String,
    /// The attempt that won it; set once, by the store, in the transaction
    /// of that attempt's success.
    pub winner_payment_id: Option<PaymentId>,
    pub won_at: Option<DateTime<Utc>>,
    /// When every other attempt was final after the winner.
    pub attempts_closed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Attempts one checkout may have: enough for a payer to switch channels
/// and methods back and forth, few enough that a checkout stays small.
pub const MAX_CHECKOUT_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, PartialEq)]
pub enum CheckoutInserted {
    New,
    /// The checkout that already holds the merchant order number.
    Existing(Checkout),
}

/// An attempt that succeeded after another attempt of its checkout had
/// won: its money must go back to the payer.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutDuplicate {
    pub payment_id: PaymentId,
    pub checkout_id: String,
    /// The refund that returns it, once made.
    pub refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// An aggregated QR code (一码付): each scan opens a checkout of `amount`
/// (or of what the payer enters, when `None`) on the cashier page, which
/// pays through the app that scanned it.
#[derive(Debug, Clone, PartialEq)]
pub struct QrCode {
    /// `qr_<ULID>`.
    pub id: String,
    pub merchant_id: String,
    /// The app its checkouts are made under (and whose secret signs them).
    pub app_id: String,
    pub name: String,
    pub description: String,
    pub amount: Option<i64>,
    pub currency: paymux_core::Currency,
    pub notify_url: String,
    pub created_at: DateTime<Utc>,
}

/// A group buy (拼团): it succeeds when `size` members have paid before
/// `expires_at`, and fails (its paid members refunded) otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupBuy {
    /// `grp_<ULID>`.
    pub id: String,
    pub merchant_id: String,
    pub app_id: String,
    /// Unique per merchant: a repeat of the same request finds this group.
    pub merchant_group_no: String,
    pub size: i32,
    /// What each member pays, when the group fixes it.
    pub amount: Option<i64>,
    pub currency: paymux_core::Currency,
    /// Where `group.succeeded` / `group.failed` go.
    pub notify_url: String,
    pub request_hash: String,
    pub status: GroupStatus,
    /// Members whose payment may still succeed or has: never above `size`.
    pub seats_taken: i32,
    pub paid_count: i32,
    pub expires_at: DateTime<Utc>,
    pub succeeded_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    /// Once a failed group's members are all closed or refunded.
    pub settled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    Open,
    Succeeded,
    Failed,
}

impl GroupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Open => "open",
            GroupStatus::Succeeded => "succeeded",
            GroupStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for GroupStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(GroupStatus::Open),
            "succeeded" => Ok(GroupStatus::Succeeded),
            "failed" => Ok(GroupStatus::Failed),
            other => Err(format!("unknown group status {other:?}")),
        }
    }
}

impl std::fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum GroupInserted {
    New,
    Existing(GroupBuy),
}

/// What joining a group came to.
// Returned once per join; boxing would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Joined {
    /// A seat was taken and the member's payment inserted.
    New,
    /// The payment's order number was taken already: this payment.
    Existing(Payment),
    /// Every seat is taken; nothing was written.
    Full,
    /// The group is no longer open (or has expired); nothing was written.
    Closed(GroupStatus),
}

/// A refund of (part of) a paid payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Refund {
    /// `ref_<ULID>`; the channel's out_refund_no / out_request_no.
    pub id: String,
    pub merchant_id: String,
    pub payment_id: PaymentId,
    /// Unique per merchant: a repeat of the same request finds this refund.
    pub merchant_refund_no: String,
    pub amount: Money,
    pub status: RefundStatus,
    pub reason: Option<String>,
    pub notify_url: String,
    /// Hash of the normalised request; a different request for the same
    /// `merchant_refund_no` is an idempotency conflict.
    pub request_hash: String,
    /// The channel's own refund id, once known.
    pub channel_refund_no: Option<String>,
    /// Why the channel refused, when it did.
    pub failure_reason: Option<String>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What inserting a refund did. Refunds are reserved against their payment
/// atomically, so concurrent requests can never together exceed it.
// Returned once per refund request, like [`Inserted`].
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RefundInserted {
    New,
    /// The merchant's `merchant_refund_no` was taken: this is the refund that holds it.
    Existing(Refund),
    /// The payment is not in a status that can be refunded (only `succeeded` can).
    NotRefundable(PaymentStatus),
    /// The amount does not fit: this much is left to refund.
    Exceeds {
        available: i64,
    },
}

/// Fields a refund transition may set alongside the status. `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefundPatch {
    pub channel_refund_no: Option<String>,
    pub failure_reason: Option<String>,
    pub refunded_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RefundTransition {
    /// The compare-and-set won; this is the refund after the change.
    Applied(Refund),
    /// The refund was not in the expected status; this is how it is now.
    Unchanged(Refund),
}

/// A refund still processing, claimed for a status check at its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct DueRefund {
    pub refund: Refund,
    /// Checks made before this one.
    pub poll_attempts: i32,
}

/// The stored answer to a request made with an `Idempotency-Key`, or the
/// reservation of the key while its first request runs
/// ([`IdempotencyRecord::IN_PROGRESS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub merchant_id: String,
    pub key: String,
    pub request_hash: String,
    /// The answer's HTTP status, or [`IdempotencyRecord::IN_PROGRESS`].
    pub status: u16,
    pub body: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

impl IdempotencyRecord {
    /// The status of a reservation: the key's first request is running.
    pub const IN_PROGRESS: u16 = 0;

    pub fn in_progress(&self) -> bool {
        self.status == Self::IN_PROGRESS
    }
}

/// One reconciliation of a channel account's bill for a China-time day.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconciliationRun {
    /// `rec_<ULID>`.
    pub id: String,
    pub merchant_id: String,
    pub channel_account_id: String,
    pub channel: ChannelKind,
    pub bill_date: chrono::NaiveDate,
    /// `manual` (asked for) or `daily` (the worker's, one per account and day).
    pub trigger: String,
    pub status: RunStatus,
    /// Bill records that agreed with paymux.
    pub matched: i64,
    /// Every difference found (`discrepancies` lists the first ones).
    pub discrepancy_count: i64,
    /// A JSON array of differences (see the reconciliation module).
    pub discrepancies: serde_json::Value,
    /// Why a failed run failed.
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(RunStatus::Running),
            "succeeded" => Ok(RunStatus::Succeeded),
            "failed" => Ok(RunStatus::Failed),
            other => Err(format!("{other:?} is not a run status")),
        }
    }
}

/// A page of what one channel account settled in a time range, oldest id
/// first: payments that succeeded (by `paid_at`) or refunds that succeeded
/// (by `refunded_at`).
#[derive(Debug, Clone)]
pub struct SettledQuery {
    pub channel_account_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only ids after this one (the last of the previous page).
    pub after: Option<String>,
    pub limit: u32,
}
