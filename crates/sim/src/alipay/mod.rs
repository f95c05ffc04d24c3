//! Alipay Open Platform simulator (OpenAPI v2 gateway).
//!
//! One endpoint, `/gateway.do`, dispatches on `method=` with the parameters
//! in the query string or a form body, exactly like `openapi.alipay.com`.
//! Requests must be RSA2-signed with the registered app key; every answer is
//! `{"<method>_response": {...}, "sign": "..."}` signed with the simulator's
//! own Alipay key, and async notifies are signed form POSTs. Control
//! endpoints (`/merchants`, `/platform`, `/pay`) stand in for the Alipay
//! console and the payer's Alipay app.
//!
//! Signing rules come from `paymux_channels::alipay::sign`, so the simulator
//! and the client cannot drift apart.

mod api;
mod bill;
mod certs;
mod refund;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use paymux_channels::alipay::sign::{self, Params};
use paymux_channels::keys::{PrivateKey, PublicKey};
use paymux_core::{Clock, SystemClock};
use serde::{Deserialize, Serialize};

pub use crate::callback::CallbackAttempt;
use crate::faults::Faults;

pub use api::router;
pub use refund::RefundView;

/// Orders kept in memory before new ones are refused.
pub const MAX_ORDERS: usize = 1_000_000;
/// Apps kept in memory before new ones are refused.
pub const MAX_APPS: usize = 100_000;
/// Most notifies one `/pay` call may send.
pub const MAX_CALLBACKS: u32 = 20;
/// A barcode payment whose `auth_code` ends in this waits for the payer to
/// confirm on the phone (`10003`) until `/pay` is called; any other code is
/// charged at once.
pub const CONFIRM_SUFFIX: &str = "0000";

/// `POST /merchants`: an app registered at the simulator.
#[derive(Clone, Serialize, Deserialize)]
pub struct SimApp {
    pub app_id: String,
    /// The app public key (SPKI PEM) or its public-key certificate PEM.
    pub app_public_key: String,
    /// The seller (`2088…`) the app's trades are paid to; made up when absent.
    #[serde(default)]
    pub seller_id: Option<String>,
    /// Certificate mode: with a public key in `app_public_key`, the simulator
    /// issues the app's public-key certificate and answers it. (An app
    /// certificate given in `app_public_key` means certificate mode too.)
    #[serde(default)]
    pub cert_mode: bool,
    /// The app's AES content key (base64), for `encrypt_type=AES` requests.
    #[serde(default)]
    pub encrypt_key: Option<String>,
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub app_id: String,
    pub seller_id: String,
    /// Certificate mode: the app's public-key certificate and its `app_cert_sn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_cert_sn: Option<String>,
}

impl std::fmt::Debug for SimApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimApp")
            .field("app_id", &self.app_id)
            .field("seller_id", &self.seller_id)
            .finish_non_exhaustive()
    }
}

/// `GET /platform`: what a merchant configures to verify the simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformInfo {
    /// The simulator's Alipay public key (SPKI PEM), for public-key mode.
    pub alipay_public_key: String,
    /// Certificate mode: the Alipay public-key certificate
    /// (alipayCertPublicKey_RSA2.crt), the root bundle (alipayRootCert.crt)
    /// and their serial numbers.
    pub alipay_cert: String,
    pub alipay_root_cert: String,
    pub alipay_cert_sn: String,
    pub alipay_root_cert_sn: String,
}

/// A corrupted notify, for fault-injection tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The signature does not match the parameters.
    BadSignature,
    /// Correctly signed, but for another app_id.
    WrongAppId,
    /// Correctly signed, but for another seller.
    WrongSeller,
    /// Correctly signed, with a total_amount one fen higher than the order's.
    WrongAmount,
}

/// `POST /pay`: the payer pays an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayRequest {
    pub out_trade_no: String,
    /// Needed only when several apps used the same out_trade_no.
    #[serde(default)]
    pub app_id: Option<String>,
    /// How many times the notify is delivered (duplicates share the notify_id).
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
    pub trade_no: String,
    pub notify_id: String,
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
    #[error("several apps have out_trade_no {0}: give app_id")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TradeStatus {
    WaitBuyerPay,
    Success,
    Closed,
}

impl TradeStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::Success => "TRADE_SUCCESS",
            TradeStatus::Closed => "TRADE_CLOSED",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub app_id: String,
    pub method: String,
    pub out_trade_no: String,
    /// As the merchant sent it (already checked to be an exact yuan amount).
    pub total_amount: String,
    pub subject: String,
    pub notify_url: Option<String>,
    pub trade_no: String,
    pub buyer_id: String,
    pub status: TradeStatus,
    pub gmt_create: String,
    pub gmt_payment: Option<String>,
    pub notify_id: Option<String>,
}

pub(crate) struct App {
    pub info: SimApp,
    pub seller_id: String,
    pub key: PublicKey,
    /// Set in certificate mode: requests must carry this `app_cert_sn`.
    pub app_cert_sn: Option<String>,
}

/// The simulator. Everything lives in memory.
pub struct AlipaySim {
    key: PrivateKey,
    platform: PlatformInfo,
    authority: certs::Authority,
    pub(crate) apps: Mutex<HashMap<String, Arc<App>>>,
    /// Keyed by (app_id, out_trade_no): out_trade_no is unique per app.
    pub(crate) orders: Mutex<HashMap<(String, String), Order>>,
    http: reqwest::Client,
    seq: AtomicU64,
    pub(crate) clock: Arc<dyn Clock>,
    /// Injected faults (`/faults`).
    pub faults: Arc<Faults>,
    /// Refunds made, by (app_id, out_trade_no), oldest first.
    pub(crate) refunds: Mutex<HashMap<(String, String), Vec<refund::SimRefund>>>,
    /// Bills made for download, by token.
    pub(crate) bills: crate::bills::KeptBills,
}

impl std::fmt::Debug for AlipaySim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipaySim").finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AlipaySim {
    /// A simulator with a fresh RSA-2048 Alipay key.
    pub fn new() -> Arc<AlipaySim> {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<AlipaySim> {
        // Failing here means the system RNG or the crypto library is broken;
        // there is no simulator to offer then.
        let authority = certs::Authority::new().expect("simulator root CA");
        let (key, alipay_public_key, alipay_cert) =
            certs::alipay_identity(&authority).expect("simulator Alipay key");
        let alipay_cert_sn = sign::cert_sn(&alipay_cert).expect("simulator Alipay cert SN");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("simulator HTTP client");
        Arc::new(AlipaySim {
            key,
            platform: PlatformInfo {
                alipay_public_key,
                alipay_cert,
                alipay_root_cert: authority.root_pem.clone(),
                alipay_cert_sn,
                alipay_root_cert_sn: authority.root_sn.clone(),
            },
            authority,
            apps: Mutex::new(HashMap::new()),
            orders: Mutex::new(HashMap::new()),
            refunds: Mutex::new(HashMap::new()),
            bills: Default::default(),
            http,
            seq: AtomicU64::new(1),
            clock,
            faults: Arc::new(Faults::default()),
        })
    }

    pub fn platform(&self) -> PlatformInfo {
        self.platform.clone()
    }

    /// Registers (or replaces) an app: its seller id and, in certificate
    /// mode, its public-key certificate.
    pub fn register_app(&self, app: SimApp) -> Result<Registered, SimError> {
        if app.app_id.is_empty() || !app.app_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SimError::Invalid(
                "app_id must be letters and digits".into(),
            ));
        }
        let key = PublicKey::from_key_or_certificate_pem(&app.app_public_key)
            .map_err(|e| SimError::Invalid(format!("app_public_key: {e}")))?;
        if let Some(k) = &app.encrypt_key {
            sign::aes_encrypt(k, "").map_err(|e| SimError::Invalid(format!("encrypt_key: {e}")))?;
        }
        let given_cert = app.app_public_key.contains("BEGIN CERTIFICATE");
        let app_cert = match (given_cert, app.cert_mode) {
            (true, _) => Some(app.app_public_key.clone()),
            (false, true) => Some(
                self.authority
                    .issue(&format!("{} (app public key)", app.app_id), &key.to_pem())?,
            ),
            (false, false) => None,
        };
        let app_cert_sn = match &app_cert {
            Some(pem) => Some(
                sign::cert_sn(pem)
                    .map_err(|e| SimError::Invalid(format!("app certificate: {e}")))?,
            ),
            None => None,
        };
        let seller_id = match &app.seller_id {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!("2088{}", self.unique(12)),
        };
        let mut apps = lock(&self.apps);
        if apps.len() >= MAX_APPS && !apps.contains_key(&app.app_id) {
            return Err(SimError::Invalid("too many apps".into()));
        }
        let app_id = app.app_id.clone();
        apps.insert(
            app_id.clone(),
            Arc::new(App {
                info: app,
                seller_id: seller_id.clone(),
                key,
                app_cert_sn: app_cert_sn.clone(),
            }),
        );
        Ok(Registered {
            app_id,
            seller_id,
            app_cert: if given_cert { None } else { app_cert },
            app_cert_sn,
        })
    }

    pub(crate) fn app(&self, app_id: &str) -> Option<Arc<App>> {
        lock(&self.apps).get(app_id).cloned()
    }

    /// A new numeric id: unique within this simulator, unpredictable across runs.
    pub(crate) fn unique(&self, digits: usize) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut rnd = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut rnd);
        let mut s = format!("{n:06}");
        for b in rnd {
            s.push_str(&format!("{:02}", b % 100));
        }
        s.chars().take(digits).collect()
    }

    pub(crate) fn now_text(&self) -> String {
        sign::to_alipay_time(self.clock.now())
    }

    /// The gateway's answer: the node as compact JSON (or, for an encrypted
    /// request, the JSON string of its ciphertext), signed as written; in
    /// certificate mode with the serial of the certificate that verifies it.
    pub(crate) fn answer(
        &self,
        method: &str,
        node: &serde_json::Value,
        cert_mode: bool,
        encrypt_key: Option<&str>,
    ) -> String {
        let content = match encrypt_key.map(|k| sign::aes_encrypt(k, &node.to_string())) {
            Some(Ok(ciphertext)) => serde_json::Value::String(ciphertext).to_string(),
            Some(Err(e)) => {
                tracing::error!(error = %e, "simulator could not encrypt an answer");
                node.to_string()
            }
            None => node.to_string(),
        };
        match sign::signed_response(&self.key, method, &content) {
            Ok(body) if cert_mode => format!(
                "{},\"alipay_cert_sn\":\"{}\"}}",
                body.trim_end_matches('}'),
                self.platform.alipay_cert_sn
            ),
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "simulator could not sign an answer");
                format!("{{\"{}\":{content}}}", sign::response_node(method))
            }
        }
    }

    /// Every order with this out_trade_no (one per app that used it).
    pub fn trades(&self, out_trade_no: &str) -> Vec<crate::SimTrade> {
        lock(&self.orders)
            .iter()
            .filter(|((_, o), _)| o == out_trade_no)
            .map(|(_, order)| crate::SimTrade {
                // A trade closed by a full refund was paid all the same.
                state: match order.status {
                    _ if order.gmt_payment.is_some() => crate::SimTradeState::Paid,
                    TradeStatus::WaitBuyerPay => crate::SimTradeState::Unpaid,
                    TradeStatus::Success => crate::SimTradeState::Paid,
                    TradeStatus::Closed => crate::SimTradeState::Closed,
                },
                // Accepted only when exact, so this cannot fail for a stored order.
                amount: sign::yuan_to_minor(&order.total_amount).unwrap_or(-1),
            })
            .collect()
    }

    /// The payer pays: the order becomes TRADE_SUCCESS and the notify goes to
    /// its notify_url `callbacks` times. Paying a paid order again only
    /// re-sends the notify (same notify_id).
    pub async fn pay(&self, req: PayRequest) -> Result<PayOutcome, SimError> {
        if req.callbacks > MAX_CALLBACKS {
            return Err(SimError::Invalid(format!(
                "callbacks must be at most {MAX_CALLBACKS}"
            )));
        }
        let order = {
            let mut orders = lock(&self.orders);
            let key = match &req.app_id {
                Some(a) => (a.clone(), req.out_trade_no.clone()),
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
            match order.status {
                TradeStatus::Closed => return Err(SimError::OrderClosed),
                TradeStatus::Success => {}
                TradeStatus::WaitBuyerPay => self.mark_paid(order),
            }
            order.clone()
        };
        let app = self
            .app(&order.app_id)
            .ok_or_else(|| SimError::Internal("app vanished".into()))?;
        let notify_id = order.notify_id.clone().unwrap_or_default();
        let (mut attempts, mut held) = (Vec::new(), Vec::new());
        if let Some(url) = &order.notify_url {
            let mut copies = Vec::new();
            for _ in 0..req.callbacks {
                let body = self.notify_body(&app, &order, req.fault)?;
                copies.push(self.notify_request(url, body));
            }
            (attempts, held) = self
                .faults
                .send_or_hold(copies, req.hold)
                .await
                .map_err(SimError::Internal)?;
        }
        Ok(PayOutcome {
            out_trade_no: order.out_trade_no.clone(),
            trade_no: order.trade_no.clone(),
            notify_id,
            callbacks: attempts,
            held,
        })
    }

    pub(crate) fn mark_paid(&self, order: &mut Order) {
        order.status = TradeStatus::Success;
        order.gmt_payment = Some(self.now_text());
        order.notify_id = Some(format!("2026{}", self.unique(30)));
    }

    /// One `trade_status_sync` notify, form-encoded and signed.
    fn notify_body(
        &self,
        app: &App,
        order: &Order,
        fault: Option<Fault>,
    ) -> Result<String, SimError> {
        self.notify_body_with(app, order, fault, Params::new())
    }

    /// A `trade_status_sync` notify with `extra` fields (a refund's
    /// `refund_fee` and `gmt_refund`), form-encoded and signed.
    fn notify_body_with(
        &self,
        app: &App,
        order: &Order,
        fault: Option<Fault>,
        extra: Params,
    ) -> Result<String, SimError> {
        let mut p = extra;
        let mut put = |k: &str, v: &str| {
            p.insert(k.to_string(), v.to_string());
        };
        let amount = match fault {
            Some(Fault::WrongAmount) => {
                let fen = sign::yuan_to_minor(&order.total_amount)?;
                sign::minor_to_yuan(fen + 1)?
            }
            _ => order.total_amount.clone(),
        };
        let app_id = match fault {
            Some(Fault::WrongAppId) => format!("{}9", order.app_id),
            _ => order.app_id.clone(),
        };
        let seller_id = match fault {
            Some(Fault::WrongSeller) => "2088000000000000".to_string(),
            _ => app.seller_id.clone(),
        };
        put("gmt_create", &order.gmt_create);
        put("charset", "utf-8");
        put("gmt_payment", order.gmt_payment.as_deref().unwrap_or(""));
        put("notify_time", &self.now_text());
        put("subject", &order.subject);
        put("buyer_id", &order.buyer_id);
        put("invoice_amount", &amount);
        put("version", "1.0");
        put("notify_id", order.notify_id.as_deref().unwrap_or(""));
        put(
            "fund_bill_list",
            &format!("[{{\"amount\":\"{amount}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]"),
        );
        put("notify_type", "trade_status_sync");
        put("out_trade_no", &order.out_trade_no);
        put("total_amount", &amount);
        put("trade_status", order.status.as_str());
        put("trade_no", &order.trade_no);
        put("auth_app_id", &app_id);
        put("receipt_amount", &amount);
        put("point_amount", "0.00");
        put("app_id", &app_id);
        put("buyer_pay_amount", &amount);
        put("sign_type", sign::SIGN_TYPE);
        put("seller_id", &seller_id);
        let signature = if fault == Some(Fault::BadSignature) {
            // A well-formed signature over different content.
            let mut other = p.clone();
            other.insert("total_amount".into(), "0.01".into());
            sign::sign_notify(&self.key, &other)?
        } else {
            sign::sign_notify(&self.key, &p)?
        };
        p.insert("sign".into(), signature);
        Ok(sign::encode_form(&p))
    }

    fn notify_request(&self, url: &str, body: String) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
    }
}
