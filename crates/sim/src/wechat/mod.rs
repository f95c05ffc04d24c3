//! WeChat Pay API v3 simulator.
//!
//! Same paths, fields, signatures and encryption as `api.mch.weixin.qq.com`:
//! requests must carry a valid `WECHATPAY2-SHA256-RSA2048` Authorization made
//! with the registered merchant key, every answer is signed with the
//! simulator's own platform key (served as a platform certificate through
//! `GET /v3/certificates`), and payment callbacks are signed and encrypted
//! exactly like WeChat's. Control endpoints (`/merchants`, `/platform`, `/pay`)
//! stand in for what the WeChat app and the merchant portal do.
//!
//! Signing rules and wire types come from `paymux_channels::wechat`, so the
//! simulator and the client cannot drift apart.

mod api;
pub mod bill;
mod refund;
pub mod web_auth;
pub use refund::{RefundView, SimRefundState};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use paymux_channels::keys::{PrivateKey, PublicKey};
use paymux_channels::wechat::sign;
use paymux_channels::wechat::to_wechat_time;
use paymux_channels::wechat::types::{
    headers, EncryptedResource, NotifyBody, Payer, PrepayBody, Transaction, TransactionAmount,
    AEAD_AES_256_GCM,
};
use paymux_core::{Clock, SystemClock};
use serde::{Deserialize, Serialize};

pub use crate::callback::CallbackAttempt;
use crate::faults::Faults;

pub use api::router;

/// Orders kept in memory before new ones are refused.
pub const MAX_ORDERS: usize = 1_000_000;
/// Merchants kept in memory before new ones are refused.
pub const MAX_MERCHANTS: usize = 100_000;
/// Most callbacks one `/pay` call may send.
pub const MAX_CALLBACKS: u32 = 20;

/// A merchant account at the simulator.
#[derive(Clone, Serialize, Deserialize)]
pub struct SimMerchant {
    pub mchid: String,
    /// Serial of the merchant API certificate, as the merchant puts it in `serial_no`.
    pub serial_no: String,
    /// The merchant's public key: SPKI PEM, or its API certificate PEM.
    pub public_key_pem: String,
    /// The APIv3 key (32 bytes) callbacks and certificates are encrypted with.
    pub apiv3_key: String,
}

impl std::fmt::Debug for SimMerchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimMerchant")
            .field("mchid", &self.mchid)
            .field("serial_no", &self.serial_no)
            .finish_non_exhaustive()
    }
}

/// The simulator's platform identity, to configure a merchant client with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformInfo {
    /// Serial of the platform certificate (`Wechatpay-Serial` of every answer).
    pub serial_no: String,
    pub certificate_pem: String,
    /// The same key as SPKI PEM, for WeChat Pay public-key mode (its id is `serial_no`).
    pub public_key_pem: String,
}

/// A corrupted callback, for fault-injection tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The signature does not match the body.
    BadSignature,
    /// Correctly signed, but the encrypted resource was altered (decryption fails).
    TamperedCiphertext,
    /// Correctly signed, with a timestamp ten minutes in the past.
    StaleTimestamp,
    /// Genuine in every way, but the transaction is another merchant
    /// number's (a platform key signs every merchant's callbacks).
    OtherMchid,
    /// Genuine in every way, but the transaction is another app's.
    OtherAppid,
}

/// `POST /pay`: the payer pays an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayRequest {
    pub out_trade_no: String,
    /// Needed only when several merchants used the same out_trade_no.
    #[serde(default)]
    pub mchid: Option<String>,
    /// How many times the callback is delivered (duplicates share the notification id).
    #[serde(default = "crate::callback::one")]
    pub callbacks: u32,
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Build and sign the callbacks but do not send them: they come back in
    /// the outcome's `held`.
    #[serde(default)]
    pub hold: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayOutcome {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub notification_id: String,
    pub callbacks: Vec<CallbackAttempt>,
    /// The callbacks built but not sent, when the request said `hold`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::callback::HeldCallback>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("order not found")]
    OrderNotFound,
    #[error("order is closed")]
    OrderClosed,
    #[error("several merchants have out_trade_no {0}: give mchid")]
    Ambiguous(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("simulator error: {0}")]
    Internal(String),
}

impl From<paymux_channels::ChannelError> for SimError {
    fn from(e: paymux_channels::ChannelError) -> Self {
        SimError::Internal(e.to_string())
    }
}

/// WeChat's trade types, one per prepay endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TradeType {
    Jsapi,
    Native,
    H5,
    App,
}

impl TradeType {
    fn as_str(self) -> &'static str {
        match self {
            TradeType::Jsapi => "JSAPI",
            TradeType::Native => "NATIVE",
            TradeType::H5 => "MWEB",
            TradeType::App => "APP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderState {
    NotPay,
    Success,
    Closed,
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub body: PrepayBody,
    pub trade_type: TradeType,
    pub prepay_id: String,
    pub state: OrderState,
    pub transaction_id: Option<String>,
    pub success_time: Option<String>,
    pub notification_id: Option<String>,
}

pub(crate) struct Merchant {
    pub info: SimMerchant,
    pub key: PublicKey,
}

/// Headers of an outgoing callback.
pub(crate) type HeaderList = Vec<(&'static str, String)>;

/// What a callback announces: its event type, summary and resource type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotificationKind {
    pub event_type: &'static str,
    pub summary: &'static str,
    pub original_type: &'static str,
}

/// The simulator. Everything lives in memory.
pub struct WechatSim {
    platform_key: PrivateKey,
    platform: PlatformInfo,
    pub(crate) merchants: Mutex<HashMap<String, Arc<Merchant>>>,
    /// Keyed by (mchid, out_trade_no): out_trade_no is unique per merchant.
    pub(crate) orders: Mutex<HashMap<(String, String), Order>>,
    http: reqwest::Client,
    seq: AtomicU64,
    pub(crate) clock: Arc<dyn Clock>,
    /// Injected faults (`/faults`).
    pub faults: Arc<Faults>,
    /// Keyed by (mchid, out_refund_no).
    pub(crate) refunds: Mutex<HashMap<(String, String), refund::SimRefund>>,
    /// Bills made for download, by token.
    pub(crate) bills: crate::bills::KeptBills,
    /// Web authorisation (网页授权) of the official accounts registered.
    pub web_auth: Arc<web_auth::WebAuth>,
}

impl std::fmt::Debug for WechatSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatSim")
            .field("platform_serial", &self.platform.serial_no)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WechatSim {
    /// A simulator with a fresh RSA-2048 platform key and a self-signed
    /// platform certificate.
    pub fn new() -> Arc<WechatSim> {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// Like [`WechatSim::new`], with the clock used for timestamps and checks.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<WechatSim> {
        // Failing here means the system RNG or the crypto library is broken;
        // there is no simulator to offer then.
        let (platform_key, platform) = make_platform().expect("simulator platform key");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("simulator HTTP client");
        Arc::new(WechatSim {
            platform_key,
            platform,
            merchants: Mutex::new(HashMap::new()),
            orders: Mutex::new(HashMap::new()),
            http,
            seq: AtomicU64::new(1),
            clock: clock.clone(),
            faults: Arc::new(Faults::default()),
            refunds: Mutex::new(HashMap::new()),
            bills: Default::default(),
            web_auth: Arc::new(web_auth::WebAuth::new(clock.clone())),
        })
    }

    pub fn platform(&self) -> PlatformInfo {
        self.platform.clone()
    }

    /// Registers (or replaces) a merchant. An unusable key is logged and ignored.
    pub fn register_merchant(&self, m: SimMerchant) {
        if let Err(e) = self.try_register_merchant(m) {
            tracing::warn!(error = %e, "simulator refused a merchant");
        }
    }

    /// Registers (or replaces) a merchant, saying why it was refused.
    pub fn try_register_merchant(&self, m: SimMerchant) -> Result<(), SimError> {
        if m.mchid.is_empty() || m.serial_no.is_empty() {
            return Err(SimError::Invalid("mchid and serial_no are required".into()));
        }
        if m.apiv3_key.len() != 32 {
            return Err(SimError::Invalid("apiv3_key must be 32 bytes".into()));
        }
        let key = PublicKey::from_key_or_certificate_pem(&m.public_key_pem)
            .map_err(|e| SimError::Invalid(e.to_string()))?;
        let mut merchants = lock(&self.merchants);
        if merchants.len() >= MAX_MERCHANTS && !merchants.contains_key(&m.mchid) {
            return Err(SimError::Invalid("too many merchants".into()));
        }
        merchants.insert(m.mchid.clone(), Arc::new(Merchant { info: m, key }));
        Ok(())
    }

    pub(crate) fn merchant(&self, mchid: &str) -> Option<Arc<Merchant>> {
        lock(&self.merchants).get(mchid).cloned()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A new id: unique within this simulator, unpredictable across runs.
    pub(crate) fn unique(&self, digits: usize) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut rnd = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut rnd);
        let mut s = format!("{n:08}");
        for b in rnd {
            s.push_str(&format!("{:02}", b % 100));
        }
        s.chars().take(digits).collect()
    }

    /// Signs an answer or callback body: returns (timestamp, nonce, signature).
    pub(crate) fn sign_body(
        &self,
        timestamp: i64,
        body: &[u8],
    ) -> Result<(String, String, String), SimError> {
        let ts = timestamp.to_string();
        let nonce = sign::random_nonce(32);
        let sig = sign::sign_response(&self.platform_key, &ts, &nonce, body)?;
        Ok((ts, nonce, sig))
    }

    pub(crate) fn platform_serial(&self) -> &str {
        &self.platform.serial_no
    }

    /// The transaction as WeChat reports it (query answer and callback resource).
    pub(crate) fn transaction_of(order: &Order) -> Transaction {
        let paid = order.state == OrderState::Success;
        let currency = order
            .body
            .amount
            .currency
            .clone()
            .unwrap_or_else(|| "CNY".into());
        let (state, desc) = match order.state {
            OrderState::NotPay => ("NOTPAY", "订单未支付"),
            OrderState::Success => ("SUCCESS", "支付成功"),
            OrderState::Closed => ("CLOSED", "订单已关闭"),
        };
        Transaction {
            appid: Some(order.body.appid.clone()),
            mchid: Some(order.body.mchid.clone()),
            out_trade_no: order.body.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone(),
            trade_type: paid.then(|| order.trade_type.as_str().to_string()),
            trade_state: state.into(),
            trade_state_desc: Some(desc.into()),
            bank_type: paid.then(|| "OTHERS".to_string()),
            attach: Some(order.body.attach.clone().unwrap_or_default()),
            success_time: order.success_time.clone(),
            payer: paid.then(|| Payer {
                openid: Some(
                    order
                        .body
                        .payer
                        .as_ref()
                        .and_then(|p| p.openid.clone())
                        .unwrap_or_else(|| "oSimulatedPayer000000000000".into()),
                ),
            }),
            amount: Some(TransactionAmount {
                total: Some(order.body.amount.total),
                payer_total: paid.then_some(order.body.amount.total),
                currency: Some(currency.clone()),
                payer_currency: Some(currency),
            }),
        }
    }

    /// Every order with this out_trade_no (one per merchant that used it).
    pub fn trades(&self, out_trade_no: &str) -> Vec<crate::SimTrade> {
        lock(&self.orders)
            .iter()
            .filter(|((_, o), _)| o == out_trade_no)
            .map(|(_, order)| crate::SimTrade {
                state: match order.state {
                    OrderState::NotPay => crate::SimTradeState::Unpaid,
                    OrderState::Success => crate::SimTradeState::Paid,
                    OrderState::Closed => crate::SimTradeState::Closed,
                },
                amount: order.body.amount.total,
            })
            .collect()
    }

    /// The payer pays: the order becomes SUCCESS and the TRANSACTION.SUCCESS
    /// callback goes to its notify_url `callbacks` times. Paying a paid order
    /// again only re-sends the callback (same notification id).
    pub async fn pay(&self, req: PayRequest) -> Result<PayOutcome, SimError> {
        if req.callbacks > MAX_CALLBACKS {
            return Err(SimError::Invalid(format!(
                "callbacks must be at most {MAX_CALLBACKS}"
            )));
        }
        let now = self.now();
        let order = {
            let mut orders = lock(&self.orders);
            let key = match &req.mchid {
                Some(m) => (m.clone(), req.out_trade_no.clone()),
                None => {
                    let mut keys = orders.keys().filter(|(_, o)| *o == req.out_trade_no);
                    let first = keys.next().cloned().ok_or(SimError::OrderNotFound)?;
                    if keys.next().is_some() {
                        return Err(SimError::Ambiguous(req.out_trade_no.clone()));
                    }
                    first
                }
            };
            let order = orders.get_mut(&key).ok_or(SimError::OrderNotFound)?;
            match order.state {
                OrderState::Closed => return Err(SimError::OrderClosed),
                OrderState::Success => {}
                OrderState::NotPay => {
                    order.state = OrderState::Success;
                    order.transaction_id = Some(format!("4200{}", self.unique(24)));
                    order.success_time = Some(to_wechat_time(now));
                    order.notification_id = Some(uuid_like());
                }
            }
            order.clone()
        };
        let merchant = self
            .merchant(&order.body.mchid)
            .ok_or_else(|| SimError::Internal("merchant vanished".into()))?;
        let notification_id = order.notification_id.clone().unwrap_or_default();
        let mut transaction = Self::transaction_of(&order);
        match req.fault {
            Some(Fault::OtherMchid) => transaction.mchid = Some("1900009999".into()),
            Some(Fault::OtherAppid) => transaction.appid = Some("wx0000000000other".into()),
            _ => {}
        }
        let mut copies = Vec::new();
        for _ in 0..req.callbacks {
            let (body, hdrs) =
                self.callback_request(&merchant.info, &notification_id, &transaction, req.fault)?;
            copies.push(self.callback(&order.body.notify_url, body, hdrs));
        }
        let (attempts, held) = self
            .faults
            .send_or_hold(copies, req.hold)
            .await
            .map_err(SimError::Internal)?;
        Ok(PayOutcome {
            out_trade_no: order.body.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            notification_id,
            callbacks: attempts,
            held,
        })
    }

    /// Builds one TRANSACTION.SUCCESS callback: body bytes and headers.
    fn callback_request(
        &self,
        merchant: &SimMerchant,
        notification_id: &str,
        transaction: &Transaction,
        fault: Option<Fault>,
    ) -> Result<(Vec<u8>, HeaderList), SimError> {
        let plain =
            serde_json::to_vec(transaction).map_err(|e| SimError::Internal(e.to_string()))?;
        let kind = NotificationKind {
            event_type: "TRANSACTION.SUCCESS",
            summary: "支付成功",
            original_type: "transaction",
        };
        self.signed_notification(merchant, notification_id, kind, &plain, fault)
    }

    /// Encrypts `plain` under the merchant's APIv3 key and signs the
    /// notification with the platform key, as WeChat does for every callback.
    pub(crate) fn signed_notification(
        &self,
        merchant: &SimMerchant,
        notification_id: &str,
        kind: NotificationKind,
        plain: &[u8],
        fault: Option<Fault>,
    ) -> Result<(Vec<u8>, HeaderList), SimError> {
        let now = self.now();
        let nonce = sign::random_nonce(12);
        let mut ciphertext = sign::encrypt_resource(
            merchant.apiv3_key.as_bytes(),
            &nonce,
            kind.original_type,
            plain,
        )?;
        if fault == Some(Fault::TamperedCiphertext) {
            let mut raw = B64
                .decode(&ciphertext)
                .map_err(|e| SimError::Internal(e.to_string()))?;
            if let Some(b) = raw.first_mut() {
                *b ^= 0x01;
            }
            ciphertext = B64.encode(raw);
        }
        let body = NotifyBody {
            id: notification_id.to_string(),
            create_time: to_wechat_time(now),
            resource_type: "encrypt-resource".into(),
            event_type: kind.event_type.into(),
            summary: kind.summary.into(),
            resource: EncryptedResource {
                algorithm: AEAD_AES_256_GCM.into(),
                ciphertext,
                associated_data: Some(kind.original_type.into()),
                original_type: Some(kind.original_type.into()),
                nonce,
            },
        };
        let body = serde_json::to_vec(&body).map_err(|e| SimError::Internal(e.to_string()))?;
        let timestamp = match fault {
            Some(Fault::StaleTimestamp) => now.timestamp() - 600,
            _ => now.timestamp(),
        };
        let (ts, nonce, mut signature) = self.sign_body(timestamp, &body)?;
        if fault == Some(Fault::BadSignature) {
            // A well-formed signature, but over different bytes.
            let mut other = body.clone();
            other.push(b' ');
            signature = self.sign_body(timestamp, &other)?.2;
        }
        let hdrs = vec![
            ("Content-Type", "application/json".to_string()),
            (headers::TIMESTAMP, ts),
            (headers::NONCE, nonce),
            (headers::SERIAL, self.platform.serial_no.clone()),
            (headers::SIGNATURE, signature),
            (headers::SIGNATURE_TYPE, sign::SCHEMA.to_string()),
            (headers::REQUEST_ID, self.request_id()),
        ];
        Ok((body, hdrs))
    }

    pub(crate) fn callback(
        &self,
        url: &str,
        body: Vec<u8>,
        hdrs: HeaderList,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.post(url).body(body);
        for (k, v) in hdrs {
            req = req.header(k, v);
        }
        req
    }

    pub(crate) fn request_id(&self) -> String {
        let mut b = [0u8; 20];
        let _ = aws_lc_rs::rand::fill(&mut b);
        format!("{}-0", hex::encode_upper(b))
    }
}

/// A random id shaped like WeChat's notification ids (a UUID).
pub(crate) fn uuid_like() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn make_platform() -> Result<(PrivateKey, PlatformInfo), String> {
    let key_pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CountryName, "CN");
    dn.push(rcgen::DnType::OrganizationName, "paymux simulator");
    dn.push(
        rcgen::DnType::CommonName,
        "paymux WeChat Pay simulator platform",
    );
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    // 20 random bytes, top bit clear (a positive DER integer needs no 0x00
    // prefix) and a non-zero first nibble, so the DER hex and WeChat's
    // big-integer hex spelling of the serial are the same string.
    let mut serial = [0u8; 20];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| "random serial".to_string())?;
    serial[0] = (serial[0] & 0x7F) | 0x10;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    let certificate_pem = cert.pem();
    let platform_key =
        PrivateKey::from_pem(&key_pair.serialize_pem()).map_err(|e| e.to_string())?;
    let parsed = paymux_channels::keys::Certificate::from_pem(&certificate_pem)
        .map_err(|e| e.to_string())?;
    Ok((
        platform_key,
        PlatformInfo {
            serial_no: parsed.serial_no,
            certificate_pem,
            public_key_pem: key_pair.public_key_pem(),
        },
    ))
}
