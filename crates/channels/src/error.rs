use thiserror::Error;

/// The one error type of `paymux-channels`.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// The request may or may not have reached the channel (timeout, connection
    /// reset, 5xx). The outcome is unknown until a query says otherwise.
    #[error("channel unreachable or outcome unknown: {0}")]
    Transport(String),
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
        matches!(self, ChannelError::Transport(_))
    }
}
