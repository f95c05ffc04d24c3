//! Identifiers. A payment id doubles as the channel's `out_trade_no`, so it
//! must fit every channel: at most 32 letters, digits and `_` (WeChat's limit).
//! Ids are a type prefix plus a ULID: sortable by creation time, no secret.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A new id `prefix_<ULID>`; prefixes are short lowercase words (`pay`, `mch`, `evt`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PaymentId(String);

impl PaymentId {
    pub const PREFIX: &'static str = "pay";
    pub const MAX_LEN: usize = 32;

    pub fn generate() -> Self {
        PaymentId(new_id(Self::PREFIX))
    }

    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let ok = s.len() <= Self::MAX_LEN
            && s.starts_with("pay_")
            && s.len() > 4
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(CoreError::InvalidId(s.to_string()));
        }
        Ok(PaymentId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PaymentId {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        PaymentId::parse(&s)
    }
}

impl From<PaymentId> for String {
    fn from(id: PaymentId) -> String {
        id.0
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_fit_every_channel() {
        for _ in 0..100 {
            let id = PaymentId::generate();
            assert!(id.as_str().len() <= 32, "{id}");
            assert!(PaymentId::parse(id.as_str()).is_ok());
        }
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = PaymentId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = PaymentId::generate();
        assert!(a < b);
    }

    #[test]
    fn rejects_foreign_ids() {
        for bad in [
            "",
            "pay_",
            "ord_01H",
            "pay_01H-x",
            "pay_0123456789012345678901234567890",
        ] {
            assert!(PaymentId::parse(bad).is_err(), "{bad}");
        }
    }
}
