//! Turns a create-refund body into a checked request. Every message names
//! the field at fault; nothing is written before this passes.

use serde_json::{Map, Value};

use super::validate::{http_url, object, sha256_hex, text, MAX_ORDER_NO};
use super::ApiError;

/// WeChat's `reason` is at most 80 characters; the tightest of the channels.
pub const MAX_REASON: usize = 80;

const FIELDS: [&str; 5] = [
    "payment_id",
    "merchant_refund_no",
    "amount",
    "reason",
    "notify_url",
];

#[derive(Debug, Clone, PartialEq)]
pub struct CreateRefund {
    pub payment_id: String,
    pub merchant_refund_no: String,
    /// In the payment's minor units.
    pub amount: i64,
    pub reason: Option<String>,
    /// Where `refund.*` events go; the payment's notify_url when absent.
    pub notify_url: Option<String>,
}

impl CreateRefund {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let obj = object(body, &FIELDS)?;
        let payment_id = text(&obj, "payment_id", 1, 64)?;
        let merchant_refund_no = text(&obj, "merchant_refund_no", 1, MAX_ORDER_NO)?;
        let amount = obj
            .get("amount")
            .ok_or_else(|| ApiError::invalid("amount: required"))?
            .as_i64()
            .filter(|a| *a > 0)
            .ok_or_else(|| {
                ApiError::invalid("amount: must be an integer greater than 0, in minor units")
            })?;
        let reason = optional(&obj, "reason", |o| text(o, "reason", 1, MAX_REASON))?;
        let notify_url = optional(&obj, "notify_url", |o| http_url(o, "notify_url"))?;
        Ok(CreateRefund {
            payment_id,
            merchant_refund_no,
            amount,
            reason,
            notify_url,
        })
    }

    /// Identifies the request: a repeat of `merchant_refund_no` with a
    /// different fingerprint is an idempotency conflict.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "payment_id": self.payment_id,
            "merchant_refund_no": self.merchant_refund_no,
            "amount": self.amount,
            "reason": self.reason,
            "notify_url": self.notify_url,
        });
        sha256_hex(canonical.to_string().as_bytes())
    }
}

/// A field that may be absent or null.
fn optional(
    obj: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&Map<String, Value>) -> Result<String, ApiError>,
) -> Result<Option<String>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => parse(obj).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &Value) -> Result<CreateRefund, ApiError> {
        CreateRefund::parse(v.to_string().as_bytes())
    }

    fn base() -> Value {
        serde_json::json!({"payment_id": "pay_01J0000000000000000000000", "merchant_refund_no": "R-1", "amount": 500})
    }

    #[test]
    fn a_minimal_refund_parses() {
        let r = parse(&base()).unwrap();
        assert_eq!((r.amount, r.reason, r.notify_url), (500, None, None));
    }

    #[test]
    fn every_bad_field_is_named() {
        for (field, value, expect) in [
            ("amount", serde_json::json!(0), "amount:"),
            ("amount", serde_json::json!(1.5), "amount:"),
            ("amount", serde_json::json!("5"), "amount:"),
            (
                "merchant_refund_no",
                serde_json::json!(""),
                "merchant_refund_no:",
            ),
            ("reason", serde_json::json!("x".repeat(81)), "reason:"),
            ("notify_url", serde_json::json!("ftp://x"), "notify_url:"),
            ("colour", serde_json::json!("red"), "colour: unknown field"),
        ] {
            let mut v = base();
            v[field] = value;
            let e = parse(&v).unwrap_err();
            assert!(e.message.starts_with(expect), "{field}: {}", e.message);
        }
        let mut v = base();
        v.as_object_mut().unwrap().remove("payment_id");
        assert_eq!(parse(&v).unwrap_err().message, "payment_id: required");
    }

    #[test]
    fn the_fingerprint_follows_the_values() {
        let a = parse(&base()).unwrap();
        let mut v = base();
        v["amount"] = 501.into();
        assert_ne!(a.fingerprint(), parse(&v).unwrap().fingerprint());
        assert_eq!(a.fingerprint(), parse(&base()).unwrap().fingerprint());
    }
}
