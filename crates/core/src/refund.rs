//! The refund status state machine and the rule that keeps refunds within
//! what was paid.
//!
//! ```text
//! processing ──channel refunded──▶ succeeded
//!      └──────channel refused────▶ failed
//! ```
//!
//! A refund is `processing` from the moment it is reserved against its
//! payment until the channel says how it ended; a timeout or a 5xx leaves it
//! there (the outcome is unknown until a query says otherwise). Terminal
//! statuses never change; a repeated report is a success that changes nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Processing,
    Succeeded,
    Failed,
}

/// What the channel reports about a refund.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundEvent {
    /// The money went back to the payer.
    Refunded,
    /// The channel refused or abandoned the refund for good.
    RefundFailed,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 3] = [
        RefundStatus::Processing,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RefundStatus::Processing => "processing",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(&self) -> bool {
        !matches!(self, RefundStatus::Processing)
    }

    /// Whether the refund's amount counts against what the payment can still
    /// refund: everything in flight or done, not what failed.
    pub fn holds_amount(&self) -> bool {
        !matches!(self, RefundStatus::Failed)
    }

    /// Applies an event: `Some(to)` is a move to persist with a
    /// compare-and-set; `None` means it already happened. A report that
    /// contradicts a final status is an error and must change nothing.
    pub fn on(self, event: RefundEvent) -> Result<Option<RefundStatus>, CoreError> {
        let to = match event {
            RefundEvent::Refunded => RefundStatus::Succeeded,
            RefundEvent::RefundFailed => RefundStatus::Failed,
        };
        match self {
            RefundStatus::Processing => Ok(Some(to)),
            s if s == to => Ok(None),
            from => Err(CoreError::IllegalRefundTransition { from, event }),
        }
    }
}

/// How much of `paid` is left to refund when `held` (refunds in flight and
/// succeeded) is already taken, or `None` if `amount` does not fit.
pub fn fits(paid: i64, held: i64, amount: i64) -> Option<i64> {
    let left = paid.checked_sub(held)?;
    (amount > 0 && amount <= left).then_some(left - amount)
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RefundStatus {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        RefundStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| CoreError::UnknownVariant {
                kind: "refund status",
                value: s.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn processing_ends_once() {
        use RefundEvent::*;
        use RefundStatus::*;
        assert_eq!(Processing.on(Refunded), Ok(Some(Succeeded)));
        assert_eq!(Processing.on(RefundFailed), Ok(Some(Failed)));
        assert_eq!(Succeeded.on(Refunded), Ok(None));
        assert_eq!(Failed.on(RefundFailed), Ok(None));
        assert!(Succeeded.on(RefundFailed).is_err());
        assert!(Failed.on(Refunded).is_err());
        for s in RefundStatus::ALL {
            assert_eq!(s.as_str().parse::<RefundStatus>(), Ok(s));
        }
    }

    #[test]
    fn fits_within_what_is_left() {
        assert_eq!(fits(100, 0, 100), Some(0));
        assert_eq!(fits(100, 40, 60), Some(0));
        assert_eq!(fits(100, 40, 61), None);
        assert_eq!(fits(100, 0, 0), None);
        assert_eq!(fits(100, 0, -1), None);
        assert_eq!(fits(100, 100, 1), None);
    }

    proptest! {
        /// Whatever the channel reports in whatever order, a refund ends at
        /// most once and never changes its mind.
        #[test]
        fn a_refund_ends_once(events in proptest::collection::vec(any::<bool>(), 0..20)) {
            let mut status = RefundStatus::Processing;
            let mut first_final = None;
            for refunded in events {
                let event = if refunded { RefundEvent::Refunded } else { RefundEvent::RefundFailed };
                if let Ok(Some(to)) = status.on(event) {
                    prop_assert_eq!(status, RefundStatus::Processing);
                    status = to;
                }
                if status.is_terminal() {
                    prop_assert_eq!(*first_final.get_or_insert(status), status);
                }
            }
        }

        /// Refunds reserved one by one through `fits` never exceed the payment.
        #[test]
        fn reserved_refunds_never_exceed_the_payment(
            paid in 1i64..1_000_000,
            asks in proptest::collection::vec(1i64..400_000, 0..30),
        ) {
            let mut held = 0i64;
            for amount in asks {
                if fits(paid, held, amount).is_some() {
                    held += amount;
                }
                prop_assert!(held <= paid);
            }
        }
    }
}
