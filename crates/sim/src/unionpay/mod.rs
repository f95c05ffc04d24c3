//! China UnionPay online payments simulator (ACP 5.1.0).
//!
//! UnionPay's gateway paths (`/gateway/api/frontTransReq.do`,
//! `appTransReq.do`, `backTransReq.do`, `queryTrans.do`), its form fields
//! and its signatures: requests must be signed by a registered merchant's
//! certificate (`certId` + `signature`); answers and back notifications are
//! signed with the simulator's own UnionPay signing key and carry its
//! certificate in `signPubKeyCert`, issued under the simulator's own root
//! and intermediate (`GET /platform` hands them out). Control endpoints
//! (`/merchants`, `/platform`, `/pay`, `/refunds`, `/faults`) stand in for
//! UnionPay's merchant service, the payer and a bad day at UnionPay.
//!
//! Refunds (`backTransReq.do`, txnType 04) name the paid consumption by its
//! `queryId`; they are refused beyond what is left of the paid amount, settle
//! at once (or fail, at `refund_failure_rate`) and are notified to their
//! `backUrl` right after the answer.
//!
//! Signing rules come from `paymux_channels::unionpay::sign`, so the
//! simulator and the client cannot drift apart.

mod api;
mod certs;
mod refund;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use paymux_channels::keys::PublicKey;
use paymux_channels::unionpay::certs::cert_id_of_pem;
use paymux_channels::unionpay::sign::{self, Params};
use paymux_core::{Clock, SystemClock};
use serde::{Deserialize, Serialize};

pub use crate::callback::CallbackAttempt;
use crate::faults::Faults;
pub use refund::{SimRefund, SimRefundState};

pub use api::router;

/// Orders kept in memory before new ones are refused.
pub const MAX_ORDERS: usize = 1_000_000;
/// Merchants kept in memory before new ones are refused.
pub const MAX_MERCHANTS: usize = 100_000;
/// Most notifications one `/pay` call may send.
pub const MAX_CALLBACKS: u32 = 20;

/// `POST /merchants`: a merchant and the certificate it signs with. Give
/// `sign_cert` (PEM), or `public_key` (SPKI PEM) to have the simulator
/// issue the certificate, as UnionPay issues a merchant's PFX.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimMerchant {
    pub mer_id: String,
    #[serde(default)]
    pub sign_cert: Option<String>,
    #[serde(default)]
    pub public_key: Option<String>,
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub mer_id: String,
    /// The `certId` requests must carry (decimal serial of the certificate).
    pub cert_id: String,
    /// The merchant's signing certificate (issued here when a public key was given).
    pub sign_cert: String,
}

/// `GET /platform`: what a merchant configures to trust the simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformInfo {
    pub root_cert: String,
    pub middle_cert: String,
    /// UnionPay's signing certificate (also sent in every `signPubKeyCert`).
    pub sign_cert: String,
}

/// A corrupted back notification, for fault-injection tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The signature does not match the fields.
    BadSignature,
    /// Correctly signed, with a txnAmt one fen higher than the order's.
    WrongAmount,
    /// Correctly signed, for another merId.
    WrongMerId,
    /// Signed with UnionPay's key, but `signPubKeyCert` is issued under
    /// another root (same names, other keys).
    UntrustedChain,
    /// Signed with UnionPay's key, `signPubKeyCert` expired.
    ExpiredCert,
    /// Signed with UnionPay's key, `signPubKeyCert` chains correctly but
    /// names another company.
    NotUnionpayCert,
}

/// `POST /pay`: the payer pays an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayRequest {
    /// paymux's payment id (`pay_…`) or the UnionPay `orderId` itself.
    pub out_trade_no: String,
    /// Needed only when several merchants used the same orderId.
    #[serde(default)]
    pub mer_id: Option<String>,
    /// How many times the notification is delivered (duplicates share the queryId).
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
    pub order_id: String,
    pub query_id: String,
    pub callbacks: Vec<CallbackAttempt>,
    /// The callbacks built but not sent, when the request said `hold`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::callback::HeldCallback>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("order not found")]
    OrderNotFound,
    #[error("order can no longer be paid (payTimeout passed)")]
    OrderExpired,
    #[error("several merchants have orderId {0}: give mer_id")]
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

/// How the order reached the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// frontTransReq.do (PC / WAP gateway).
    Front,
    /// appTransReq.do (the UnionPay app SDK).
    App,
    /// backTransReq.do with txnSubType 07 (QR code).
    Qr,
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub kind: Kind,
    pub mer_id: String,
    pub order_id: String,
    pub txn_time: String,
    pub txn_amt: String,
    pub txn_sub_type: String,
    pub biz_type: String,
    pub channel_type: String,
    pub back_url: Option<String>,
    pub pay_timeout: Option<String>,
    /// The handle answered to the merchant: `tn` or `qrCode`.
    pub handle: Option<String>,
    pub paid: Option<Payment>,
}

#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub query_id: String,
    pub trace_no: String,
    pub trace_time: String,
    pub settle_date: String,
}

pub(crate) struct Merchant {
    pub cert_id: String,
    pub key: PublicKey,
}

/// The simulator. Everything lives in memory.
pub struct UnionpaySim {
    authority: certs::Authority,
    /// Made on first use: only fault tests need them.
    bad_certs: OnceLock<certs::BadCerts>,
    pub(crate) merchants: Mutex<HashMap<String, Arc<Merchant>>>,
    /// Keyed by (merId, orderId).
    pub(crate) orders: Mutex<HashMap<(String, String), Order>>,
    /// Refund transactions, keyed by (merId, the refund's orderId). Locked
    /// after `orders` when both are held.
    pub(crate) refunds: Mutex<HashMap<(String, String), refund::Refund>>,
    /// A paid consumption's queryId → its (merId, orderId), as refunds name it.
    pub(crate) query_ids: Mutex<HashMap<String, (String, String)>>,
    /// Injected faults (`/faults`): API faults on the back gateway paths,
    /// callback faults on payment and refund notifications, refund failures.
    pub faults: Arc<Faults>,
    http: reqwest::Client,
    seq: AtomicU64,
    pub(crate) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for UnionpaySim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionpaySim").finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl UnionpaySim {
    /// A simulator with a fresh root, intermediate and signing certificate.
    pub fn new() -> Arc<UnionpaySim> {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Arc<UnionpaySim> {
        // Failing here means the system RNG or the crypto library is broken;
        // there is no simulator to offer then.
        let authority = certs::Authority::new().expect("simulator UnionPay certificates");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("simulator HTTP client");
        Arc::new(UnionpaySim {
            authority,
            bad_certs: OnceLock::new(),
            merchants: Mutex::new(HashMap::new()),
            orders: Mutex::new(HashMap::new()),
            refunds: Mutex::new(HashMap::new()),
            query_ids: Mutex::new(HashMap::new()),
            faults: Arc::new(Faults::default()),
            http,
            seq: AtomicU64::new(1),
            clock,
        })
    }

    pub fn platform(&self) -> PlatformInfo {
        PlatformInfo {
            root_cert: self.authority.root.pem.clone(),
            middle_cert: self.authority.middle.pem.clone(),
            sign_cert: self.authority.sign_cert.clone(),
        }
    }

    /// Registers (or replaces) a merchant and the certificate it signs with.
    pub fn register_merchant(&self, m: SimMerchant) -> Result<Registered, SimError> {
        if m.mer_id.is_empty()
            || m.mer_id.len() > 15
            || !m.mer_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(SimError::Invalid(
                "mer_id must be 1-15 letters and digits".into(),
            ));
        }
        let sign_cert = match (&m.sign_cert, &m.public_key) {
            (Some(cert), None) => cert.clone(),
            (None, Some(public)) => {
                let key = PublicKey::from_pem(public)
                    .map_err(|e| SimError::Invalid(format!("public_key: {e}")))?;
                self.authority.issue_merchant(&m.mer_id, &key)?
            }
            _ => return Err(SimError::Invalid("give sign_cert or public_key".into())),
        };
        let key = PublicKey::from_key_or_certificate_pem(&sign_cert)
            .map_err(|e| SimError::Invalid(format!("sign_cert: {e}")))?;
        let cert_id =
            cert_id_of_pem(&sign_cert).map_err(|e| SimError::Invalid(format!("sign_cert: {e}")))?;
        let mut merchants = lock(&self.merchants);
        if merchants.len() >= MAX_MERCHANTS && !merchants.contains_key(&m.mer_id) {
            return Err(SimError::Invalid("too many merchants".into()));
        }
        merchants.insert(
            m.mer_id.clone(),
            Arc::new(Merchant {
                cert_id: cert_id.clone(),
                key,
            }),
        );
        Ok(Registered {
            mer_id: m.mer_id,
            cert_id,
            sign_cert,
        })
    }

    pub(crate) fn merchant(&self, mer_id: &str) -> Option<Arc<Merchant>> {
        lock(&self.merchants).get(mer_id).cloned()
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

    /// Signs outgoing fields as UnionPay does: `signPubKeyCert` (the
    /// simulator's signing certificate, or a bad one for a fault) is itself
    /// signed, then `signature` over everything.
    pub(crate) fn sign_out(&self, mut p: Params, cert: Option<&str>) -> Result<Params, SimError> {
        let cert = cert.unwrap_or(&self.authority.sign_cert);
        p.insert("signPubKeyCert".into(), certs::crlf(cert));
        p.remove("signature");
        let signature = sign::sign(&self.authority.sign_key, &p)?;
        p.insert("signature".into(), signature);
        Ok(p)
    }

    fn bad_certs(&self) -> Result<&certs::BadCerts, SimError> {
        if let Some(b) = self.bad_certs.get() {
            return Ok(b);
        }
        let made = self.authority.bad_certs()?;
        Ok(self.bad_certs.get_or_init(|| made))
    }

    /// Every order for this payment id (one per merchant that used it), so
    /// tests can compare a merchant's records with the channel's. An unpaid
    /// order past its payTimeout can no longer be paid: it counts as closed.
    pub fn trades(&self, out_trade_no: &str) -> Vec<crate::SimTrade> {
        let Ok(order_id) = sign::order_id_of(out_trade_no) else {
            return Vec::new();
        };
        let now = sign::to_acp_time(self.clock.now());
        lock(&self.orders)
            .values()
            .filter(|o| o.order_id == order_id)
            .map(|o| crate::SimTrade {
                state: match (&o.paid, o.pay_timeout.as_deref()) {
                    (Some(_), _) => crate::SimTradeState::Paid,
                    (None, Some(t)) if t < now.as_str() => crate::SimTradeState::Closed,
                    (None, _) => crate::SimTradeState::Unpaid,
                },
                // Accepted only as fen digits, so this cannot fail for a stored order.
                amount: sign::txn_amt_to_fen(&o.txn_amt).unwrap_or(-1),
            })
            .collect()
    }

    /// The payer pays: the order is marked paid and the back notification
    /// goes to its backUrl `callbacks` times. Paying a paid order again only
    /// re-sends the notification (same queryId).
    pub async fn pay(&self, req: PayRequest) -> Result<PayOutcome, SimError> {
        if req.callbacks > MAX_CALLBACKS {
            return Err(SimError::Invalid(format!(
                "callbacks must be at most {MAX_CALLBACKS}"
            )));
        }
        let now = sign::to_acp_time(self.clock.now());
        let order = {
            let mut orders = lock(&self.orders);
            let key = order_key(&orders, &req.out_trade_no, req.mer_id.as_deref())?;
            let order = orders.get_mut(&key).ok_or(SimError::OrderNotFound)?;
            if order.paid.is_none() {
                if order
                    .pay_timeout
                    .as_deref()
                    .is_some_and(|t| t < now.as_str())
                {
                    return Err(SimError::OrderExpired);
                }
                let query_id = self.unique(21);
                lock(&self.query_ids).insert(query_id.clone(), key.clone());
                order.paid = Some(Payment {
                    query_id,
                    trace_no: self.unique(6),
                    trace_time: now[4..].to_string(),
                    settle_date: now[4..8].to_string(),
                });
            }
            order.clone()
        };
        let payment = order
            .paid
            .clone()
            .ok_or_else(|| SimError::Internal("order not paid".into()))?;
        let (mut attempts, mut held) = (Vec::new(), Vec::new());
        if let Some(url) = &order.back_url {
            let mut copies = Vec::new();
            for _ in 0..req.callbacks {
                let body = self.notify_body(&order, &payment, req.fault)?;
                copies.push(self.callback(url, body));
            }
            (attempts, held) = self
                .faults
                .send_or_hold(copies, req.hold)
                .await
                .map_err(SimError::Internal)?;
        }
        Ok(PayOutcome {
            order_id: order.order_id.clone(),
            query_id: payment.query_id,
            callbacks: attempts,
            held,
        })
    }

    /// The fields of a paid consumption, as notifications and queries report it.
    pub(crate) fn paid_fields(order: &Order, payment: &Payment) -> Params {
        let mut p = Params::new();
        for (k, v) in [
            ("version", sign::VERSION),
            ("encoding", "utf-8"),
            ("signMethod", sign::SIGN_METHOD),
            ("accessType", "0"),
            ("bizType", order.biz_type.as_str()),
            ("currencyCode", sign::CURRENCY_CNY),
            ("merId", order.mer_id.as_str()),
            ("orderId", order.order_id.as_str()),
            ("queryId", payment.query_id.as_str()),
            ("settleAmt", order.txn_amt.as_str()),
            ("settleCurrencyCode", sign::CURRENCY_CNY),
            ("settleDate", payment.settle_date.as_str()),
            ("traceNo", payment.trace_no.as_str()),
            ("traceTime", payment.trace_time.as_str()),
            ("txnAmt", order.txn_amt.as_str()),
            ("txnSubType", order.txn_sub_type.as_str()),
            ("txnTime", order.txn_time.as_str()),
            ("txnType", sign::TXN_CONSUME),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        p
    }

    /// One back notification, form-encoded and signed.
    fn notify_body(
        &self,
        order: &Order,
        payment: &Payment,
        fault: Option<Fault>,
    ) -> Result<String, SimError> {
        let mut p = Self::paid_fields(order, payment);
        p.insert("respCode".into(), "00".into());
        p.insert("respMsg".into(), "成功[0000000]".into());
        match fault {
            Some(Fault::WrongAmount) => {
                let fen = sign::txn_amt_to_fen(&order.txn_amt)?;
                p.insert("txnAmt".into(), (fen + 1).to_string());
                p.insert("settleAmt".into(), (fen + 1).to_string());
            }
            Some(Fault::WrongMerId) => {
                p.insert("merId".into(), "777290058100000".into());
            }
            _ => {}
        }
        let bad_cert = match fault {
            Some(Fault::UntrustedChain) => Some(self.bad_certs()?.untrusted_chain.clone()),
            Some(Fault::ExpiredCert) => Some(self.bad_certs()?.expired.clone()),
            Some(Fault::NotUnionpayCert) => Some(self.bad_certs()?.not_unionpay.clone()),
            _ => None,
        };
        let mut signed = self.sign_out(p, bad_cert.as_deref())?;
        if fault == Some(Fault::BadSignature) {
            // A well-formed signature over different content.
            let mut other = signed.clone();
            other.insert("txnAmt".into(), "999999999".into());
            let sig = sign::sign(&self.authority.sign_key, &other)?;
            signed.insert("signature".into(), sig);
        }
        Ok(sign::encode_form(&signed))
    }

    /// A back notification ready to post: a form body to the backUrl.
    pub(crate) fn callback(&self, url: &str, body: String) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
    }
}

/// The (merId, orderId) of an order named by paymux's payment id or its
/// orderId, and by its merchant when several have that orderId.
pub(crate) fn order_key(
    orders: &HashMap<(String, String), Order>,
    out_trade_no: &str,
    mer_id: Option<&str>,
) -> Result<(String, String), SimError> {
    let order_id = if out_trade_no.contains('_') {
        sign::order_id_of(out_trade_no).map_err(|e| SimError::Invalid(e.to_string()))?
    } else {
        out_trade_no.to_string()
    };
    match mer_id {
        Some(m) => Ok((m.to_string(), order_id)),
        None => {
            let mut keys = orders.keys().filter(|(_, o)| *o == order_id);
            let first = keys.next().cloned().ok_or(SimError::OrderNotFound)?;
            if keys.next().is_some() {
                return Err(SimError::Ambiguous(order_id));
            }
            Ok(first)
        }
    }
}
