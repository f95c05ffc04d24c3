use std::time::Duration;

use thiserror::Error;

/// The one error type of `paymux-channels`.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// The request may or may not have reached the channel (timeout, connection
    /// reset, 5xx). The outcome is unknown until a query says otherwise.
    #[error("channel unreachable or outcome unknown: {0}")]
    Transport(String),
    /// The channel turned the request away for now (WeChat HTTP 429
    /// `FREQUENCY_LIMITED`, Alipay `40005` `isv.app-call-limited` /
    /// `isv.method-call-limited`). Nothing was done; back off before asking again.
    #[error("channel rate limit reached")]
    RateLimited {
        /// How long the channel asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// paymux did not call the channel: its circuit breaker is open after
    /// repeated failures, or it is backing off after a rate limit.
    #[error("channel calls suspended for {}s (circuit breaker open or rate-limit back-off)", retry_after.as_secs())]
    CircuitOpen { retry_after: Duration },
    /// The channel answered and refused the request.
    #[error("channel rejected the request: {code}: {message}")]
    Rejected { code: String, message: String },
    /// The order does not exist at the channel.
    #[error("order not found at the channel")]
    NotFound,
    /// A signature did not verify (response or callback).
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// A callback's or response's timestamp is outside the allowed window.
    #[error("stale timestamp: {0}")]
    StaleTimestamp(String),
    /// Encrypted content did not decrypt (wrong key or tampered ciphertext).
    #[error("decryption failed")]
    Decrypt,
    /// The channel answered something that does not follow its protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Our own configuration is unusable (bad key PEM, missing field).
    #[error("configuration error: {0}")]
    Config(String),
}

impl ChannelError {
    /// Whether the same call may be retried safely and might then succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ChannelError::Transport(_)
                | ChannelError::RateLimited { .. }
                | ChannelError::CircuitOpen { .. }
        )
    }

    /// Whether this says the channel is unhealthy: transport failures,
    /// timeouts, 5xx and rate limits. A refusal (an order already closed, a
    /// bad parameter) is a healthy channel answering and does not count.
    pub fn is_channel_failure(&self) -> bool {
        matches!(
            self,
            ChannelError::Transport(_) | ChannelError::RateLimited { .. }
        )
    }
}
