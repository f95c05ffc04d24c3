//! Turns a create-payment body into a checked request. Every message names
//! the field at fault; nothing is written before this passes.

use std::net::IpAddr;

use paymux_core::{ChannelKind, Currency, Money, PayMethod};
use serde_json::{Map, Value};

use super::ApiError;

/// Limits written down once (WeChat's own limits where they are tighter).
pub const MAX_ORDER_NO: usize = 64;
pub const MAX_DESCRIPTION: usize = 127;
pub const MAX_URL: usize = 256;
pub const MAX_OPENID: usize = 128;
pub const MAX_METADATA_BYTES: usize = 4096;
pub const MIN_EXPIRY_SECS: i64 = 60;
pub const MAX_EXPIRY_SECS: i64 = 7 * 24 * 3600;
/// WeChat's `amount.total` is a 32-bit integer of fen.
pub const MAX_WECHAT_AMOUNT: i64 = i32::MAX as i64;
/// Alipay's `total_amount` is at most 100000000.00 yuan.
pub const MAX_ALIPAY_AMOUNT: i64 = 10_000_000_000;
/// UnionPay's `txnAmt` is at most 12 digits of fen.
pub const MAX_UNIONPAY_AMOUNT: i64 = 999_999_999_999;
/// Alipay user ids (`2088…`) are 16 digits; leave room, refuse junk.
pub const MAX_BUYER_ID: usize = 28;
/// Payment codes on the payer's phone are 16–24 digits.
pub const MAX_AUTH_CODE: usize = 32;

const FIELDS: [&str; 11] = [
    "group_id",
    "merchant_order_no",
    "amount",
    "currency",
    "channel",
    "method",
    "description",
    "notify_url",
    "expires_in_seconds",
    "payer",
    "metadata",
];

#[derive(Debug, Clone, PartialEq)]
pub struct CreatePayment {
    pub merchant_order_no: String,
    pub amount: Money,
    pub channel: ChannelKind,
    pub method: PayMethod,
    pub description: String,
    pub notify_url: String,
    pub expires_in_seconds: Option<i64>,
    pub payer_openid: Option<String>,
    pub payer_client_ip: Option<String>,
    /// Alipay user id of the payer (mini-program payments without an open id).
    pub payer_buyer_id: Option<String>,
    /// The payment code shown on the payer's phone (barcode payments).
    pub payer_auth_code: Option<String>,
    pub metadata: Value,
    /// The group buy this payment takes a seat in.
    pub group_id: Option<String>,
}

impl CreatePayment {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        Self::from_object(object(body, &FIELDS)?)
    }

    /// [`CreatePayment::parse`] of a body already read as an object of
    /// known fields.
    pub fn from_object(obj: Map<String, Value>) -> Result<Self, ApiError> {
        let merchant_order_no = text(&obj, "merchant_order_no", 1, MAX_ORDER_NO)?;
        let amount = money(&obj)?;
        let (minor, currency) = (amount.minor, amount.currency);
        let channel: ChannelKind = text(&obj, "channel", 1, 16)?.parse().map_err(|_| {
            let all: Vec<&str> = ChannelKind::ALL.iter().map(|c| c.as_str()).collect();
            ApiError::invalid(format!("channel: must be one of: {}", all.join(", ")))
        })?;
        let method: PayMethod = text(&obj, "method", 1, 16)?.parse().map_err(|_| {
            ApiError::invalid(format!(
                "method: must be one of: {}",
                list(channel.methods())
            ))
        })?;
        if !channel.accepts(method) {
            return Err(ApiError::invalid(format!(
                "method: {channel} accepts only: {}",
                list(channel.methods())
            )));
        }
        let description = text(&obj, "description", 1, MAX_DESCRIPTION)?;
        let notify_url = http_url(&obj, "notify_url")?;
        let expires_in_seconds = expires_in(&obj)?;
        let Payer {
            openid: payer_openid,
            client_ip: payer_client_ip,
            buyer_id: payer_buyer_id,
            auth_code: payer_auth_code,
        } = payer(obj.get("payer"))?;
        let metadata = metadata(&obj)?;

        // What the channel itself accepts.
        match channel {
            ChannelKind::Wechat => {
                if currency != Currency::CNY {
                    return Err(ApiError::invalid("currency: wechat accepts only CNY"));
                }
                if minor > MAX_WECHAT_AMOUNT {
                    return Err(ApiError::invalid(format!(
                        "amount: wechat accepts at most {MAX_WECHAT_AMOUNT}"
                    )));
                }
                if method.needs_openid() && payer_openid.is_none() {
                    return Err(ApiError::invalid(format!(
                        "payer.openid: required for method {method}"
                    )));
                }
                if method == PayMethod::H5 && payer_client_ip.is_none() {
                    return Err(ApiError::invalid("payer.client_ip: required for method h5"));
                }
            }
            ChannelKind::Alipay => {
                if currency != Currency::CNY {
                    return Err(ApiError::invalid("currency: alipay accepts only CNY"));
                }
                if minor > MAX_ALIPAY_AMOUNT {
                    return Err(ApiError::invalid(format!(
                        "amount: alipay accepts at most {MAX_ALIPAY_AMOUNT}"
                    )));
                }
                if method == PayMethod::MiniProgram
                    && payer_openid.is_none()
                    && payer_buyer_id.is_none()
                {
                    return Err(ApiError::invalid(
                        "payer.openid: required for alipay mini_program (the payer's Alipay open id; or give payer.buyer_id)",
                    ));
                }
                if method == PayMethod::Barcode && payer_auth_code.is_none() {
                    return Err(ApiError::invalid(
                        "payer.auth_code: required for method barcode",
                    ));
                }
            }
            ChannelKind::Unionpay => {
                if currency != Currency::CNY {
                    return Err(ApiError::invalid("currency: unionpay accepts only CNY"));
                }
                if minor > MAX_UNIONPAY_AMOUNT {
                    return Err(ApiError::invalid(format!(
                        "amount: unionpay accepts at most {MAX_UNIONPAY_AMOUNT}"
                    )));
                }
            }
        }
        if method != PayMethod::Barcode && payer_auth_code.is_some() {
            return Err(ApiError::invalid(
                "payer.auth_code: only for method barcode",
            ));
        }
        let group_id = match obj.get("group_id") {
            None | Some(Value::Null) => None,
            Some(_) => Some(text(&obj, "group_id", 1, 64)?),
        };
        Ok(CreatePayment {
            group_id,
            merchant_order_no,
            amount,
            channel,
            method,
            description,
            notify_url,
            expires_in_seconds,
            payer_openid,
            payer_client_ip,
            payer_buyer_id,
            payer_auth_code,
            metadata,
        })
    }

    /// The payer as stored and shown: only the fields given.
    pub fn payer_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(o) = &self.payer_openid {
            m.insert("openid".into(), o.clone().into());
        }
        if let Some(ip) = &self.payer_client_ip {
            m.insert("client_ip".into(), ip.clone().into());
        }
        if let Some(b) = &self.payer_buyer_id {
            m.insert("buyer_id".into(), b.clone().into());
        }
        if let Some(c) = &self.payer_auth_code {
            m.insert("auth_code".into(), c.clone().into());
        }
        Value::Object(m)
    }

    /// A canonical form of the request: the same request always hashes the
    /// same, whatever its key order or whitespace.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "merchant_order_no": self.merchant_order_no,
            "amount": self.amount.minor,
            "currency": self.amount.currency.as_str(),
            "channel": self.channel.as_str(),
            "method": self.method.as_str(),
            "description": self.description,
            "notify_url": self.notify_url,
            "expires_in_seconds": self.expires_in_seconds,
            "payer": self.payer_json(),
            "metadata": self.metadata,
            "group_id": self.group_id,
        });
        sha256_hex(canonical.to_string().as_bytes())
    }
}

/// `amount` in minor units of `currency` (CNY when absent).
pub(crate) fn money(obj: &Map<String, Value>) -> Result<Money, ApiError> {
    let currency = match obj.get("currency") {
        None | Some(Value::Null) => Currency::CNY,
        Some(Value::String(s)) => Currency::parse(s)
            .map_err(|_| ApiError::invalid("currency: must be an ISO-4217 code such as CNY"))?,
        Some(_) => return Err(ApiError::invalid("currency: must be a string")),
    };
    let minor = obj
        .get("amount")
        .ok_or_else(|| ApiError::invalid("amount: required"))?
        .as_i64()
        .ok_or_else(|| ApiError::invalid("amount: must be an integer in minor units"))?;
    Money::new(minor, currency).map_err(|_| ApiError::invalid("amount: must be greater than 0"))
}

/// The optional `expires_in_seconds`, within the limits.
pub(crate) fn expires_in(obj: &Map<String, Value>) -> Result<Option<i64>, ApiError> {
    match obj.get("expires_in_seconds") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(s) if (MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&s) => Ok(Some(s)),
            _ => Err(ApiError::invalid(format!(
                "expires_in_seconds: must be an integer from {MIN_EXPIRY_SECS} to {MAX_EXPIRY_SECS}"
            ))),
        },
    }
}

/// The optional `metadata` object (empty when absent), within its size.
pub(crate) fn metadata(obj: &Map<String, Value>) -> Result<Value, ApiError> {
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(ApiError::invalid("metadata: must be a JSON object")),
    };
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(format!(
            "metadata: larger than {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(metadata)
}

/// A body that must be a JSON object of only the `allowed` fields.
pub(crate) fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid("body must be a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!("{unknown}: unknown field")));
    }
    Ok(obj)
}

/// A required http(s) URL field.
pub(crate) fn http_url(obj: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    let url = text(obj, field, 1, MAX_URL)?;
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        return Err(ApiError::invalid(format!(
            "{field}: must be an http(s) URL"
        )));
    }
    Ok(url)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

pub(crate) fn text(
    obj: &Map<String, Value>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    let s = obj
        .get(field)
        .ok_or_else(|| ApiError::invalid(format!("{field}: required")))?
        .as_str()
        .ok_or_else(|| ApiError::invalid(format!("{field}: must be a string")))?;
    let len = s.chars().count();
    if len < min || len > max {
        return Err(ApiError::invalid(format!(
            "{field}: must be {min}-{max} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field}: must not contain control characters"
        )));
    }
    Ok(s.to_string())
}

/// The payer fields of a create request.
#[derive(Default)]
struct Payer {
    openid: Option<String>,
    client_ip: Option<String>,
    buyer_id: Option<String>,
    auth_code: Option<String>,
}

const PAYER_FIELDS: [&str; 4] = ["openid", "client_ip", "buyer_id", "auth_code"];

fn payer(v: Option<&Value>) -> Result<Payer, ApiError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(Payer::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::invalid("payer: must be a JSON object")),
    };
    if let Some(unknown) = obj.keys().find(|k| !PAYER_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!("payer.{unknown}: unknown field")));
    }
    let openid = match obj.get("openid") {
        None | Some(Value::Null) => None,
        Some(_) => Some(text(obj, "openid", 1, MAX_OPENID).map_err(|e| prefixed(e, "payer."))?),
    };
    let client_ip = match obj.get("client_ip") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let ip = v.as_str().and_then(|s| s.parse::<IpAddr>().ok());
            Some(
                ip.ok_or_else(|| ApiError::invalid("payer.client_ip: must be an IP address"))?
                    .to_string(),
            )
        }
    };
    let digits = |field: &str, max: usize| -> Result<Option<String>, ApiError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => {
                let s = text(obj, field, 1, max).map_err(|e| prefixed(e, "payer."))?;
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::invalid(format!(
                        "payer.{field}: must be digits only"
                    )));
                }
                Ok(Some(s))
            }
        }
    };
    Ok(Payer {
        openid,
        client_ip,
        buyer_id: digits("buyer_id", MAX_BUYER_ID)?,
        auth_code: digits("auth_code", MAX_AUTH_CODE)?,
    })
}

fn list(methods: &[PayMethod]) -> String {
    methods
        .iter()
        .map(PayMethod::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn prefixed(mut e: ApiError, prefix: &str) -> ApiError {
    e.message = format!("{prefix}{}", e.message);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "merchant_order_no": "order-1",
            "amount": 100,
            "channel": "wechat",
            "method": "mini_program",
            "description": "Coffee",
            "notify_url": "https://mall.example.com/notify",
            "payer": {"openid": "o-abc"}
        })
    }

    fn parse(v: &Value) -> Result<CreatePayment, ApiError> {
        CreatePayment::parse(v.to_string().as_bytes())
    }

    fn error_for(patch: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut v = base();
        patch(v.as_object_mut().unwrap());
        let e = parse(&v).unwrap_err();
        assert_eq!(e.code, "INVALID_REQUEST");
        e.message
    }

    #[test]
    fn accepts_a_minimal_request() {
        let p = parse(&base()).unwrap();
        assert_eq!(p.amount, Money::new(100, Currency::CNY).unwrap());
        assert_eq!(p.payer_openid.as_deref(), Some("o-abc"));
    }

    #[test]
    fn messages_name_the_field() {
        assert!(error_for(|o| {
            o.insert("amount".into(), (-5).into());
        })
        .starts_with("amount"));
        assert!(error_for(|o| {
            o.insert("amount".into(), 1.5.into());
        })
        .starts_with("amount"));
        assert!(error_for(|o| {
            o.insert("amount".into(), "100".into());
        })
        .starts_with("amount"));
        assert!(error_for(|o| {
            o.insert("merchant_order_no".into(), "x".repeat(65).into());
        })
        .starts_with("merchant_order_no"));
        assert!(error_for(|o| {
            o.remove("payer");
        })
        .starts_with("payer.openid"));
        assert!(error_for(|o| {
            o.insert("method".into(), "card".into());
        })
        .starts_with("method"));
        assert!(error_for(|o| {
            o.insert("bogus".into(), 1.into());
        })
        .starts_with("bogus"));
        assert!(error_for(|o| {
            o.insert("currency".into(), "USD".into());
        })
        .starts_with("currency"));
        let channel = error_for(|o| {
            o.insert("channel".into(), "paypal".into());
        });
        for name in ["wechat", "alipay", "unionpay"] {
            assert!(channel.contains(name), "{channel}");
        }
        assert!(error_for(|o| {
            o.insert("notify_url".into(), "ftp://x".into());
        })
        .starts_with("notify_url"));
        assert!(error_for(|o| {
            o.insert("expires_in_seconds".into(), 5.into());
        })
        .starts_with("expires_in"));
    }

    #[test]
    fn alipay_rules_name_the_field() {
        let alipay = |patch: &dyn Fn(&mut Map<String, Value>)| {
            let mut v = base();
            v["channel"] = "alipay".into();
            patch(v.as_object_mut().unwrap());
            parse(&v)
        };
        let ok = alipay(&|_| {}).unwrap();
        assert_eq!(ok.channel, ChannelKind::Alipay);
        let ok = alipay(&|o| {
            o.insert(
                "payer".into(),
                serde_json::json!({"buyer_id": "2088102534368455"}),
            );
        })
        .unwrap();
        assert_eq!(ok.payer_buyer_id.as_deref(), Some("2088102534368455"));
        let msg = |r: Result<CreatePayment, ApiError>| r.unwrap_err().message;
        assert!(msg(alipay(&|o| {
            o.remove("payer");
        }))
        .starts_with("payer.openid"));
        assert!(msg(alipay(&|o| {
            o.insert("method".into(), "jsapi".into());
        }))
        .starts_with("method: alipay accepts only"));
        assert!(msg(alipay(&|o| {
            o.insert("method".into(), "barcode".into());
        }))
        .starts_with("payer.auth_code"));
        assert!(msg(alipay(&|o| {
            o.insert("method".into(), "barcode".into());
            o.insert("payer".into(), serde_json::json!({"auth_code": "28x"}));
        }))
        .starts_with("payer.auth_code"));
        let barcode = alipay(&|o| {
            o.insert("method".into(), "barcode".into());
            o.insert(
                "payer".into(),
                serde_json::json!({"auth_code": "286212345678901234"}),
            );
        })
        .unwrap();
        assert_eq!(barcode.payer_json()["auth_code"], "286212345678901234");
        assert!(msg(alipay(&|o| {
            o.insert("amount".into(), (MAX_ALIPAY_AMOUNT + 1).into());
        }))
        .starts_with("amount"));
        // WeChat has no barcode method here.
        let mut v = base();
        v["method"] = "barcode".into();
        assert!(parse(&v).unwrap_err().message.starts_with("method: wechat"));
    }

    #[test]
    fn malformed_json_is_invalid_request() {
        let e = CreatePayment::parse(b"{\"amount\": ").unwrap_err();
        assert_eq!(e.code, "INVALID_REQUEST");
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a = parse(&base()).unwrap();
        let reordered = r#"{"payer":{"openid":"o-abc"},"notify_url":"https://mall.example.com/notify","description":"Coffee","method":"mini_program","channel":"wechat","amount":100,"merchant_order_no":"order-1"}"#;
        let b = CreatePayment::parse(reordered.as_bytes()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut v = base();
        v["amount"] = 101.into();
        assert_ne!(a.fingerprint(), parse(&v).unwrap().fingerprint());
    }
}
