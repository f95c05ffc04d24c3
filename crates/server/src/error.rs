use paymux_channels::ChannelError;
use paymux_core::CoreError;
use paymux_store::StoreError;
use thiserror::Error;

/// The one error type of `paymux-server`.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Something that must never happen did (a bug, or a database changed
    /// behind paymux's back).
    #[error("invariant broken: {0}")]
    Invariant(String),
}

/// Failures of a payment operation that the merchant API reports with their own code.
#[derive(Debug, Error)]
pub enum FlowError {
    #[error("{0}")]
    Invalid(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    ChannelNotConfigured(String),
    #[error("the channel refused: {0}")]
    ChannelRejected(String),
    #[error("the channel could not be reached; retry the same request: {0}")]
    ChannelUnavailable(String),
    /// paymux is not calling the channel for now (its circuit breaker is
    /// open, or it is backing off after a rate limit). Nothing was sent.
    #[error("the channel is unavailable; retry the same request in {}s", .0.as_secs())]
    ChannelSuspended(std::time::Duration),
    /// The payment cannot be refunded (it was never paid).
    #[error("{0}")]
    NotRefundable(String),
    /// The refund would take the payment's refunds above what was paid.
    #[error("{0}")]
    RefundExceeds(String),
    /// The checkout was paid already: no more attempts.
    #[error("{0}")]
    CheckoutPaid(String),
    /// The checkout expired unpaid: no more attempts.
    #[error("{0}")]
    CheckoutExpired(String),
    /// The checkout has as many attempts as one may have.
    #[error("{0}")]
    TooManyAttempts(String),
    /// Every seat of the group buy is taken; no payment was made.
    #[error("{0}")]
    GroupFull(String),
    /// The group buy succeeded, failed or expired; no payment was made.
    #[error("{0}")]
    GroupClosed(String),
    #[error(transparent)]
    Internal(#[from] ServerError),
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> Self {
        FlowError::Internal(e.into())
    }
}
