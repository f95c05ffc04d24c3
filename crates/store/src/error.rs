use thiserror::Error;

/// The one error type of `paymux-store`.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The SQLite engine could not run or commit the work (the batch it was
    /// committed in failed, or the store is closing).
    #[error("database engine: {0}")]
    Engine(String),
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

    /// [`StoreError::unique`] for SQLite.
    pub(crate) fn unique_sqlite(err: rusqlite::Error, what: &str) -> StoreError {
        match &err {
            rusqlite::Error::SqliteFailure(e, message)
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && matches!(
                        e.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    ) =>
            {
                StoreError::Duplicate(format!("{what}: {}", message.as_deref().unwrap_or("")))
            }
            _ => StoreError::Sqlite(err),
        }
    }
}
