//! paymux payment channels. Each channel is a folder with its own wire types,
//! signing and callback handling; the rest of paymux sees only [`Channel`].
//! Channels never touch the store: the server orchestrates.

pub mod alipay;
pub mod bill;
pub mod error;
pub mod keys;
pub mod transport;
pub mod unionpay;
pub mod wechat;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::bill::BillFile;
use paymux_core::{Money, PayMethod};
use serde::{Deserialize, Serialize};

pub use error::ChannelError;

/// The fields of a channel account's config that are secret: sealed at rest,
/// masked wherever an account is shown. A new channel adds its line here.
pub fn secret_fields(kind: paymux_core::ChannelKind) -> &'static [&'static str] {
    match kind {
        paymux_core::ChannelKind::Wechat => wechat::SECRET_FIELDS,
        paymux_core::ChannelKind::Alipay => alipay::SECRET_FIELDS,
        paymux_core::ChannelKind::Unionpay => unionpay::SECRET_FIELDS,
    }
}

/// What paymux asks a channel to prepare for payment.
#[derive(Debug, Clone)]
pub struct PrepayRequest {
    /// Our payment id; the channel's `out_trade_no`, so a retried call can never charge twice.
    pub out_trade_no: String,
    pub description: String,
    pub amount: Money,
    pub method: PayMethod,
    /// Where the channel posts its asynchronous result (paymux's own callback URL).
    pub notify_url: String,
    pub expires_at: DateTime<Utc>,
    /// WeChat openid; for Alipay mini-programs the payer's Alipay open id.
    pub payer_openid: Option<String>,
    pub payer_client_ip: Option<String>,
    /// Alipay user id (`2088…`), the older alternative to the open id.
    pub payer_buyer_id: Option<String>,
    /// The payment code shown on the payer's phone (barcode payments).
    pub auth_code: Option<String>,
}

/// The channel's answer to a prepay: what the payer's client needs to pay.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Method-specific parameters handed to the merchant verbatim
    /// (for WeChat mini-programs: exactly what `wx.requestPayment` takes).
    pub pay_params: serde_json::Value,
    /// The channel's handle for the prepared order (WeChat's prepay_id), if any.
    pub channel_ref: Option<String>,
    /// The trade's state when the channel settles it in the same call
    /// (barcode payments charge at once); `None` when the payer pays later.
    pub trade: Option<ChannelTrade>,
}

/// A trade's state as the channel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeState {
    /// Created, not paid yet (WeChat NOTPAY, USERPAYING; Alipay WAIT_BUYER_PAY).
    NotPaid,
    /// Paid (WeChat SUCCESS, and REFUND: it was paid before being refunded).
    Paid,
    /// Closed or revoked without payment.
    Closed,
    /// Payment failed for good (WeChat PAYERROR).
    Failed,
}

/// A trade as reported by a query or a callback.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelTrade {
    pub out_trade_no: String,
    pub state: TradeState,
    /// The channel's own transaction id, once paid.
    pub transaction_id: Option<String>,
    /// The amount the channel says was ordered / paid.
    pub amount: Option<Money>,
    pub paid_at: Option<DateTime<Utc>>,
    /// The merchant account the channel says the trade belongs to (WeChat
    /// mchid, Alipay seller_id).
    pub merchant_account: Option<String>,
    /// The app the trade belongs to (WeChat appid).
    pub app_id: Option<String>,
}

/// A verified, decrypted callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The channel's id for this notification (duplicates repeat it).
    pub event_id: String,
    pub event_type: String,
    pub trade: ChannelTrade,
}

/// What paymux asks a channel to refund. Asking again with the same request
/// never refunds twice: `out_refund_no` is the channel's idempotency key.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// The paid payment's id (its `out_trade_no`).
    pub out_trade_no: String,
    /// How it was paid (UnionPay refunds QR payments under another product).
    pub method: PayMethod,
    /// Our refund id: WeChat's `out_refund_no`, Alipay's `out_request_no`,
    /// UnionPay's `orderId` (without the underscore).
    pub out_refund_no: String,
    pub amount: Money,
    /// What the payment was for (WeChat and UnionPay check it).
    pub total: Money,
    pub reason: Option<String>,
    /// Where the channel posts the refund's result, for channels that do.
    pub notify_url: String,
    /// The channel's id of the paid trade (UnionPay refunds name it).
    pub channel_trade_no: Option<String>,
    /// When the refund was made here (UnionPay's `txnTime`).
    pub created_at: DateTime<Utc>,
}

/// A refund's state as the channel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// Accepted, money not back yet (WeChat PROCESSING); query or wait for the callback.
    Processing,
    /// The money went back (WeChat SUCCESS, Alipay fund_change / REFUND_SUCCESS).
    Succeeded,
    /// Abandoned for good (WeChat CLOSED / ABNORMAL).
    Failed,
}

/// A refund as reported by a refund call, a query or a callback.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRefund {
    pub out_refund_no: String,
    pub state: RefundState,
    /// The channel's own refund id.
    pub refund_id: Option<String>,
    /// The amount the channel says is refunded.
    pub amount: Option<Money>,
    pub refunded_at: Option<DateTime<Utc>>,
    /// Why it failed, in the channel's words.
    pub failure: Option<String>,
}

/// A verified, decrypted refund callback.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundNotification {
    /// The channel's id for this notification (duplicates repeat it).
    pub event_id: String,
    pub out_trade_no: String,
    pub refund: ChannelRefund,
}

/// What paymux answers the channel after handling a callback, in the channel's own format.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// An incoming callback exactly as received: headers and the raw body bytes
/// (signatures are over the bytes as sent, never over re-serialised JSON).
#[derive(Debug, Clone)]
pub struct Callback<'a> {
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

#[async_trait]
pub trait Channel: Send + Sync {
    /// Prepares an order at the channel. Safe to retry with the same request.
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError>;

    /// Asks the channel for the trade's current state.
    async fn query(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError>;

    /// Closes the order at the channel so it can no longer be paid. Closing an
    /// order that is already closed is a success.
    async fn close(&self, out_trade_no: &str) -> Result<(), ChannelError>;

    /// Verifies and decodes a payment callback. Must reject a bad signature,
    /// a stale timestamp or a tampered body without side effects.
    async fn parse_callback(
        &self,
        callback: Callback<'_>,
        now: DateTime<Utc>,
    ) -> Result<Notification, ChannelError>;

    /// The reply the channel expects after a callback was handled (`ok`) or must be retried.
    fn callback_reply(&self, ok: bool) -> CallbackReply;

    /// Asks the channel to refund. A timeout or 5xx is an unknown outcome
    /// (the refund may have been made): query it, or repeat the same request,
    /// which never refunds twice.
    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError>;

    /// Asks the channel about a refund made with `req`.
    /// [`ChannelError::NotFound`] means the channel never received it.
    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError>;

    /// Verifies and decodes a refund callback (sent to the refund's own
    /// callback URL). Channels whose refunds settle in the call itself send
    /// none; for them any callback there is refused.
    async fn parse_refund_callback(
        &self,
        callback: Callback<'_>,
        now: DateTime<Utc>,
    ) -> Result<RefundNotification, ChannelError> {
        let _ = (callback, now);
        Err(ChannelError::Protocol(
            "this channel sends no refund callbacks".into(),
        ))
    }

    /// Whether [`Channel::bill`] reads this channel's bills.
    fn reads_bills(&self) -> bool {
        false
    }

    /// Downloads the channel's bill of the China-time day `date` to a
    /// temporary file and checks its integrity (before anything is read
    /// from it). The channel makes a day's bill the next morning.
    async fn bill(&self, date: NaiveDate) -> Result<BillFile, ChannelError> {
        let _ = date;
        Err(ChannelError::Config(
            "paymux does not read this channel's bills yet".into(),
        ))
    }

    /// A harmless authenticated call that proves the account's keys and
    /// endpoint work. By default: a query of an order that does not exist,
    /// for which "not found" is the correct, authenticated answer.
    async fn probe(&self) -> Result<(), ChannelError> {
        let out_trade_no = format!("paymuxprobe{}", paymux_core::new_id("p").replace('_', ""));
        match self.query(&out_trade_no).await {
            Ok(_) | Err(ChannelError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Explains a failed [`Channel::probe`] to an operator: a stable code and
    /// what to check. Channels refine this with what their errors mean.
    fn diagnose(&self, err: &ChannelError) -> Diagnosis {
        Diagnosis::generic(err)
    }
}

/// Why an account does not work, for `paymux channel test` and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// Stable: `UNREACHABLE`, `CLOCK_SKEW`, `WRONG_SERIAL`, `WRONG_KEY`,
    /// `WRONG_APIV3_KEY`, `PLATFORM_KEY_MISMATCH`, `REJECTED`, `CONFIG`, `PROTOCOL`.
    pub code: &'static str,
    /// What happened and what to check. Never contains a secret.
    pub message: String,
}

impl Diagnosis {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Diagnosis {
            code,
            message: message.into(),
        }
    }

    /// What any channel's error means, without channel-specific knowledge.
    pub fn generic(err: &ChannelError) -> Self {
        match err {
            ChannelError::Transport(e) => Diagnosis::new(
                "UNREACHABLE",
                format!("the channel could not be reached or failed ({e}); check the base URL, DNS, firewall and proxy"),
            ),
            ChannelError::RateLimited { .. } => Diagnosis::new(
                "RATE_LIMITED",
                "the channel's rate limit was reached; try again shortly",
            ),
            ChannelError::CircuitOpen { retry_after } => Diagnosis::new(
                "UNREACHABLE",
                format!("calls to this account are suspended for {}s after repeated failures", retry_after.as_secs()),
            ),
            ChannelError::StaleTimestamp(e) => Diagnosis::new(
                "CLOCK_SKEW",
                format!("timestamps disagree ({e}); synchronise this machine's clock (NTP)"),
            ),
            ChannelError::InvalidSignature(e) => Diagnosis::new(
                "PLATFORM_KEY_MISMATCH",
                format!("the channel's answer did not verify ({e}); check the platform public key / certificates configured for the account and that the base URL is the right endpoint"),
            ),
            ChannelError::Decrypt => Diagnosis::new(
                "DECRYPT_FAILED",
                "the channel's encrypted content did not decrypt; check the account's symmetric key",
            ),
            ChannelError::Rejected { code, message } => Diagnosis::new(
                "REJECTED",
                format!("the channel refused the call: {code}: {message}"),
            ),
            ChannelError::NotFound => Diagnosis::new("REJECTED", "unexpected 'not found'"),
            ChannelError::Protocol(e) => Diagnosis::new(
                "PROTOCOL",
                format!("the endpoint does not speak the channel's protocol ({e}); check the base URL"),
            ),
            ChannelError::Config(e) => Diagnosis::new("CONFIG", format!("the account's configuration is unusable: {e}")),
        }
    }
}
