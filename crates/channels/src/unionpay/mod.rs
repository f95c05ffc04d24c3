//! China UnionPay online payments (ACP 5.1.0, 全渠道), certificate signatures
//! (`signMethod=01`).
//!
//! [`Unionpay`] implements [`crate::Channel`] for one merchant (`merId`):
//!
//! - `pc` / `wap`: a front consumption (txnType 01, txnSubType 01, bizType
//!   000201) is a form the payer's browser posts to `frontTransReq.do`; it
//!   is built and signed here and handed out as the action URL, the signed
//!   fields and a self-submitting HTML form;
//! - `app`: `appTransReq.do` answers a `tn` the UnionPay app SDK takes;
//! - `native`: `backTransReq.do` with txnSubType 07, bizType 000000 and
//!   channelType 08 answers the `qrCode` the payer scans;
//! - query: `queryTrans.do` (txnType 00), identified by `orderId` + `txnTime`;
//! - refunds: `backTransReq.do` with txnType 04 naming the consumption's
//!   `queryId`, their result by back notification or query (see [`refund`]).
//!
//! Every answer and callback carries UnionPay's signing certificate
//! (`signPubKeyCert`); it is checked against the configured root and
//! intermediate, its validity and its owner before its key verifies anything.
//!
//! [`sign`] and [`certs`] are public so paymux's simulator uses the very same rules.

pub mod certs;
mod notify;
pub mod refund;
pub mod sign;

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use paymux_core::{Clock, Currency, Money, PayMethod, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    Callback, CallbackReply, Channel, ChannelError, ChannelRefund, ChannelTrade, Notification,
    Prepared, PrepayRequest, RefundNotification, RefundRequest, TradeState,
};
use certs::{SigningIdentity, TrustAnchors};
use sign::Params;

/// Production gateway host.
pub const PRODUCTION_BASE_URL: &str = "https://gateway.95516.com";
/// UnionPay's test environment.
pub const TEST_BASE_URL: &str = "https://gateway.test.95516.com";

/// Gateway paths, relative to the base URL.
pub const FRONT_TRANS_PATH: &str = "/gateway/api/frontTransReq.do";
pub const APP_TRANS_PATH: &str = "/gateway/api/appTransReq.do";
pub const BACK_TRANS_PATH: &str = "/gateway/api/backTransReq.do";
pub const QUERY_TRANS_PATH: &str = "/gateway/api/queryTrans.do";

/// The config fields that are secret: the signing key in either form and the
/// PKCS#12 password. Certificates are public.
pub const SECRET_FIELDS: &[&str] = &["sign_pfx", "sign_pfx_password", "private_key_pem"];

/// A UnionPay merchant's configuration (stored as its channel account's config JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct UnionpayConfig {
    /// `https://gateway.95516.com`, `https://gateway.test.95516.com`, or a
    /// simulator's such as `http://127.0.0.1:8080/sim/unionpay`.
    pub base_url: String,
    /// The merchant number (`merId`, 15 digits).
    pub mer_id: String,
    /// The signing key as UnionPay issues it: the `.pfx` file, base64, and its password.
    #[serde(default)]
    pub sign_pfx: Option<String>,
    #[serde(default)]
    pub sign_pfx_password: Option<String>,
    /// Or the signing key and its certificate as PEM.
    #[serde(default)]
    pub private_key_pem: Option<String>,
    #[serde(default)]
    pub sign_cert_pem: Option<String>,
    /// UnionPay's root and intermediate certificates (`acp_prod_root.cer`,
    /// `acp_prod_middle.cer`, or the test environment's).
    pub root_cert_pem: String,
    pub middle_cert_pem: String,
    /// Where UnionPay's payment page sends the payer's browser back after a
    /// PC / WAP payment (ACP's `frontUrl`). Optional here; the result itself
    /// always comes by back notification.
    #[serde(default)]
    pub front_url: Option<String>,
    /// ACP's `ifValidateCNName`. Leave it on; only UnionPay's test environment,
    /// whose certificates are not in UnionPay's name, needs it off.
    #[serde(default = "yes")]
    pub validate_cn_name: bool,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for UnionpayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key and its password are secrets: keep them out of logs.
        f.debug_struct("UnionpayConfig")
            .field("base_url", &self.base_url)
            .field("mer_id", &self.mer_id)
            .field("pfx", &self.sign_pfx.is_some())
            .field("validate_cn_name", &self.validate_cn_name)
            .finish_non_exhaustive()
    }
}

impl UnionpayConfig {
    /// The signing identity from whichever form the config holds.
    pub fn signing_identity(&self) -> Result<SigningIdentity, ChannelError> {
        match (&self.sign_pfx, &self.private_key_pem, &self.sign_cert_pem) {
            (Some(pfx), None, None) => {
                let der = B64
                    .decode(pfx.trim())
                    .map_err(|_| ChannelError::Config("sign_pfx is not base64".into()))?;
                SigningIdentity::from_pkcs12(&der, self.sign_pfx_password.as_deref().unwrap_or(""))
            }
            (None, Some(key), Some(cert)) => SigningIdentity::from_pem(key, cert),
            _ => Err(ChannelError::Config(
                "give either sign_pfx (+ sign_pfx_password) or both private_key_pem and sign_cert_pem"
                    .into(),
            )),
        }
    }
}

/// The UnionPay channel for one merchant.
pub struct Unionpay {
    config: UnionpayConfig,
    identity: SigningIdentity,
    anchors: TrustAnchors,
    base_url: reqwest::Url,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Unionpay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unionpay")
            .field("config", &self.config)
            .field("cert_id", &self.identity.cert_id)
            .finish_non_exhaustive()
    }
}

impl Unionpay {
    /// Checks the configuration (the signing key and certificate load and
    /// match, the trust anchors chain, the base URL is absolute) and builds the channel.
    pub fn new(config: UnionpayConfig, http: reqwest::Client) -> Result<Self, ChannelError> {
        if config.mer_id.is_empty()
            || config.mer_id.len() > 15
            || !config.mer_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ChannelError::Config(
                "mer_id must be 1-15 letters and digits".into(),
            ));
        }
        let identity = config.signing_identity()?;
        let anchors = TrustAnchors::new(
            &config.root_cert_pem,
            &config.middle_cert_pem,
            config.validate_cn_name,
        )?;
        let base_url = reqwest::Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|e| ChannelError::Config(format!("base_url: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.query().is_some() {
            return Err(ChannelError::Config(
                "base_url must be an http(s) URL without query".into(),
            ));
        }
        Ok(Unionpay {
            config,
            identity,
            anchors,
            base_url,
            http,
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock (tests move time; certificate validity is checked against it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &UnionpayConfig {
        &self.config
    }

    /// The `certId` requests carry.
    pub fn cert_id(&self) -> &str {
        &self.identity.cert_id
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.as_str().trim_end_matches('/'))
    }

    /// The fields every request carries.
    fn common(&self, txn_type: &str, txn_sub_type: &str, biz_type: &str) -> Params {
        let mut p = Params::new();
        for (k, v) in [
            ("version", sign::VERSION),
            ("encoding", "utf-8"),
            ("signMethod", sign::SIGN_METHOD),
            ("certId", self.identity.cert_id.as_str()),
            ("merId", self.config.mer_id.as_str()),
            ("accessType", "0"),
            ("txnType", txn_type),
            ("txnSubType", txn_sub_type),
            ("bizType", biz_type),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        p
    }

    /// Adds `signature` over everything else.
    pub fn sign(&self, mut p: Params) -> Result<Params, ChannelError> {
        p.remove("signature");
        let signature = sign::sign(&self.identity.key, &p)?;
        p.insert("signature".into(), signature);
        Ok(p)
    }

    /// `txnTime` of an order: the payment's creation time, read from its id
    /// (see [`sign::created_at_of`]); for ids that carry none, now.
    fn txn_time(&self, out_trade_no: &str) -> String {
        sign::to_acp_time(sign::created_at_of(out_trade_no).unwrap_or_else(|| self.clock.now()))
    }

    /// The consumption fields of an order.
    fn consume(
        &self,
        req: &PrepayRequest,
        txn_sub_type: &str,
        biz_type: &str,
        channel_type: &str,
    ) -> Result<Params, ChannelError> {
        if req.amount.currency != Currency::CNY {
            return Err(ChannelError::Rejected {
                code: "INVALID_PARAMETER".into(),
                message: "UnionPay takes CNY amounts here".into(),
            });
        }
        let mut p = self.common(sign::TXN_CONSUME, txn_sub_type, biz_type);
        let mut put = |k: &str, v: String| {
            p.insert(k.to_string(), v);
        };
        put("channelType", channel_type.to_string());
        put("orderId", sign::order_id_of(&req.out_trade_no)?);
        put("txnTime", self.txn_time(&req.out_trade_no));
        put("txnAmt", sign::fen_to_txn_amt(req.amount.minor)?);
        put("currencyCode", sign::CURRENCY_CNY.to_string());
        put("backUrl", req.notify_url.clone());
        // After this the order can no longer be paid at UnionPay: what makes
        // an expired (or closed) payment unpayable.
        put("payTimeout", sign::to_acp_time(req.expires_at));
        Ok(p)
    }

    /// POSTs a signed back request and returns the verified answer, whatever
    /// its `respCode` (callers decide what a refusal means).
    async fn call(&self, path: &str, params: Params) -> Result<Params, ChannelError> {
        let params = self.sign(params)?;
        let resp = self
            .http
            .post(self.url(path))
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(sign::encode_form(&params))
            .send()
            .await
            .map_err(|e| ChannelError::Transport(format!("{path}: {e}")))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| ChannelError::Transport(format!("{path}: reading answer: {e}")))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ChannelError::Transport(format!("{path}: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(ChannelError::Protocol(format!("{path}: HTTP {status}")));
        }
        let answer = sign::parse_answer(body.trim_end())?;
        let code = answer.get("respCode").map(String::as_str).unwrap_or("");
        match answer.get("signPubKeyCert").filter(|c| !c.is_empty()) {
            Some(cert) => {
                let key = self.anchors.verify_sign_cert(cert, self.clock.now())?;
                sign::verify(&key, &answer)?;
            }
            // The gateway leaves some format refusals unsigned; an answer
            // paymux acts on (success, "no such order") never is.
            None if sign::is_success(code) || code == "34" => {
                return Err(ChannelError::InvalidSignature(format!(
                    "{path}: unsigned answer with respCode {code}"
                )))
            }
            None => {}
        }
        if let Some(mer_id) = answer.get("merId") {
            if mer_id != &self.config.mer_id {
                return Err(ChannelError::Protocol(format!(
                    "{path}: answer for merId {mer_id}, this account is {}",
                    self.config.mer_id
                )));
            }
        }
        Ok(answer)
    }

    /// Like [`Unionpay::call`], but only `00` / `A6` is a success.
    async fn call_ok(&self, path: &str, params: Params) -> Result<Params, ChannelError> {
        let answer = self.call(path, params).await?;
        let code = answer.get("respCode").map(String::as_str).unwrap_or("");
        if sign::is_success(code) {
            Ok(answer)
        } else {
            Err(refusal(&answer))
        }
    }

    /// The signed form for `frontTransReq.do` (pc / wap).
    fn front_form(
        &self,
        req: &PrepayRequest,
        channel_type: &str,
    ) -> Result<Prepared, ChannelError> {
        let mut fields = self.consume(req, "01", "000201", channel_type)?;
        if let Some(url) = self.config.front_url.as_ref().filter(|u| !u.is_empty()) {
            fields.insert("frontUrl".into(), url.clone());
        }
        let fields = self.sign(fields)?;
        let action = self.url(FRONT_TRANS_PATH);
        let html = auto_submit_form(&action, &fields);
        Ok(Prepared {
            pay_params: json!({
                "action": action,
                "method": "POST",
                "fields": fields,
                "html": html,
            }),
            channel_ref: None,
            trade: None,
        })
    }

    /// The answer's `orderId` must be the one asked about.
    fn check_order(answer: &Params, order_id: &str) -> Result<(), ChannelError> {
        match answer.get("orderId") {
            Some(o) if o != order_id => Err(ChannelError::Protocol(format!(
                "asked about orderId {order_id}, UnionPay answered {o}"
            ))),
            _ => Ok(()),
        }
    }

    async fn prepay_once(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError> {
        let order_id = sign::order_id_of(&req.out_trade_no)?;
        match req.method {
            PayMethod::Pc => self.front_form(req, "07"),
            PayMethod::Wap => self.front_form(req, "08"),
            PayMethod::App => {
                let answer = self
                    .call_ok(APP_TRANS_PATH, self.consume(req, "01", "000201", "08")?)
                    .await?;
                Self::check_order(&answer, &order_id)?;
                let tn = answer
                    .get("tn")
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ChannelError::Protocol("app answer without tn".into()))?;
                Ok(Prepared {
                    pay_params: json!({ "tn": tn }),
                    channel_ref: Some(tn.clone()),
                    trade: None,
                })
            }
            PayMethod::Native => {
                let answer = self
                    .call_ok(BACK_TRANS_PATH, self.consume(req, "07", "000000", "08")?)
                    .await?;
                Self::check_order(&answer, &order_id)?;
                let qr = answer
                    .get("qrCode")
                    .filter(|q| !q.is_empty())
                    .ok_or_else(|| ChannelError::Protocol("QR answer without qrCode".into()))?;
                Ok(Prepared {
                    pay_params: json!({ "qr_code": qr }),
                    channel_ref: None,
                    trade: None,
                })
            }
            other => Err(ChannelError::Rejected {
                code: "INVALID_PARAMETER".into(),
                message: format!("UnionPay has no {other} payments here"),
            }),
        }
    }

    async fn query_trade(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
        let order_id = sign::order_id_of(out_trade_no)?;
        let mut p = self.common(sign::TXN_QUERY, "00", "000000");
        p.insert("orderId".into(), order_id.clone());
        p.insert("txnTime".into(), self.txn_time(out_trade_no));
        let answer = self.call_ok(QUERY_TRANS_PATH, p).await?;
        Self::check_order(&answer, &order_id)?;
        let orig = answer.get("origRespCode").map(String::as_str).unwrap_or("");
        // Only a definite statement moves a payment: `00`/`A6` is paid;
        // "processing" (03, 04, 05) and a failed attempt are not final for
        // the order (the payer may try again until payTimeout), so both stay
        // unpaid and expiry closes the payment.
        let state = if sign::is_success(orig) {
            TradeState::Paid
        } else {
            TradeState::NotPaid
        };
        let amount = match answer.get("txnAmt").filter(|a| !a.is_empty()) {
            Some(a) => Some(
                Money::new(sign::txn_amt_to_fen(a)?, Currency::CNY)
                    .map_err(|e| ChannelError::Protocol(e.to_string()))?,
            ),
            None => None,
        };
        Ok(ChannelTrade {
            out_trade_no: out_trade_no.to_string(),
            state,
            transaction_id: answer.get("queryId").filter(|q| !q.is_empty()).cloned(),
            amount,
            paid_at: None,
            merchant_account: answer.get("merId").cloned(),
            app_id: None,
        })
    }
}

/// `respCode` for a repeated orderId (重复交易).
const DUPLICATE_ORDER: &str = "12";

/// A refusal as an error: "no such order" (34) is [`ChannelError::NotFound`];
/// "closed for now" (02), "timed out / outcome unknown / accepted, query
/// later" (03, 04, 05) and "busy" (06) are transport errors, so the same
/// request is repeated or the order queried; the rest (01 "failed", 1x
/// format and signature errors, 12 duplicate, 3x/6x business refusals) are
/// refusals.
fn refusal(answer: &Params) -> ChannelError {
    let code = answer.get("respCode").map(String::as_str).unwrap_or("");
    let msg = answer.get("respMsg").cloned().unwrap_or_default();
    match code {
        "34" => ChannelError::NotFound,
        "02" | "03" | "04" | "05" | "06" => {
            ChannelError::Transport(format!("UnionPay busy or outcome unknown: {code} {msg}"))
        }
        "" => ChannelError::Protocol("answer without respCode".into()),
        _ => ChannelError::Rejected {
            code: code.to_string(),
            message: msg,
        },
    }
}

/// The self-submitting page UnionPay's SDKs build (`createAutoFormHtml`):
/// the browser posts the signed fields to the front transaction URL.
pub fn auto_submit_form(action: &str, fields: &Params) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head><body onload=\"document.forms[0].submit()\">\
         <form action=\"{}\" method=\"post\">",
        escape(action)
    );
    for (k, v) in fields {
        html.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(k),
            escape(v)
        ));
    }
    html.push_str("</form></body></html>");
    html
}

#[async_trait]
impl Channel for Unionpay {
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError> {
        match self.prepay_once(req).await {
            // "Duplicate transaction": an earlier request for this orderId
            // reached UnionPay and its answer was lost. That order may still
            // be paid, so this is an unknown outcome for the status checks to
            // settle, never a failure.
            Err(ChannelError::Rejected { code, message }) if code == DUPLICATE_ORDER => {
                Err(ChannelError::Transport(format!(
                    "UnionPay already has this orderId ({code} {message}); its state is settled by query"
                )))
            }
            other => other,
        }
    }

    async fn query(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
        self.query_trade(out_trade_no).await
    }

    /// ACP has no "close" for an unpaid consumption: an order is a form or a
    /// code in the payer's hands until its `payTimeout`, which every order
    /// carries (the payment's expiry). So closing asks UnionPay first:
    ///
    /// - paid: refused (`ALREADY_PAID`), so the caller queries and settles
    ///   the payment; cancelling (txnType 31) would refund a payer who did
    ///   pay, which is a refund decision, not a close;
    /// - unknown or unpaid: closed here. At expiry that is exact (payTimeout
    ///   has passed). Closed before expiry, the payer could still complete the
    ///   form until payTimeout; that late payment's callback is then refused
    ///   (a closed payment does not become paid) and shows in the logs and
    ///   UnionPay's reconciliation file for a refund.
    async fn close(&self, out_trade_no: &str) -> Result<(), ChannelError> {
        match self.query_trade(out_trade_no).await {
            Ok(trade) if trade.state == TradeState::Paid => Err(ChannelError::Rejected {
                code: "ALREADY_PAID".into(),
                message: "UnionPay says the order was paid".into(),
            }),
            Ok(_) | Err(ChannelError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn parse_callback(
        &self,
        callback: Callback<'_>,
        now: DateTime<Utc>,
    ) -> Result<Notification, ChannelError> {
        self.parse_notify(callback.body, now)
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.create_refund(req).await
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.find_refund(req).await
    }

    async fn parse_refund_callback(
        &self,
        callback: Callback<'_>,
        now: DateTime<Utc>,
    ) -> Result<RefundNotification, ChannelError> {
        self.parse_refund_notify(callback.body, now)
    }

    fn callback_reply(&self, ok: bool) -> CallbackReply {
        // UnionPay reads only the status: 200 stops the retries, anything
        // else (but a redirect) is a failure and is retried.
        if ok {
            CallbackReply {
                status: 200,
                content_type: "text/plain; charset=utf-8",
                body: b"ok".to_vec(),
            }
        } else {
            CallbackReply {
                status: 500,
                content_type: "text/plain; charset=utf-8",
                body: b"fail".to_vec(),
            }
        }
    }
}

impl Unionpay {
    /// Verifies fields signed by UnionPay (a callback's or an answer's):
    /// `signPubKeyCert` must pass the trust checks at `now`, then its key
    /// must verify `signature`.
    pub fn verify_params(&self, params: &Params, now: DateTime<Utc>) -> Result<(), ChannelError> {
        let cert = params
            .get("signPubKeyCert")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ChannelError::InvalidSignature("no signPubKeyCert".into()))?;
        let key = self.anchors.verify_sign_cert(cert, now)?;
        sign::verify(&key, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: &str) -> Params {
        let mut p = Params::new();
        p.insert("respCode".into(), code.into());
        p.insert("respMsg".into(), "m".into());
        p
    }

    #[test]
    fn refusals_map_to_errors() {
        assert!(matches!(refusal(&answer("34")), ChannelError::NotFound));
        for code in ["02", "03", "04", "05", "06"] {
            assert!(refusal(&answer(code)).is_retryable(), "{code}");
        }
        for code in ["01", "11", "12", "61"] {
            assert!(
                matches!(refusal(&answer(code)), ChannelError::Rejected { code: c, .. } if c == code),
                "{code}"
            );
        }
        assert!(matches!(refusal(&Params::new()), ChannelError::Protocol(_)));
    }
}
