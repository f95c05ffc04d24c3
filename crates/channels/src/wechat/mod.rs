//! WeChat Pay API v3 (direct merchant mode).
//!
//! [`WechatPay`] implements [`crate::Channel`]: it signs every request with the
//! merchant key, verifies every response and callback against WeChat's platform
//! certificates (downloaded and rotated on its own) or the configured WeChat
//! Pay public key, and decrypts callback resources with the APIv3 key.
//!
//! [`sign`] and [`types`] are public so paymux's simulator reuses the exact same
//! rules and wire types instead of re-implementing them.

pub mod bill;
mod certs;
mod client;
mod notify;
mod refund;
pub mod sign;
pub mod types;
pub mod web_auth;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use paymux_core::{Clock, Currency, Money, PayMethod, SystemClock};
use serde::{Deserialize, Serialize};

use crate::bill::{self as bill_file, BillFile, BillFormat};
use crate::keys::{PrivateKey, PublicKey};
use crate::{
    Callback, CallbackReply, Channel, ChannelError, ChannelRefund, ChannelTrade, Notification,
    Prepared, PrepayRequest, RefundNotification, RefundRequest, TradeState,
};

pub use refund::{refund_state, to_channel_refund};
pub use sign::Authorization;

/// Production API host.
pub const PRODUCTION_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// The [`WechatConfig`] fields that are secret (sealed at rest, never shown).
pub const SECRET_FIELDS: &[&str] = &["private_key_pem", "apiv3_key", "oauth_app_secret"];

/// A channel account's configuration (stored as its config JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct WechatConfig {
    /// `https://api.mch.weixin.qq.com`, or a simulator base such as
    /// `http://127.0.0.1:8080/sim/wechat`. Its path prefix is part of the
    /// signed URL, as with the official SDKs.
    pub base_url: String,
    pub appid: String,
    pub mchid: String,
    /// Serial number of the merchant API certificate (uppercase hex).
    pub serial_no: String,
    /// The merchant API private key (apiclient_key.pem), PKCS#8 or PKCS#1 PEM.
    pub private_key_pem: String,
    /// The 32-character APIv3 key.
    pub apiv3_key: String,
    /// WeChat Pay public-key mode: the key id (`PUB_KEY_ID_…`) sent in
    /// `Wechatpay-Serial`, and the key itself (SPKI PEM).
    #[serde(default)]
    pub platform_public_key_id: Option<String>,
    #[serde(default)]
    pub platform_public_key_pem: Option<String>,
    /// The official account's AppSecret (for the `appid`), with which the
    /// cashier learns payers' openids inside WeChat (see [`web_auth`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_app_secret: Option<String>,
}

impl std::fmt::Debug for WechatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key and the APIv3 key are secrets: keep them out of logs.
        f.debug_struct("WechatConfig")
            .field("base_url", &self.base_url)
            .field("appid", &self.appid)
            .field("mchid", &self.mchid)
            .field("serial_no", &self.serial_no)
            .field("platform_public_key_id", &self.platform_public_key_id)
            .finish_non_exhaustive()
    }
}

/// An HTTP client with paymux's default channel timeouts (3 s connect, 10 s
/// total); see [`crate::transport::client`] to choose them.
pub fn http_client() -> Result<reqwest::Client, ChannelError> {
    crate::transport::client(crate::transport::Timeouts::default())
}

/// The WeChat Pay v3 channel for one merchant account.
pub struct WechatPay {
    config: WechatConfig,
    key: PrivateKey,
    apiv3_key: Vec<u8>,
    platform_key: Option<(String, PublicKey)>,
    base_url: reqwest::Url,
    http: reqwest::Client,
    certs: tokio::sync::Mutex<certs::CertCache>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WechatPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WechatPay {
    /// Checks the configuration (keys parse, APIv3 key is 32 bytes, base URL
    /// is absolute) and builds the channel. No network access happens here:
    /// platform certificates are downloaded on first need.
    pub fn new(config: WechatConfig, http: reqwest::Client) -> Result<Self, ChannelError> {
        let key = PrivateKey::from_pem(&config.private_key_pem)?;
        let apiv3_key = config.apiv3_key.as_bytes().to_vec();
        if apiv3_key.len() != 32 {
            return Err(ChannelError::Config(
                "apiv3_key must be exactly 32 bytes".into(),
            ));
        }
        for (name, value) in [
            ("appid", &config.appid),
            ("mchid", &config.mchid),
            ("serial_no", &config.serial_no),
        ] {
            if value.trim().is_empty() {
                return Err(ChannelError::Config(format!("{name} is empty")));
            }
        }
        let platform_key = match (
            &config.platform_public_key_id,
            &config.platform_public_key_pem,
        ) {
            (Some(id), Some(pem)) => {
                Some((id.clone(), PublicKey::from_key_or_certificate_pem(pem)?))
            }
            (None, None) => None,
            _ => {
                return Err(ChannelError::Config(
                    "platform_public_key_id and platform_public_key_pem go together".into(),
                ))
            }
        };
        let base = config.base_url.trim_end_matches('/');
        let base_url = reqwest::Url::parse(base)
            .map_err(|e| ChannelError::Config(format!("base_url {base:?}: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.query().is_some() {
            return Err(ChannelError::Config(format!(
                "base_url {base:?} must be an http(s) URL without query"
            )));
        }
        Ok(WechatPay {
            config,
            key,
            apiv3_key,
            platform_key,
            base_url,
            http,
            certs: tokio::sync::Mutex::new(certs::CertCache::default()),
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock used to check response timestamps and certificate
    /// ages (tests move time; production uses the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &WechatConfig {
        &self.config
    }

    /// Downloads the platform certificates now (normally done lazily) and
    /// returns their serial numbers.
    pub async fn refresh_platform_certificates(&self) -> Result<Vec<String>, ChannelError> {
        let now = self.clock.now();
        let mut cache = self.certs.lock().await;
        self.refresh_locked(&mut cache, now).await?;
        let mut serials: Vec<String> = cache.serials();
        serials.sort();
        Ok(serials)
    }

    fn jsapi_pay_params(&self, prepay_id: &str) -> Result<serde_json::Value, ChannelError> {
        let time_stamp = self.clock.now().timestamp().to_string();
        let nonce = sign::random_nonce(32);
        let package = format!("prepay_id={prepay_id}");
        let message = sign::jsapi_pay_message(&self.config.appid, &time_stamp, &nonce, &package);
        let pay_sign = self.key.sign_sha256(message.as_bytes())?;
        Ok(serde_json::json!({
            "appId": self.config.appid,
            "timeStamp": time_stamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": pay_sign,
        }))
    }

    fn app_pay_params(&self, prepay_id: &str) -> Result<serde_json::Value, ChannelError> {
        let timestamp = self.clock.now().timestamp().to_string();
        let nonce = sign::random_nonce(32);
        let message = sign::app_pay_message(&self.config.appid, &timestamp, &nonce, prepay_id);
        let pay_sign = self.key.sign_sha256(message.as_bytes())?;
        Ok(serde_json::json!({
            "appid": self.config.appid,
            "partnerid": self.config.mchid,
            "prepayid": prepay_id,
            "package": "Sign=WXPay",
            "noncestr": nonce,
            "timestamp": timestamp,
            "sign": pay_sign,
        }))
    }
}

/// WeChat writes times in China Standard Time.
pub fn to_wechat_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&paymux_core::clock::china_standard_time())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Maps WeChat's `trade_state` to paymux's.
pub fn trade_state(s: &str) -> Result<TradeState, ChannelError> {
    Ok(match s {
        "SUCCESS" | "REFUND" => TradeState::Paid,
        "NOTPAY" | "USERPAYING" => TradeState::NotPaid,
        "CLOSED" | "REVOKED" => TradeState::Closed,
        "PAYERROR" => TradeState::Failed,
        other => {
            return Err(ChannelError::Protocol(format!(
                "unknown trade_state {other:?}"
            )))
        }
    })
}

/// Converts a wire transaction into paymux's view of it.
pub fn to_channel_trade(t: &types::Transaction) -> Result<ChannelTrade, ChannelError> {
    let amount = match &t.amount {
        Some(types::TransactionAmount {
            total: Some(total),
            currency,
            ..
        }) => {
            let currency = Currency::parse(currency.as_deref().unwrap_or("CNY"))
                .map_err(|e| ChannelError::Protocol(e.to_string()))?;
            Some(Money::new(*total, currency).map_err(|e| ChannelError::Protocol(e.to_string()))?)
        }
        _ => None,
    };
    let paid_at = match &t.success_time {
        Some(s) if !s.is_empty() => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| ChannelError::Protocol(format!("success_time {s:?}: {e}")))?
                .with_timezone(&Utc),
        ),
        _ => None,
    };
    Ok(ChannelTrade {
        out_trade_no: t.out_trade_no.clone(),
        state: trade_state(&t.trade_state)?,
        transaction_id: t.transaction_id.clone().filter(|s| !s.is_empty()),
        amount,
        paid_at,
        merchant_account: t.mchid.clone(),
        app_id: t.appid.clone(),
    })
}

/// Percent-encodes a path segment (WeChat's out_trade_no alphabet never needs
/// it; anything else must not be able to change the URL's structure).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'*' | b'|') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Channel for WechatPay {
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError> {
        let (path, payer, scene_info) = match req.method {
            PayMethod::MiniProgram | PayMethod::Jsapi => {
                let openid = req
                    .payer_openid
                    .clone()
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| ChannelError::Rejected {
                        code: "PARAM_ERROR".into(),
                        message: "payer.openid is required for JSAPI / mini-program payments"
                            .into(),
                    })?;
                (
                    "jsapi",
                    Some(types::Payer {
                        openid: Some(openid),
                    }),
                    None,
                )
            }
            PayMethod::Native => ("native", None, None),
            PayMethod::H5 => {
                let ip = req
                    .payer_client_ip
                    .clone()
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| ChannelError::Rejected {
                        code: "PARAM_ERROR".into(),
                        message: "scene_info.payer_client_ip is required for H5 payments".into(),
                    })?;
                let scene = types::SceneInfo {
                    payer_client_ip: Some(ip),
                    h5_info: Some(types::H5Info { kind: "Wap".into() }),
                };
                ("h5", None, Some(scene))
            }
            PayMethod::App => ("app", None, None),
            PayMethod::Wap | PayMethod::Pc | PayMethod::Barcode => {
                return Err(ChannelError::Rejected {
                    code: "PARAM_ERROR".into(),
                    message: format!("WeChat Pay has no {} payments here", req.method),
                })
            }
        };
        let body = types::PrepayBody {
            appid: self.config.appid.clone(),
            mchid: self.config.mchid.clone(),
            description: req.description.clone(),
            out_trade_no: req.out_trade_no.clone(),
            time_expire: Some(to_wechat_time(req.expires_at)),
            attach: None,
            notify_url: req.notify_url.clone(),
            amount: types::PrepayAmount {
                total: req.amount.minor,
                currency: Some(req.amount.currency.as_str().to_string()),
            },
            payer,
            scene_info,
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::Protocol(format!("encoding prepay body: {e}")))?;
        let resp = self
            .call(
                reqwest::Method::POST,
                &format!("/v3/pay/transactions/{path}"),
                Some(body),
            )
            .await?;
        let answer: types::PrepayResponse = resp.json()?;
        let missing = |f: &str| ChannelError::Protocol(format!("prepay answer without {f}"));
        match req.method {
            PayMethod::MiniProgram | PayMethod::Jsapi => {
                let id = answer.prepay_id.ok_or_else(|| missing("prepay_id"))?;
                Ok(Prepared {
                    pay_params: self.jsapi_pay_params(&id)?,
                    channel_ref: Some(id),
                    trade: None,
                })
            }
            PayMethod::App => {
                let id = answer.prepay_id.ok_or_else(|| missing("prepay_id"))?;
                Ok(Prepared {
                    pay_params: self.app_pay_params(&id)?,
                    channel_ref: Some(id),
                    trade: None,
                })
            }
            PayMethod::Native => {
                let url = answer.code_url.ok_or_else(|| missing("code_url"))?;
                Ok(Prepared {
                    pay_params: serde_json::json!({ "code_url": url }),
                    channel_ref: None,
                    trade: None,
                })
            }
            PayMethod::H5 => {
                let url = answer.h5_url.ok_or_else(|| missing("h5_url"))?;
                Ok(Prepared {
                    pay_params: serde_json::json!({ "h5_url": url }),
                    channel_ref: None,
                    trade: None,
                })
            }
            PayMethod::Wap | PayMethod::Pc | PayMethod::Barcode => Err(ChannelError::Protocol(
                format!("no {} payments at WeChat Pay", req.method),
            )),
        }
    }

    /// Downloads the platform certificates (proves request signing and, by
    /// decrypting them, the APIv3 key) unless a platform public key is
    /// configured, then queries an order that does not exist.
    fn reads_bills(&self) -> bool {
        true
    }

    async fn bill(&self, date: NaiveDate) -> Result<BillFile, ChannelError> {
        let asked = self
            .call(
                reqwest::Method::GET,
                &format!("/v3/bill/tradebill?bill_date={date}&bill_type=ALL&tar_type=GZIP"),
                None,
            )
            .await;
        let link: bill::BillLink = match asked {
            // No trade that day: WeChat makes no bill.
            Err(ChannelError::Rejected { code, .. }) if code == "NO_STATEMENT_EXIST" => {
                return Ok(BillFile::empty());
            }
            other => other?.json()?,
        };
        if !link.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(ChannelError::Protocol(format!(
                "bill hash type {:?} is not SHA1",
                link.hash_type
            )));
        }
        // The link is signed for like any request, so it must lead to this
        // account's API and nowhere else.
        let base = self.base_url.as_str().trim_end_matches('/');
        let path = link
            .download_url
            .strip_prefix(base)
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| {
                ChannelError::Protocol(format!(
                    "download_url {:?} is not at the account's base URL",
                    link.download_url
                ))
            })?;
        let resp = self.request(reqwest::Method::GET, path, None).await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ChannelError::Rejected {
                code: format!("HTTP_{}", resp.status().as_u16()),
                message: "the bill download was refused".into(),
            });
        }
        let path = bill_file::temp_path("wechat-tradebill");
        // Owned from here: an error below removes the partial file.
        let file = BillFile::new(path.clone(), BillFormat::WechatTradeGzip);
        bill_file::download_to(resp, &path, bill::MAX_DOWNLOAD_BYTES).await?;
        let want = link.hash_value;
        tokio::task::spawn_blocking(move || bill::check_gzip_sha1(&path, &want))
            .await
            .map_err(|e| ChannelError::Protocol(format!("checking the bill: {e}")))??;
        Ok(file)
    }

    async fn probe(&self) -> Result<(), ChannelError> {
        if self.platform_key.is_none() {
            self.refresh_platform_certificates().await?;
        }
        let out_trade_no = format!("paymuxprobe{}", sign::random_nonce(16));
        match self.query(&out_trade_no).await {
            Ok(_) | Err(ChannelError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn diagnose(&self, err: &ChannelError) -> crate::Diagnosis {
        use crate::Diagnosis;
        match err {
            // WeChat answers every authentication failure with SIGN_ERROR;
            // its message says which part was wrong.
            ChannelError::Rejected { code, message } if code == "SIGN_ERROR" => {
                let m = message.to_lowercase();
                if m.contains("序列号") || m.contains("serial") {
                    Diagnosis::new(
                        "WRONG_SERIAL",
                        format!("WeChat Pay does not know certificate serial {} for mchid {} (SIGN_ERROR: {message}); --serial-no must be the serial of the merchant API certificate (apiclient_cert.pem)", self.config.serial_no, self.config.mchid),
                    )
                } else if m.contains("时间") || m.contains("timestamp") || m.contains("过期") {
                    Diagnosis::new(
                        "CLOCK_SKEW",
                        format!("WeChat Pay says the request timestamp is off (SIGN_ERROR: {message}); synchronise this machine's clock (NTP)"),
                    )
                } else if m.contains("未注册") || m.contains("mchid") || m.contains("商户号") {
                    Diagnosis::new(
                        "REJECTED",
                        format!("WeChat Pay does not know mchid {} (SIGN_ERROR: {message}); check --mchid and --base-url", self.config.mchid),
                    )
                } else {
                    Diagnosis::new(
                        "WRONG_KEY",
                        format!("WeChat Pay rejected the request signature (SIGN_ERROR: {message}); --private-key-file must be the private key (apiclient_key.pem) of the certificate with serial {}", self.config.serial_no),
                    )
                }
            }
            ChannelError::Decrypt => Diagnosis::new(
                "WRONG_APIV3_KEY",
                "the platform certificates did not decrypt: the APIv3 key is not the one set in the WeChat Pay merchant portal",
            ),
            other => Diagnosis::generic(other),
        }
    }

    async fn query(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            path_segment(out_trade_no),
            path_segment(&self.config.mchid)
        );
        let resp = self.call(reqwest::Method::GET, &path, None).await?;
        let t: types::Transaction = resp.json()?;
        if t.out_trade_no != out_trade_no {
            return Err(ChannelError::Protocol(format!(
                "queried {out_trade_no:?}, WeChat answered {:?}",
                t.out_trade_no
            )));
        }
        to_channel_trade(&t)
    }

    async fn close(&self, out_trade_no: &str) -> Result<(), ChannelError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            path_segment(out_trade_no)
        );
        let body = serde_json::to_vec(&types::CloseBody {
            mchid: self.config.mchid.clone(),
        })
        .map_err(|e| ChannelError::Protocol(format!("encoding close body: {e}")))?;
        let resp = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        if resp.status != 204 && resp.status != 200 {
            return Err(ChannelError::Protocol(format!(
                "close answered HTTP {}",
                resp.status
            )));
        }
        Ok(())
    }

    async fn parse_callback(
        &self,
        callback: Callback<'_>,
        now: DateTime<Utc>,
    ) -> Result<Notification, ChannelError> {
        self.parse_notification(callback.headers, callback.body, now)
            .await
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
        self.parse_refund_notification(callback.headers, callback.body, now)
            .await
    }

    fn callback_reply(&self, ok: bool) -> CallbackReply {
        // WeChat only looks at the status: 200/204 means received; 4xx/5xx
        // makes it retry. The bodies are the documented ones.
        if ok {
            CallbackReply {
                status: 200,
                content_type: "application/json",
                body: br#"{"code":"SUCCESS","message":"OK"}"#.to_vec(),
            }
        } else {
            CallbackReply {
                status: 500,
                content_type: "application/json",
                body: br#"{"code":"FAIL","message":"callback not processed, please retry"}"#
                    .to_vec(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_time_is_china_standard_time() {
        let t = DateTime::parse_from_rfc3339("2018-06-08T02:34:56Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(to_wechat_time(t), "2018-06-08T10:34:56+08:00");
    }

    #[test]
    fn trade_states() {
        assert_eq!(trade_state("SUCCESS").unwrap(), TradeState::Paid);
        assert_eq!(trade_state("REFUND").unwrap(), TradeState::Paid);
        assert_eq!(trade_state("NOTPAY").unwrap(), TradeState::NotPaid);
        assert_eq!(trade_state("USERPAYING").unwrap(), TradeState::NotPaid);
        assert_eq!(trade_state("CLOSED").unwrap(), TradeState::Closed);
        assert_eq!(trade_state("REVOKED").unwrap(), TradeState::Closed);
        assert_eq!(trade_state("PAYERROR").unwrap(), TradeState::Failed);
        assert!(trade_state("WHAT").is_err());
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("pay_01ABC"), "pay_01ABC");
        assert_eq!(path_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn diagnosis_names_the_wrong_part() {
        let config = WechatConfig {
            base_url: "https://api.mch.weixin.qq.com".into(),
            appid: "wx1".into(),
            mchid: "1900000001".into(),
            serial_no: "ABC".into(),
            private_key_pem: PrivateKey::generate_pkcs8_pem().unwrap(),
            apiv3_key: "0".repeat(32),
            platform_public_key_id: None,
            platform_public_key_pem: None,
            oauth_app_secret: None,
        };
        let pay = WechatPay::new(config, reqwest::Client::new()).unwrap();
        let sign_error = |m: &str| ChannelError::Rejected {
            code: "SIGN_ERROR".into(),
            message: m.into(),
        };
        let code = |e: ChannelError| pay.diagnose(&e).code;
        assert_eq!(code(sign_error("商户证书序列号有误")), "WRONG_SERIAL");
        assert_eq!(code(sign_error("签名错误")), "WRONG_KEY");
        assert_eq!(code(sign_error("请求已过期或时间戳不正确")), "CLOCK_SKEW");
        assert_eq!(
            code(ChannelError::StaleTimestamp("600s".into())),
            "CLOCK_SKEW"
        );
        assert_eq!(code(ChannelError::Decrypt), "WRONG_APIV3_KEY");
        assert_eq!(
            code(ChannelError::Transport("refused".into())),
            "UNREACHABLE"
        );
        let d = pay.diagnose(&sign_error("签名错误"));
        assert!(!d.message.contains("PRIVATE KEY"));
    }
}
