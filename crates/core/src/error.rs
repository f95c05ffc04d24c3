use thiserror::Error;

/// The one error type of `paymux-core`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    #[error("invalid currency code {0:?}: expected three uppercase ASCII letters")]
    InvalidCurrency(String),
    #[error("amount must be greater than zero, got {0}")]
    NonPositiveAmount(i64),
    #[error("currency mismatch: {0} vs {1}")]
    CurrencyMismatch(String, String),
    #[error("amount mismatch: expected {expected}, reported {reported}")]
    AmountMismatch { expected: i64, reported: i64 },
    #[error("amount overflow")]
    Overflow,
    #[error("invalid id {0:?}")]
    InvalidId(String),
    #[error("unknown {kind} {value:?}")]
    UnknownVariant { kind: &'static str, value: String },
    #[error("illegal transition: {event:?} in status {from:?}")]
    IllegalTransition {
        from: crate::PaymentStatus,
        event: crate::PaymentEvent,
    },
    #[error("illegal refund transition: {event:?} in status {from:?}")]
    IllegalRefundTransition {
        from: crate::RefundStatus,
        event: crate::RefundEvent,
    },
}
