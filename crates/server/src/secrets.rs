//! The master key and the sealed store the server and the CLI share.

use std::path::Path;
use std::sync::Arc;

use paymux_store::{Keyring, MasterKey, SealedStore, Store};

use crate::ServerError;

/// The environment variable holding the master key itself (hex or base64).
pub const MASTER_KEY_ENV: &str = "PAYMUX_MASTER_KEY";

/// Reads the master key: from `file` if given, else from `PAYMUX_MASTER_KEY`,
/// else none. Errors never repeat the key.
pub fn load_master_key(file: Option<&Path>) -> Result<Option<MasterKey>, ServerError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("master key file {}: {e}", path.display())))?;
        return MasterKey::parse(&text)
            .map(Some)
            .map_err(|e| ServerError::Config(format!("master key file {}: {e}", path.display())));
    }
    match std::env::var(MASTER_KEY_ENV) {
        Ok(text) if !text.trim().is_empty() => MasterKey::parse(&text)
            .map(Some)
            .map_err(|e| ServerError::Config(format!("{MASTER_KEY_ENV}: {e}"))),
        _ => Ok(None),
    }
}

/// The keyring for a master key, or a plaintext one without.
pub fn keyring(key: Option<MasterKey>) -> Keyring {
    match key {
        Some(key) => Keyring::new(key),
        None => Keyring::plaintext(),
    }
}

/// `store` with app secrets and the channels' secret config fields sealed
/// under `keys`.
pub fn sealed(store: Arc<dyn Store>, keys: Keyring) -> Arc<SealedStore> {
    Arc::new(SealedStore::new(
        store,
        Arc::new(keys),
        paymux_channels::secret_fields,
    ))
}

/// Says loudly that secrets are stored in clear (sandbox without a master key).
pub fn warn_plaintext() {
    let line = "!".repeat(72);
    tracing::warn!("{line}");
    tracing::warn!("NO MASTER KEY: app secrets and channel keys are stored IN CLEAR.");
    tracing::warn!(
        "Fine for a sandbox; set {MASTER_KEY_ENV} or --master-key-file for anything else."
    );
    tracing::warn!("{line}");
}
