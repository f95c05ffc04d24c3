//! Money is an integer count of a currency's minor unit (fen for CNY) plus the
//! currency. There is no float anywhere near an amount.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// An ISO-4217 alphabetic code, stored inline (three uppercase ASCII letters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const CNY: Currency = Currency(*b"CNY");

    pub fn parse(code: &str) -> Result<Self, CoreError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(CoreError::InvalidCurrency(code.to_string()));
        }
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII uppercase bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Digits after the decimal point of the currency's major unit.
    pub fn minor_unit_digits(&self) -> u32 {
        match &self.0 {
            b"JPY" | b"KRW" | b"VND" | b"CLP" | b"ISK" => 0,
            b"KWD" | b"BHD" | b"OMR" | b"JOD" | b"TND" => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A positive amount of money in minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// A chargeable amount: strictly positive.
    pub fn new(minor: i64, currency: Currency) -> Result<Self, CoreError> {
        if minor <= 0 {
            return Err(CoreError::NonPositiveAmount(minor));
        }
        Ok(Money { minor, currency })
    }

    pub fn checked_add(self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(CoreError::Overflow)?;
        Ok(Money {
            minor,
            currency: self.currency,
        })
    }

    pub fn same_currency(&self, other: &Money) -> Result<(), CoreError> {
        if self.currency != other.currency {
            return Err(CoreError::CurrencyMismatch(
                self.currency.to_string(),
                other.currency.to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn currency_codes() {
        assert_eq!(Currency::parse("CNY").unwrap(), Currency::CNY);
        assert!(Currency::parse("cny").is_err());
        assert!(Currency::parse("CN").is_err());
        assert!(Currency::parse("CNYY").is_err());
        assert_eq!(Currency::parse("JPY").unwrap().minor_unit_digits(), 0);
    }

    #[test]
    fn money_is_positive() {
        assert!(Money::new(0, Currency::CNY).is_err());
        assert!(Money::new(-1, Currency::CNY).is_err());
        assert_eq!(Money::new(1, Currency::CNY).unwrap().minor, 1);
    }

    proptest! {
        #[test]
        fn addition_never_wraps(a in 1i64..=i64::MAX, b in 1i64..=i64::MAX) {
            let x = Money::new(a, Currency::CNY).unwrap();
            let y = Money::new(b, Currency::CNY).unwrap();
            match x.checked_add(y) {
                Ok(sum) => prop_assert_eq!(sum.minor as i128, a as i128 + b as i128),
                Err(e) => {
                    prop_assert_eq!(e, CoreError::Overflow);
                    prop_assert!(a as i128 + b as i128 > i64::MAX as i128);
                }
            }
        }

        #[test]
        fn mixed_currencies_never_add(a in 1i64..1_000_000, b in 1i64..1_000_000) {
            let x = Money::new(a, Currency::CNY).unwrap();
            let y = Money::new(b, Currency::parse("USD").unwrap()).unwrap();
            prop_assert!(x.checked_add(y).is_err());
        }
    }
}
