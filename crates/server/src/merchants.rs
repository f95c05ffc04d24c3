//! Merchants and their API credentials.

use paymux_core::{new_id, Clock};
use paymux_store::{App, Merchant, Store};

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
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| ServerError::Crypto("no entropy".into()))?;
    let app = App::new(
        new_id("app"),
        merchant.id.clone(),
        format!("sk_{}", hex::encode(secret)),
        now,
    );
    store.insert_merchant(&merchant, &app).await?;
    Ok((merchant, app))
}
