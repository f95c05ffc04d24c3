//! Merchants and their API credentials.

use paymux_core::{new_id, Clock};
use paymux_store::{App, Merchant, RequestKey, Store};

use crate::ServerError;

/// Creates a merchant with one API app. The secret is returned once, here.
pub async fn create_merchant(
    store: &dyn Store,
    clock: &dyn Clock,
    name: &str,
) -> Result<(Merchant, App), ServerError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ServerError::Config(
            "merchant name must be 1-128 characters".into(),
        ));
    }
    let now = clock.now();
    let merchant = Merchant {
        id: new_id("mch"),
        name: name.to_string(),
        created_at: now,
    };
    let app = App::new(new_id("app"), merchant.id.clone(), new_secret()?, now);
    store.insert_merchant(&merchant, &app).await?;
    Ok((merchant, app))
}

/// A new API secret: 256 random bits.
fn new_secret() -> Result<String, ServerError> {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| ServerError::Crypto("no entropy".into()))?;
    Ok(format!("sk_{}", hex::encode(secret)))
}

/// Adds another app to a merchant (a mini-program and an H5 site, say, each
/// with its own credentials). The secret is returned once, here.
pub async fn create_app(
    store: &dyn Store,
    clock: &dyn Clock,
    merchant_id: &str,
) -> Result<App, ServerError> {
    if store.merchant(merchant_id).await?.is_none() {
        return Err(ServerError::NotFound(format!("merchant {merchant_id}")));
    }
    let app = App::new(
        new_id("app"),
        merchant_id.to_string(),
        new_secret()?,
        clock.now(),
    );
    store.insert_app(&app).await?;
    tracing::info!(merchant_id, app_id = %app.app_id, "app created");
    Ok(app)
}

/// Longest grace period a rotated secret may keep verifying.
pub const MAX_GRACE_SECS: i64 = 30 * 24 * 3600;

/// Gives an app a new secret. The old one keeps verifying requests for
/// `grace_secs` (0: it stops at once), so clients can switch without
/// failed requests. A previous secret still in its grace period is dropped.
/// The new secret is returned once, here.
/// Makes an app sign its requests with a key pair (the public half given
/// as SPKI PEM), or with its secret again when `key` is `None`.
pub async fn set_app_request_key(
    store: &dyn Store,
    app_id: &str,
    key: Option<RequestKey>,
) -> Result<(), ServerError> {
    if let Some(k) = &key {
        crate::request_keys::parse(k.alg, &k.public_key_pem).map_err(ServerError::Config)?;
    }
    store.update_app_request_key(app_id, key.as_ref()).await?;
    tracing::info!(
        app_id,
        alg = key.as_ref().map(|k| k.alg.as_str()),
        "app request key set"
    );
    Ok(())
}

/// Binds an app to a client certificate (PEM): its requests are then served
/// only over mutual TLS with exactly that certificate. `None` unbinds it.
pub async fn bind_app_client_cert(
    store: &dyn Store,
    app_id: &str,
    cert_pem: Option<&str>,
) -> Result<Option<String>, ServerError> {
    let fingerprint = cert_pem
        .map(crate::tls::pem_fingerprint)
        .transpose()
        .map_err(ServerError::Config)?;
    store
        .update_app_client_cert(app_id, fingerprint.as_deref())
        .await?;
    tracing::info!(
        app_id,
        bound = fingerprint.is_some(),
        "app client certificate set"
    );
    Ok(fingerprint)
}

pub async fn rotate_app_secret(
    store: &dyn Store,
    clock: &dyn Clock,
    app_id: &str,
    grace_secs: i64,
) -> Result<App, ServerError> {
    if !(0..=MAX_GRACE_SECS).contains(&grace_secs) {
        return Err(ServerError::Config(format!(
            "grace period must be 0-{MAX_GRACE_SECS} seconds"
        )));
    }
    let app = store
        .app(app_id)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("app {app_id}")))?;
    let now = clock.now();
    let rotated = App {
        secret: new_secret()?,
        previous_secret: (grace_secs > 0).then(|| app.secret.clone()),
        previous_secret_expires_at: (grace_secs > 0)
            .then(|| now + chrono::Duration::seconds(grace_secs)),
        ..app
    };
    store.update_app_secrets(&rotated).await?;
    tracing::info!(app_id, grace_secs, "app secret rotated");
    Ok(rotated)
}
