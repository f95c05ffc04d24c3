//! Channel accounts as operators manage them: add, list, show (secrets
//! masked), enable/disable and test. The CLI and the admin API both use
//! these, so they behave the same.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use paymux_channels::alipay::AlipayConfig;
use paymux_channels::unionpay::UnionpayConfig;
use paymux_channels::wechat::WechatConfig;
use paymux_channels::{Channel, ChannelError, Diagnosis};
use paymux_core::{new_id, ChannelKind, Clock, SystemClock};
use paymux_store::{secrets::is_sealed, ChannelAccount, Store};
use serde::Serialize;

use crate::ServerError;

/// What a secret field shows instead of its value.
pub const MASK: &str = "********";

/// An account as shown to operators: every config field, secret ones masked.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub id: String,
    pub merchant_id: String,
    pub channel: ChannelKind,
    pub enabled: bool,
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
    pub config: serde_json::Value,
    /// How the secret fields are stored (`encrypted` or `in clear`), when
    /// the view was made from the row as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_at_rest: Option<&'static str>,
}

/// Masks an account: secret fields never leave this function.
pub fn view(account: &ChannelAccount) -> AccountView {
    let mut config = account.config.clone();
    if let Some(map) = config.as_object_mut() {
        for field in paymux_channels::secret_fields(account.channel) {
            if let Some(value) = map.get_mut(*field) {
                if value.is_string() {
                    *value = serde_json::Value::String(MASK.to_string());
                }
            }
        }
    }
    AccountView {
        id: account.id.clone(),
        merchant_id: account.merchant_id.clone(),
        channel: account.channel,
        enabled: account.enabled,
        sandbox: account.sandbox,
        created_at: account.created_at,
        config,
        secrets_at_rest: None,
    }
}

/// Like [`view`], for an account read as stored (not opened): also says
/// whether its secrets are encrypted at rest.
pub fn view_stored(stored: &ChannelAccount) -> AccountView {
    let values: Vec<&str> = paymux_channels::secret_fields(stored.channel)
        .iter()
        .filter_map(|f| stored.config.get(*f).and_then(|v| v.as_str()))
        .collect();
    let at_rest = if values.iter().all(|v| is_sealed(v)) {
        "encrypted"
    } else {
        "in clear (set a master key and run `paymux keys rotate`)"
    };
    AccountView {
        secrets_at_rest: Some(at_rest),
        ..view(stored)
    }
}

/// Adds a live WeChat Pay account for a merchant after checking that the
/// configuration is usable (keys parse, APIv3 key length, base URL). No
/// network call happens here; `test` does that.
pub async fn add_wechat(
    store: &dyn Store,
    clock: &dyn Clock,
    merchant_id: &str,
    config: WechatConfig,
) -> Result<ChannelAccount, ServerError> {
    add(store, clock, merchant_id, ChannelKind::Wechat, &config).await
}

/// Adds a live Alipay account (one app) for a merchant after checking that
/// the configuration is usable (keys and certificates parse, one key mode is
/// complete, gateway URL). No network call happens here; `test` does that.
pub async fn add_alipay(
    store: &dyn Store,
    clock: &dyn Clock,
    merchant_id: &str,
    config: AlipayConfig,
) -> Result<ChannelAccount, ServerError> {
    add(store, clock, merchant_id, ChannelKind::Alipay, &config).await
}

/// Adds a live UnionPay merchant after checking that the configuration is
/// usable (the signing key loads from its PFX or PEM and matches its
/// certificate, the root and intermediate chain). No network call happens
/// here; `test` does that.
pub async fn add_unionpay(
    store: &dyn Store,
    clock: &dyn Clock,
    merchant_id: &str,
    config: UnionpayConfig,
) -> Result<ChannelAccount, ServerError> {
    add(store, clock, merchant_id, ChannelKind::Unionpay, &config).await
}

/// Adds a live account of any channel: the account is built exactly as
/// serving would build it, so a configuration that would not work is refused.
async fn add<C: Serialize>(
    store: &dyn Store,
    clock: &dyn Clock,
    merchant_id: &str,
    channel: ChannelKind,
    config: &C,
) -> Result<ChannelAccount, ServerError> {
    if store.merchant(merchant_id).await?.is_none() {
        return Err(ServerError::NotFound(format!("merchant {merchant_id}")));
    }
    let account = ChannelAccount {
        id: new_id("acct"),
        merchant_id: merchant_id.to_string(),
        channel,
        config: serde_json::to_value(config)
            .map_err(|e| ServerError::Config(format!("{channel} config: {e}")))?,
        sandbox: false,
        enabled: true,
        created_at: clock.now(),
    };
    build(&account, Arc::new(SystemClock))?;
    store.insert_channel_account(&account).await?;
    tracing::info!(merchant_id, account_id = %account.id, %channel, "channel account added");
    Ok(account)
}

/// Enables or disables an account; a disabled account is never used for new payments.
pub async fn set_enabled(store: &dyn Store, id: &str, enabled: bool) -> Result<(), ServerError> {
    store.set_channel_account_enabled(id, enabled).await?;
    tracing::info!(account_id = id, enabled, "channel account updated");
    Ok(())
}

/// The outcome of [`test`].
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub account_id: String,
    pub ok: bool,
    /// Set when `ok` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
}

/// Makes a harmless authenticated call with the account's keys and explains
/// a failure. Uses a fresh client so nothing cached hides a problem.
pub async fn test(account: &ChannelAccount, clock: Arc<dyn Clock>) -> TestOutcome {
    let outcome = |diagnosis: Option<Diagnosis>| TestOutcome {
        account_id: account.id.clone(),
        ok: diagnosis.is_none(),
        diagnosis,
    };
    let channel: Arc<dyn Channel> = match build(account, clock) {
        Ok(c) => c,
        Err(e) => return outcome(Some(Diagnosis::generic(&e))),
    };
    match channel.probe().await {
        Ok(()) => outcome(None),
        Err(e) => {
            let d = channel.diagnose(&e);
            tracing::warn!(account_id = %account.id, code = d.code, "channel test failed");
            outcome(Some(d))
        }
    }
}

fn build(
    account: &ChannelAccount,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Channel>, ChannelError> {
    let http = paymux_channels::wechat::http_client()?;
    crate::channels::build(account, http, clock, None)
}
