//! Alipay Open Platform, OpenAPI v2 gateway (`…/gateway.do`), RSA2.
//!
//! [`Alipay`] implements [`crate::Channel`] for one app: every request is a
//! signed form POST to the gateway, every answer is verified over the raw
//! text of its `…_response` node, and async notifies are verified over their
//! sorted form parameters. Both of Alipay's key modes work: public-key mode
//! (the Alipay public key is configured) and public-key-certificate mode
//! (`app_cert_sn` / `alipay_root_cert_sn` go with every request and the
//! Alipay public certificate verifies).
//!
//! App, WAP and PC payments are not calls: the signed order string or URL is
//! built here and the payer's app or browser takes it to Alipay.
//!
//! [`sign`] is public so paymux's simulator uses the very same rules.

pub mod bill;
mod notify;
mod refund;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use paymux_core::{Clock, Currency, Money, PayMethod, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::bill::{self as bill_file, BillFile, BillFormat};
use crate::keys::{PrivateKey, PublicKey};
use crate::{
    Callback, CallbackReply, Channel, ChannelError, ChannelRefund, ChannelTrade, Notification,
    Prepared, PrepayRequest, RefundRequest, TradeState,
};
use sign::Params;

/// Production gateway.
pub const PRODUCTION_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";

/// How long a barcode payment waits for the payer to confirm on the phone
/// before it is cancelled (Alipay's guide suggests polling for about 30 s).
pub const DEFAULT_BARCODE_TIMEOUT_SECS: u64 = 30;
/// Pause between queries while a barcode payment waits for the payer.
pub const DEFAULT_BARCODE_POLL_MS: u64 = 3000;

/// The config fields that are secret: the app private key and the content
/// encryption key. Certificates and Alipay's public key are public.
pub const SECRET_FIELDS: &[&str] = &["private_key_pem", "encrypt_key"];

/// An Alipay app's configuration (stored as its channel account's config JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct AlipayConfig {
    /// `https://openapi.alipay.com/gateway.do`, or a simulator's such as
    /// `http://127.0.0.1:8080/sim/alipay/gateway.do`.
    pub gateway_url: String,
    pub app_id: String,
    /// The app private key (PKCS#8 or PKCS#1 PEM).
    pub private_key_pem: String,
    /// Public-key mode: the Alipay public key (SPKI PEM).
    #[serde(default)]
    pub alipay_public_key_pem: Option<String>,
    /// Certificate mode: the app's public-key certificate
    /// (appCertPublicKey_….crt), the Alipay public-key certificate
    /// (alipayCertPublicKey_RSA2.crt) and the root bundle (alipayRootCert.crt).
    #[serde(default)]
    pub app_cert_pem: Option<String>,
    #[serde(default)]
    pub alipay_cert_pem: Option<String>,
    #[serde(default)]
    pub alipay_root_cert_pem: Option<String>,
    /// The merchant's Alipay user id (`2088…`). When set, a notify for any
    /// other seller is refused.
    #[serde(default)]
    pub seller_id: Option<String>,
    /// Optional content encryption: the base64 AES key from the Alipay
    /// console. When set, `biz_content` goes out encrypted (`encrypt_type=AES`)
    /// and encrypted answers are decrypted after their signature verified.
    #[serde(default)]
    pub encrypt_key: Option<String>,
    #[serde(default)]
    pub barcode_timeout_secs: Option<u64>,
    #[serde(default)]
    pub barcode_poll_ms: Option<u64>,
}

impl std::fmt::Debug for AlipayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is a secret: keep it out of logs.
        f.debug_struct("AlipayConfig")
            .field("gateway_url", &self.gateway_url)
            .field("app_id", &self.app_id)
            .field("seller_id", &self.seller_id)
            .field("cert_mode", &self.app_cert_pem.is_some())
            .field("encrypted", &self.encrypt_key.is_some())
            .finish_non_exhaustive()
    }
}

/// The serial numbers sent in certificate mode.
#[derive(Debug, Clone)]
struct CertSns {
    app_cert_sn: String,
    alipay_root_cert_sn: String,
}

/// The Alipay channel for one app.
pub struct Alipay {
    config: AlipayConfig,
    key: PrivateKey,
    alipay_key: PublicKey,
    cert_sns: Option<CertSns>,
    gateway: reqwest::Url,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Alipay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alipay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Alipay {
    /// Checks the configuration (keys and certificates parse, one key mode is
    /// complete, the gateway is an absolute URL) and builds the channel.
    pub fn new(config: AlipayConfig, http: reqwest::Client) -> Result<Self, ChannelError> {
        if config.app_id.trim().is_empty() {
            return Err(ChannelError::Config("app_id is empty".into()));
        }
        let key = PrivateKey::from_pem(&config.private_key_pem)?;
        let (alipay_key, cert_sns) = match (
            &config.alipay_public_key_pem,
            &config.app_cert_pem,
            &config.alipay_cert_pem,
            &config.alipay_root_cert_pem,
        ) {
            (Some(pem), None, None, None) => (PublicKey::from_pem(pem)?, None),
            (None, Some(app), Some(alipay), Some(root)) => (
                PublicKey::from_key_or_certificate_pem(alipay)?,
                Some(CertSns {
                    app_cert_sn: sign::cert_sn(app)?,
                    alipay_root_cert_sn: sign::root_cert_sn(root)?,
                }),
            ),
            _ => {
                return Err(ChannelError::Config(
                    "give either alipay_public_key_pem (public-key mode) or all of \
                     app_cert_pem, alipay_cert_pem and alipay_root_cert_pem (certificate mode)"
                        .into(),
                ))
            }
        };
        if let Some(k) = &config.encrypt_key {
            // Fails now on a key of the wrong size rather than on the first payment.
            sign::aes_encrypt(k, "")?;
        }
        let gateway = reqwest::Url::parse(&config.gateway_url)
            .map_err(|e| ChannelError::Config(format!("gateway_url: {e}")))?;
        if !matches!(gateway.scheme(), "http" | "https") || gateway.query().is_some() {
            return Err(ChannelError::Config(
                "gateway_url must be an http(s) URL without query".into(),
            ));
        }
        Ok(Alipay {
            config,
            key,
            alipay_key,
            cert_sns,
            gateway,
            http,
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock used for request timestamps (tests move time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &AlipayConfig {
        &self.config
    }

    /// The signed parameters of one request: the common ones plus `biz_content`.
    pub fn signed_params(
        &self,
        method: &str,
        biz_content: &Value,
        notify_url: Option<&str>,
    ) -> Result<Params, ChannelError> {
        let mut p = Params::new();
        let mut put = |k: &str, v: &str| {
            p.insert(k.to_string(), v.to_string());
        };
        put("app_id", &self.config.app_id);
        put("method", method);
        put("format", "JSON");
        put("charset", "utf-8");
        put("sign_type", sign::SIGN_TYPE);
        put("timestamp", &sign::to_alipay_time(self.clock.now()));
        put("version", "1.0");
        match &self.config.encrypt_key {
            Some(k) => {
                put(
                    "biz_content",
                    &sign::aes_encrypt(k, &biz_content.to_string())?,
                );
                put("encrypt_type", sign::ENCRYPT_TYPE);
            }
            None => put("biz_content", &biz_content.to_string()),
        }
        if let Some(url) = notify_url {
            put("notify_url", url);
        }
        if let Some(sns) = &self.cert_sns {
            put("app_cert_sn", &sns.app_cert_sn);
            put("alipay_root_cert_sn", &sns.alipay_root_cert_sn);
        }
        let signature = sign::sign_request(&self.key, &p)?;
        p.insert("sign".into(), signature);
        Ok(p)
    }

    /// Calls a gateway method and returns its verified response node, whatever
    /// its `code` (callers decide what a non-success code means).
    async fn call(
        &self,
        method: &str,
        biz_content: &Value,
        notify_url: Option<&str>,
    ) -> Result<Value, ChannelError> {
        let params = self.signed_params(method, biz_content, notify_url)?;
        let resp = self
            .http
            .post(self.gateway.clone())
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(sign::encode_form(&params))
            .send()
            .await
            .map_err(|e| ChannelError::Transport(format!("{method}: {e}")))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| ChannelError::Transport(format!("{method}: reading answer: {e}")))?;
        if status.as_u16() == 429 {
            return Err(ChannelError::RateLimited { retry_after: None });
        }
        if status.is_server_error() {
            return Err(ChannelError::Transport(format!("{method}: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(ChannelError::Protocol(format!("{method}: HTTP {status}")));
        }
        let raw = sign::split_response(&body, method)?;
        let mut node: Value = serde_json::from_str(raw.node)
            .map_err(|e| ChannelError::Protocol(format!("{method}: response node: {e}")))?;
        match &raw.sign {
            Some(sig) => self.alipay_key.verify_sha256(raw.node.as_bytes(), sig)?,
            // The gateway leaves some refusals unsigned (an unknown app, say);
            // a success is always signed and is worthless without it.
            None if code_of(&node) == sign::CODE_SUCCESS => {
                return Err(ChannelError::InvalidSignature(format!(
                    "{method}: unsigned success answer"
                )))
            }
            None => {}
        }
        // An encrypted answer is a JSON string; its signature covers the
        // ciphertext as sent, so decrypt only after verifying.
        if let Value::String(ciphertext) = &node {
            let key = self.config.encrypt_key.as_deref().ok_or_else(|| {
                ChannelError::Protocol(format!("{method}: encrypted answer, no encrypt_key"))
            })?;
            let plain = sign::aes_decrypt(key, ciphertext)?;
            node = serde_json::from_str(&plain).map_err(|e| {
                ChannelError::Protocol(format!("{method}: decrypted response node: {e}"))
            })?;
        }
        Ok(node)
    }

    /// Like [`Alipay::call`], but anything but `10000` is an error.
    async fn call_ok(
        &self,
        method: &str,
        biz_content: &Value,
        notify_url: Option<&str>,
    ) -> Result<Value, ChannelError> {
        let node = self.call(method, biz_content, notify_url).await?;
        expect_success(node)
    }

    /// The URL a browser follows for WAP / PC payments (a GET to the gateway
    /// with every signed parameter in the query, as the SDKs' `pageExec` builds).
    fn page_url(&self, params: &Params) -> String {
        let mut url = self.gateway.clone();
        url.set_query(Some(&sign::encode_form(params)));
        url.to_string()
    }

    fn order_biz(&self, req: &PrepayRequest, product_code: &str) -> Result<Value, ChannelError> {
        if req.amount.currency != Currency::CNY {
            return Err(ChannelError::Rejected {
                code: "INVALID_PARAMETER".into(),
                message: "Alipay takes CNY amounts here".into(),
            });
        }
        Ok(json!({
            "out_trade_no": req.out_trade_no,
            "total_amount": sign::minor_to_yuan(req.amount.minor)?,
            "subject": req.description,
            "product_code": product_code,
            "time_expire": sign::to_alipay_time(req.expires_at),
        }))
    }

    /// alipay.trade.pay: charges the payment code. "Waiting for the payer"
    /// (10003) is followed by queries until a final state or the timeout;
    /// then the trade is cancelled so it can never be paid afterwards.
    async fn barcode(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError> {
        let auth_code = req
            .auth_code
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ChannelError::Rejected {
                code: "INVALID_PARAMETER".into(),
                message: "auth_code is required for barcode payments".into(),
            })?;
        let mut biz = self.order_biz(req, "FACE_TO_FACE_PAYMENT")?;
        biz["scene"] = "bar_code".into();
        biz["auth_code"] = auth_code.into();
        let node = self
            .call("alipay.trade.pay", &biz, Some(&req.notify_url))
            .await?;
        let code = code_of(&node).to_string();
        let trade = if code == sign::CODE_SUCCESS {
            let mut t = trade_of(&node, &req.out_trade_no)?;
            // alipay.trade.pay answers 10000 only for a completed charge and
            // carries no trade_status.
            t.state = TradeState::Paid;
            t
        } else if code == sign::CODE_IN_PROCESS {
            self.wait_for_payer(&req.out_trade_no).await?
        } else {
            return Err(rejection(&node));
        };
        Ok(Prepared {
            pay_params: json!({ "trade_no": trade.transaction_id }),
            channel_ref: trade.transaction_id.clone(),
            trade: Some(trade),
        })
    }

    async fn wait_for_payer(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
        let timeout = Duration::from_secs(
            self.config
                .barcode_timeout_secs
                .unwrap_or(DEFAULT_BARCODE_TIMEOUT_SECS),
        );
        let poll = Duration::from_millis(
            self.config
                .barcode_poll_ms
                .unwrap_or(DEFAULT_BARCODE_POLL_MS)
                .max(100),
        );
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(poll).await;
            match self.query(out_trade_no).await {
                Ok(t) if t.state != TradeState::NotPaid => return Ok(t),
                // Not paid yet, or a lost answer: keep asking until the deadline.
                Ok(_)
                | Err(ChannelError::Transport(_))
                | Err(ChannelError::RateLimited { .. })
                | Err(ChannelError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        // Cancel, then report the final state: if the payer confirmed at the
        // last moment, Alipay refunds on cancel, so the charge is undone.
        self.cancel(out_trade_no).await?;
        Err(ChannelError::Rejected {
            code: "USER_PAYING_TIMEOUT".into(),
            message: format!(
                "the payer did not confirm within {} s; the trade was cancelled",
                timeout.as_secs()
            ),
        })
    }

    /// alipay.trade.cancel: closes an unpaid trade, refunds a paid one.
    pub async fn cancel(&self, out_trade_no: &str) -> Result<(), ChannelError> {
        let node = self
            .call(
                "alipay.trade.cancel",
                &json!({ "out_trade_no": out_trade_no }),
                None,
            )
            .await?;
        match expect_success(node) {
            Ok(_) | Err(ChannelError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn code_of(node: &Value) -> &str {
    node.get("code").and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn str_field<'a>(node: &'a Value, field: &str) -> Option<&'a str> {
    node.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A non-success answer as an error: an unknown trade is [`ChannelError::NotFound`],
/// the gateway's "try again" (20000) a transport error, the rest refusals.
fn rejection(node: &Value) -> ChannelError {
    let code = code_of(node);
    let sub_code = str_field(node, "sub_code").unwrap_or(code);
    if sub_code == "ACQ.TRADE_NOT_EXIST" {
        return ChannelError::NotFound;
    }
    // 40005 Call Limited: the app's or the method's call quota is spent for now.
    if code == "40005" || matches!(sub_code, "isv.app-call-limited" | "isv.method-call-limited") {
        return ChannelError::RateLimited { retry_after: None };
    }
    if code == "20000" || sub_code == "ACQ.SYSTEM_ERROR" {
        return ChannelError::Transport(format!(
            "Alipay busy: {sub_code} {}",
            str_field(node, "sub_msg").unwrap_or("")
        ));
    }
    ChannelError::Rejected {
        code: sub_code.to_string(),
        message: str_field(node, "sub_msg")
            .or_else(|| str_field(node, "msg"))
            .unwrap_or("")
            .to_string(),
    }
}

fn expect_success(node: Value) -> Result<Value, ChannelError> {
    if code_of(&node) == sign::CODE_SUCCESS {
        Ok(node)
    } else {
        Err(rejection(&node))
    }
}

/// Maps Alipay's `trade_status` to paymux's.
pub fn trade_state(s: &str) -> Result<TradeState, ChannelError> {
    Ok(match s {
        "TRADE_SUCCESS" | "TRADE_FINISHED" => TradeState::Paid,
        "WAIT_BUYER_PAY" => TradeState::NotPaid,
        "TRADE_CLOSED" => TradeState::Closed,
        other => {
            return Err(ChannelError::Protocol(format!(
                "unknown trade_status {other:?}"
            )))
        }
    })
}

/// A query or pay answer as paymux's view of the trade.
fn trade_of(node: &Value, expected_out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
    let out_trade_no = str_field(node, "out_trade_no").unwrap_or(expected_out_trade_no);
    if out_trade_no != expected_out_trade_no {
        return Err(ChannelError::Protocol(format!(
            "asked about {expected_out_trade_no:?}, Alipay answered {out_trade_no:?}"
        )));
    }
    let state = match str_field(node, "trade_status") {
        Some(s) => trade_state(s)?,
        None => TradeState::NotPaid,
    };
    let amount = match str_field(node, "total_amount") {
        Some(y) => Some(
            Money::new(sign::yuan_to_minor(y)?, Currency::CNY)
                .map_err(|e| ChannelError::Protocol(e.to_string()))?,
        ),
        None => None,
    };
    let paid_at = match str_field(node, "send_pay_date").or_else(|| str_field(node, "gmt_payment"))
    {
        Some(t) => Some(sign::parse_alipay_time(t)?),
        None => None,
    };
    Ok(ChannelTrade {
        out_trade_no: out_trade_no.to_string(),
        state,
        transaction_id: str_field(node, "trade_no").map(str::to_string),
        amount,
        paid_at,
        merchant_account: str_field(node, "seller_id").map(str::to_string),
        app_id: None,
    })
}

#[async_trait]
impl Channel for Alipay {
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError> {
        match self.prepay_once(req).await {
            // A retried create for a trade the payer already paid (the first
            // answer was lost): that is a settled payment, not a refusal.
            Err(ChannelError::Rejected { code, .. }) if code == "ACQ.TRADE_HAS_SUCCESS" => {
                let trade = self.query(&req.out_trade_no).await?;
                if trade.state != TradeState::Paid {
                    return Err(ChannelError::Protocol(
                        "Alipay says the trade was paid, its query says otherwise".into(),
                    ));
                }
                Ok(Prepared {
                    pay_params: json!({ "trade_no": trade.transaction_id }),
                    channel_ref: trade.transaction_id.clone(),
                    trade: Some(trade),
                })
            }
            other => other,
        }
    }

    async fn query(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
        self.query_trade(out_trade_no).await
    }

    async fn close(&self, out_trade_no: &str) -> Result<(), ChannelError> {
        self.close_trade(out_trade_no).await
    }

    async fn parse_callback(
        &self,
        callback: Callback<'_>,
        _now: DateTime<Utc>,
    ) -> Result<Notification, ChannelError> {
        self.parse_notify(callback.body)
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.create_refund(req).await
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.find_refund(req).await
    }

    fn reads_bills(&self) -> bool {
        true
    }

    async fn bill(&self, date: NaiveDate) -> Result<BillFile, ChannelError> {
        const METHOD: &str = "alipay.data.dataservice.bill.downloadurl.query";
        let biz = json!({"bill_type": "trade", "bill_date": date.to_string()});
        let node = self.call(METHOD, &biz, None).await?;
        if code_of(&node) != sign::CODE_SUCCESS {
            // No trade that day: Alipay makes no bill.
            if str_field(&node, "sub_code") == Some("isp.bill_not_exist") {
                return Ok(BillFile::empty());
            }
            return Err(rejection(&node));
        }
        let link = str_field(&node, "bill_download_url")
            .ok_or_else(|| ChannelError::Protocol(format!("{METHOD}: no bill_download_url")))?;
        // The link comes in a signed answer; it points at Alipay's file
        // servers (not the gateway) and needs no signature of its own.
        let url = reqwest::Url::parse(link)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ChannelError::Protocol(format!("{METHOD}: bad bill_download_url")))?;
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| ChannelError::Transport(format!("downloading the bill: {e}")))?;
        if !resp.status().is_success() {
            return Err(ChannelError::Rejected {
                code: format!("HTTP_{}", resp.status().as_u16()),
                message: "the bill download was refused".into(),
            });
        }
        let zip = bill_file::Scratch::new("alipay-bill-zip");
        bill_file::download_to(resp, zip.path(), bill_file::MAX_BILL_BYTES).await?;
        let dest = bill_file::temp_path("alipay-bill");
        // Owned from here: an error below removes the partial file.
        let file = BillFile::new(dest.clone(), BillFormat::AlipayDetail);
        tokio::task::spawn_blocking(move || bill::extract_detail(zip.path(), &dest))
            .await
            .map_err(|e| ChannelError::Protocol(format!("unpacking the bill: {e}")))??;
        Ok(file)
    }

    fn callback_reply(&self, ok: bool) -> CallbackReply {
        // Alipay reads the body: exactly `success` stops the retries;
        // anything else is retried on its schedule.
        CallbackReply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: if ok {
                b"success".to_vec()
            } else {
                b"fail".to_vec()
            },
        }
    }
}

impl Alipay {
    /// One prepare call for the method, without the retry handling of [`Channel::prepay`].
    async fn prepay_once(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError> {
        let notify = Some(req.notify_url.as_str());
        match req.method {
            PayMethod::MiniProgram => {
                let mut biz = self.order_biz(req, "JSAPI_PAY")?;
                match (&req.payer_openid, &req.payer_buyer_id) {
                    (Some(open_id), _) if !open_id.is_empty() => {
                        biz["op_app_id"] = self.config.app_id.clone().into();
                        biz["buyer_open_id"] = open_id.clone().into();
                    }
                    (_, Some(buyer_id)) if !buyer_id.is_empty() => {
                        biz["buyer_id"] = buyer_id.clone().into();
                    }
                    _ => {
                        return Err(ChannelError::Rejected {
                            code: "INVALID_PARAMETER".into(),
                            message: "the payer's buyer_open_id or buyer_id is required".into(),
                        })
                    }
                }
                let node = self.call_ok("alipay.trade.create", &biz, notify).await?;
                let trade_no = str_field(&node, "trade_no")
                    .ok_or_else(|| ChannelError::Protocol("create answer without trade_no".into()))?
                    .to_string();
                Ok(Prepared {
                    pay_params: json!({ "tradeNO": trade_no }),
                    channel_ref: Some(trade_no),
                    trade: None,
                })
            }
            PayMethod::Native => {
                let biz = self.order_biz(req, "FACE_TO_FACE_PAYMENT")?;
                let node = self.call_ok("alipay.trade.precreate", &biz, notify).await?;
                let qr = str_field(&node, "qr_code").ok_or_else(|| {
                    ChannelError::Protocol("precreate answer without qr_code".into())
                })?;
                Ok(Prepared {
                    pay_params: json!({ "qr_code": qr }),
                    channel_ref: None,
                    trade: None,
                })
            }
            PayMethod::App => {
                let biz = self.order_biz(req, "QUICK_MSECURITY_PAY")?;
                let params = self.signed_params("alipay.trade.app.pay", &biz, notify)?;
                Ok(Prepared {
                    pay_params: json!({ "order_string": sign::encode_form(&params) }),
                    channel_ref: None,
                    trade: None,
                })
            }
            PayMethod::Wap | PayMethod::Pc => {
                let (method, product) = if req.method == PayMethod::Wap {
                    ("alipay.trade.wap.pay", "QUICK_WAP_WAY")
                } else {
                    ("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY")
                };
                let biz = self.order_biz(req, product)?;
                let params = self.signed_params(method, &biz, notify)?;
                Ok(Prepared {
                    pay_params: json!({ "pay_url": self.page_url(&params) }),
                    channel_ref: None,
                    trade: None,
                })
            }
            PayMethod::Barcode => self.barcode(req).await,
            PayMethod::Jsapi | PayMethod::H5 => Err(ChannelError::Rejected {
                code: "INVALID_PARAMETER".into(),
                message: format!("Alipay has no {} payments", req.method),
            }),
        }
    }

    async fn query_trade(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
        let node = self
            .call_ok(
                "alipay.trade.query",
                &json!({ "out_trade_no": out_trade_no }),
                None,
            )
            .await?;
        trade_of(&node, out_trade_no)
    }

    async fn close_trade(&self, out_trade_no: &str) -> Result<(), ChannelError> {
        // Closing an already closed trade answers 10000 at Alipay too; a trade
        // the payer never opened (WAP, PC, app) does not exist there yet.
        self.call_ok(
            "alipay.trade.close",
            &json!({ "out_trade_no": out_trade_no }),
            None,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trade_states() {
        assert_eq!(trade_state("TRADE_SUCCESS").unwrap(), TradeState::Paid);
        assert_eq!(trade_state("TRADE_FINISHED").unwrap(), TradeState::Paid);
        assert_eq!(trade_state("WAIT_BUYER_PAY").unwrap(), TradeState::NotPaid);
        assert_eq!(trade_state("TRADE_CLOSED").unwrap(), TradeState::Closed);
        assert!(trade_state("PAID").is_err());
    }

    #[test]
    fn refusals_map_to_errors() {
        let n = json!({"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"});
        assert!(matches!(rejection(&n), ChannelError::NotFound));
        let n = json!({"code":"20000","msg":"Service Currently Unavailable"});
        assert!(rejection(&n).is_retryable());
        let n = json!({"code":"40004","sub_code":"ACQ.TRADE_STATUS_ERROR","sub_msg":"x"});
        assert!(
            matches!(rejection(&n), ChannelError::Rejected { code, .. } if code == "ACQ.TRADE_STATUS_ERROR")
        );
        assert!(!rejection(&n).is_channel_failure());
        // The gateway's call limits are rate limits, not refusals.
        for sub in ["isv.app-call-limited", "isv.method-call-limited"] {
            let n = json!({"code":"40005","msg":"Call Limited","sub_code":sub});
            let e = rejection(&n);
            assert!(matches!(e, ChannelError::RateLimited { .. }), "{sub}");
            assert!(e.is_channel_failure() && e.is_retryable());
        }
    }
}
