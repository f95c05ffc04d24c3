use thiserror::Error;

/// The one error type of `paymux-store`.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("row could not be decoded: {0}")]
    Corrupt(String),
    #[error("duplicate key: {0}")]
    Duplicate(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A sealed secret could not be opened or a secret could not be sealed
    /// (unknown master key, tampered ciphertext, no master key given). The
    /// message never contains the secret.
    #[error("secret: {0}")]
    Secret(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Turns a unique-key violation into [`StoreError::Duplicate`] naming `what`;
    /// any other error stays a database error.
    pub(crate) fn unique(err: sqlx::Error, what: &str) -> StoreError {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Duplicate(format!("{what}: {}", db.message()))
            }
            _ => StoreError::Database(err),
        }
    }
}
