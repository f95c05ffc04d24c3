//! Turns create-checkout and create-attempt bodies into checked requests.
//! Every message names the field at fault; nothing is written before this
//! passes.

use paymux_core::Money;
use paymux_store::Checkout;
use serde_json::{json, Map, Value};

use super::validate::{
    expires_in, http_url, metadata, money, object, sha256_hex, text, CreatePayment,
    MAX_DESCRIPTION, MAX_ORDER_NO,
};
use super::ApiError;

const FIELDS: [&str; 8] = [
    "merchant_order_no",
    "amount",
    "currency",
    "description",
    "notify_url",
    "return_url",
    "expires_in_seconds",
    "metadata",
];

const ATTEMPT_FIELDS: [&str; 3] = ["channel", "method", "payer"];

#[derive(Debug, Clone, PartialEq)]
pub struct CreateCheckout {
    pub merchant_order_no: String,
    pub amount: Money,
    pub description: String,
    pub notify_url: String,
    pub return_url: Option<String>,
    pub expires_in_seconds: Option<i64>,
    pub metadata: Value,
}

impl CreateCheckout {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let obj = object(body, &FIELDS)?;
        let return_url = match obj.get("return_url") {
            None | Some(Value::Null) => None,
            Some(_) => Some(http_url(&obj, "return_url")?),
        };
        Ok(CreateCheckout {
            merchant_order_no: text(&obj, "merchant_order_no", 1, MAX_ORDER_NO)?,
            amount: money(&obj)?,
            description: text(&obj, "description", 1, MAX_DESCRIPTION)?,
            notify_url: http_url(&obj, "notify_url")?,
            return_url,
            expires_in_seconds: expires_in(&obj)?,
            metadata: metadata(&obj)?,
        })
    }

    /// A canonical form of the request: the same request always hashes the
    /// same, whatever its key order or whitespace.
    pub fn fingerprint(&self) -> String {
        let canonical = json!({
            "merchant_order_no": self.merchant_order_no,
            "amount": self.amount.minor,
            "currency": self.amount.currency.as_str(),
            "description": self.description,
            "notify_url": self.notify_url,
            "return_url": self.return_url,
            "expires_in_seconds": self.expires_in_seconds,
            "metadata": self.metadata,
        });
        sha256_hex(canonical.to_string().as_bytes())
    }
}

/// An attempt's body (`channel`, `method`, `payer`) with the checkout's
/// order, checked like a create-payment request, so each channel's limits
/// and payer fields apply exactly as they do there. `merchant_order_no` is
/// the attempt's own number (`<checkout id>.<n>`).
pub fn attempt(
    body: &[u8],
    checkout: &Checkout,
    merchant_order_no: &str,
) -> Result<CreatePayment, ApiError> {
    let mut obj: Map<String, Value> = object(body, &ATTEMPT_FIELDS)?;
    for field in ["channel", "method"] {
        if !obj.contains_key(field) {
            return Err(ApiError::invalid(format!("{field}: required")));
        }
    }
    obj.insert("merchant_order_no".into(), merchant_order_no.into());
    obj.insert("amount".into(), checkout.amount.minor.into());
    obj.insert("currency".into(), checkout.amount.currency.as_str().into());
    obj.insert("description".into(), checkout.description.clone().into());
    obj.insert("notify_url".into(), checkout.notify_url.clone().into());
    obj.insert("metadata".into(), checkout.metadata.clone());
    CreatePayment::from_object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use paymux_core::{ChannelKind, Currency, PayMethod};

    fn checkout() -> Checkout {
        let now = Utc::now();
        Checkout {
            id: "chk_1".into(),
            merchant_id: "mch_1".into(),
            app_id: "app_1".into(),
            merchant_order_no: "order-1".into(),
            amount: Money::new(2_500, Currency::CNY).unwrap(),
            description: "两杯奶茶".into(),
            notify_url: "https://mall.example.com/notify".into(),
            return_url: None,
            metadata: json!({"cart": 7}),
            request_hash: "h".into(),
            cashier_token: "token".into(),
            winner_payment_id: None,
            won_at: None,
            attempts_closed_at: None,
            expires_at: now,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_checkout_needs_what_an_order_needs() {
        let ok = CreateCheckout::parse(
            br#"{"merchant_order_no":"o-1","amount":2500,"description":"tea",
                 "notify_url":"https://mall.example.com/n","return_url":"https://mall.example.com/r"}"#,
        )
        .unwrap();
        assert_eq!(ok.amount.minor, 2_500);
        assert_eq!(ok.return_url.as_deref(), Some("https://mall.example.com/r"));
        for (body, field) in [
            (
                r#"{"amount":1,"description":"t","notify_url":"https://a.example/n"}"#,
                "merchant_order_no",
            ),
            (
                r#"{"merchant_order_no":"o","amount":0,"description":"t","notify_url":"https://a.example/n"}"#,
                "amount",
            ),
            (
                r#"{"merchant_order_no":"o","amount":1,"description":"t","notify_url":"https://a.example/n","return_url":"javascript:alert(1)"}"#,
                "return_url",
            ),
            (
                r#"{"merchant_order_no":"o","amount":1,"description":"t","notify_url":"https://a.example/n","channel":"wechat"}"#,
                "channel",
            ),
        ] {
            let e = CreateCheckout::parse(body.as_bytes()).unwrap_err();
            assert!(e.message.starts_with(field), "{field}: {}", e.message);
        }
    }

    #[test]
    fn an_attempt_is_checked_like_a_payment_of_the_checkout() {
        let k = checkout();
        let p = attempt(
            br#"{"channel":"wechat","method":"jsapi","payer":{"openid":"o-1"}}"#,
            &k,
            "chk_1.1",
        )
        .unwrap();
        assert_eq!(p.channel, ChannelKind::Wechat);
        assert_eq!(p.method, PayMethod::Jsapi);
        assert_eq!(p.amount, k.amount);
        assert_eq!(p.merchant_order_no, "chk_1.1");
        assert_eq!(p.metadata, k.metadata);
        for (body, field) in [
            (r#"{"channel":"wechat","method":"jsapi"}"#, "payer.openid"),
            (r#"{"method":"jsapi"}"#, "channel"),
            (r#"{"channel":"alipay","method":"jsapi"}"#, "method"),
            (
                r#"{"channel":"alipay","method":"wap","amount":1}"#,
                "amount: unknown",
            ),
        ] {
            let e = attempt(body.as_bytes(), &k, "chk_1.1").unwrap_err();
            assert!(e.message.starts_with(field), "{field}: {}", e.message);
        }
    }
}
