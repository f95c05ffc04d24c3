//! Sandbox mode: the channel simulators run inside paymux, and every merchant
//! gets channel accounts at them, made up on the spot with fresh keys.

use std::sync::Arc;

use paymux_channels::alipay::AlipayConfig;
use paymux_channels::keys::PrivateKey;
use paymux_channels::unionpay::UnionpayConfig;
use paymux_channels::wechat::WechatConfig;
use paymux_core::{new_id, ChannelKind};
use paymux_sim::alipay::{AlipaySim, SimApp};
use paymux_sim::unionpay::UnionpaySim;
use paymux_sim::wechat::{SimMerchant, WechatSim};
use paymux_store::ChannelAccount;
use tokio::sync::Mutex;

use crate::{AppState, ServerError};

pub struct Sandbox {
    pub wechat: Arc<WechatSim>,
    pub alipay: Arc<AlipaySim>,
    pub unionpay: Arc<UnionpaySim>,
    /// Creating a merchant's accounts happens once even under concurrent first payments.
    creating: Mutex<()>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(paymux_core::SystemClock))
    }

    /// Simulators on paymux's own clock: in the same process they keep the
    /// same time, as a real channel and a synchronised server do.
    pub fn with_clock(clock: Arc<dyn paymux_core::Clock>) -> Self {
        Sandbox {
            wechat: WechatSim::with_clock(clock.clone()),
            alipay: AlipaySim::with_clock(clock.clone()),
            unionpay: UnionpaySim::with_clock(clock),
            creating: Mutex::new(()),
        }
    }
}

pub fn warn_loudly(public_url: &str) {
    let line = "=".repeat(72);
    tracing::warn!("{line}");
    tracing::warn!("SANDBOX MODE: no real money moves.");
    tracing::warn!("Channel simulators are mounted at {public_url}/sim/...");
    tracing::warn!("Every merchant gets simulated channel accounts with generated keys.");
    tracing::warn!("{line}");
}

/// The merchant's sandbox account for a channel, created at its simulator
/// if it has none (once, even under concurrent first payments).
pub async fn ensure_account(
    state: &AppState,
    sandbox: &Sandbox,
    merchant_id: &str,
    channel: ChannelKind,
) -> Result<ChannelAccount, ServerError> {
    let _once = sandbox.creating.lock().await;
    if let Some(account) = state
        .store
        .channel_account_for(merchant_id, channel)
        .await?
    {
        return Ok(account);
    }
    let (config, name) = match channel {
        ChannelKind::Wechat => wechat_config(state, sandbox)?,
        ChannelKind::Alipay => alipay_config(state, sandbox)?,
        ChannelKind::Unionpay => unionpay_config(state, sandbox)?,
    };
    let account = ChannelAccount {
        id: new_id("acct"),
        merchant_id: merchant_id.to_string(),
        channel,
        config,
        sandbox: true,
        enabled: true,
        created_at: state.clock.now(),
    };
    state.store.insert_channel_account(&account).await?;
    tracing::info!(merchant_id, account_id = %account.id, %channel, name, "sandbox account created");
    Ok(account)
}

fn to_config(config: &impl serde::Serialize) -> Result<serde_json::Value, ServerError> {
    serde_json::to_value(config).map_err(|e| ServerError::Config(e.to_string()))
}

/// A WeChat merchant registered at the simulator: its config and mchid.
fn wechat_config(
    state: &AppState,
    sandbox: &Sandbox,
) -> Result<(serde_json::Value, String), ServerError> {
    let private_key_pem = PrivateKey::generate_pkcs8_pem()?;
    let config = WechatConfig {
        base_url: format!("{}/sim/wechat", state.public_url),
        appid: format!("wx{}", random_hex(8)),
        mchid: format!("19{}", random_digits(8)),
        serial_no: random_hex(20).to_uppercase(),
        private_key_pem,
        apiv3_key: random_hex(16),
        platform_public_key_id: None,
        platform_public_key_pem: None,
        oauth_app_secret: Some(random_hex(16)),
    };
    register(sandbox, &config)?;
    let mut json = to_config(&config)?;
    // The appid is an official account's too: the cashier learns payers'
    // openids through the simulator's web authorisation, found here.
    let web_auth = serde_json::json!({
        "oauth_authorize_url": format!("{}/sim/wechat/connect/oauth2/authorize", state.public_url),
        "oauth_api_url": format!("{}/sim/wechat", state.public_url),
    });
    if let (Some(map), Some(extra)) = (json.as_object_mut(), web_auth.as_object()) {
        map.extend(extra.clone());
    }
    register_web_auth(sandbox, &json);
    Ok((json, config.mchid))
}

/// Registers an account's official account (appid and AppSecret) at the
/// simulator's web authorisation, if it has one.
fn register_web_auth(sandbox: &Sandbox, config: &serde_json::Value) {
    if let Some(c) = paymux_channels::wechat::web_auth::WebAuthConfig::from_account(config) {
        let secret = c.oauth_app_secret.as_deref().unwrap_or_default();
        sandbox.wechat.web_auth.register(&c.appid, secret);
    }
}

/// The simulator keeps its merchants in memory: after a restart, tell it
/// about every sandbox account again.
pub async fn register_existing_accounts(state: &AppState) -> Result<(), ServerError> {
    let Some(sandbox) = &state.sandbox else {
        return Ok(());
    };
    for merchant in state.store.list_merchants().await? {
        for channel in ChannelKind::ALL {
            let Some(account) = state
                .store
                .channel_account_for(&merchant.id, channel)
                .await?
            else {
                continue;
            };
            if !account.sandbox {
                continue;
            }
            let bad =
                |e: serde_json::Error| ServerError::Config(format!("account {}: {e}", account.id));
            match channel {
                ChannelKind::Wechat => {
                    let config: WechatConfig =
                        serde_json::from_value(account.config.clone()).map_err(bad)?;
                    register(sandbox, &config)?;
                    register_web_auth(sandbox, &account.config);
                }
                ChannelKind::Alipay => {
                    let config: AlipayConfig =
                        serde_json::from_value(account.config.clone()).map_err(bad)?;
                    register_alipay(sandbox, &config)?;
                }
                ChannelKind::Unionpay => {
                    let config: UnionpayConfig =
                        serde_json::from_value(account.config.clone()).map_err(bad)?;
                    register_unionpay(sandbox, &config, config.sign_cert_pem.clone())?;
                }
            }
        }
    }
    Ok(())
}

/// An Alipay app registered at the simulator: its config and app id.
fn alipay_config(
    state: &AppState,
    sandbox: &Sandbox,
) -> Result<(serde_json::Value, String), ServerError> {
    let mut config = AlipayConfig {
        gateway_url: format!("{}/sim/alipay/gateway.do", state.public_url),
        app_id: format!("2021{}", random_digits(12)),
        private_key_pem: PrivateKey::generate_pkcs8_pem()?,
        alipay_public_key_pem: Some(sandbox.alipay.platform().alipay_public_key),
        app_cert_pem: None,
        alipay_cert_pem: None,
        alipay_root_cert_pem: None,
        seller_id: None,
        encrypt_key: None,
        barcode_timeout_secs: None,
        // The simulator answers at once; poll it briskly.
        barcode_poll_ms: Some(500),
    };
    config.seller_id = Some(register_alipay(sandbox, &config)?);
    Ok((to_config(&config)?, config.app_id))
}

/// Registers the app at the simulator; returns its seller id.
fn register_alipay(sandbox: &Sandbox, config: &AlipayConfig) -> Result<String, ServerError> {
    let public_key = PrivateKey::from_pem(&config.private_key_pem)?.public_key()?;
    sandbox
        .alipay
        .register_app(SimApp {
            app_id: config.app_id.clone(),
            app_public_key: public_key.to_pem(),
            seller_id: config.seller_id.clone(),
            cert_mode: false,
            encrypt_key: None,
        })
        .map(|registered| registered.seller_id)
        .map_err(|e| ServerError::Config(format!("alipay simulator: {e}")))
}

/// A UnionPay merchant registered at the simulator, its config and merId:
/// a fresh signing key whose certificate the simulator issues (as UnionPay
/// issues a merchant's PFX), trusting the simulator's root and intermediate.
fn unionpay_config(
    state: &AppState,
    sandbox: &Sandbox,
) -> Result<(serde_json::Value, String), ServerError> {
    let platform = sandbox.unionpay.platform();
    let mut config = UnionpayConfig {
        base_url: format!("{}/sim/unionpay", state.public_url),
        mer_id: format!("777{}", random_digits(12)),
        sign_pfx: None,
        sign_pfx_password: None,
        private_key_pem: Some(PrivateKey::generate_pkcs8_pem()?),
        sign_cert_pem: None,
        root_cert_pem: platform.root_cert,
        middle_cert_pem: platform.middle_cert,
        front_url: None,
        validate_cn_name: true,
    };
    config.sign_cert_pem = Some(register_unionpay(sandbox, &config, None)?);
    Ok((to_config(&config)?, config.mer_id))
}

/// Registers the merchant at the simulator with its signing certificate, or,
/// without one, has the simulator issue it for the key; returns the certificate.
fn register_unionpay(
    sandbox: &Sandbox,
    config: &UnionpayConfig,
    sign_cert: Option<String>,
) -> Result<String, ServerError> {
    let public_key = match (&sign_cert, &config.private_key_pem) {
        (None, Some(pem)) => Some(PrivateKey::from_pem(pem)?.public_key()?.to_pem()),
        _ => None,
    };
    sandbox
        .unionpay
        .register_merchant(paymux_sim::unionpay::SimMerchant {
            mer_id: config.mer_id.clone(),
            sign_cert,
            public_key,
        })
        .map(|r| r.sign_cert)
        .map_err(|e| ServerError::Config(format!("unionpay simulator: {e}")))
}

fn register(sandbox: &Sandbox, config: &WechatConfig) -> Result<(), ServerError> {
    let public_key = PrivateKey::from_pem(&config.private_key_pem)?.public_key()?;
    sandbox.wechat.register_merchant(SimMerchant {
        mchid: config.mchid.clone(),
        serial_no: config.serial_no.clone(),
        public_key_pem: public_key.to_pem(),
        apiv3_key: config.apiv3_key.clone(),
    });
    Ok(())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("system random generator");
    b
}

fn random_hex(bytes: usize) -> String {
    let b: [u8; 32] = random_bytes();
    hex::encode(&b[..bytes.min(32)])
}

fn random_digits(n: usize) -> String {
    let b: [u8; 32] = random_bytes();
    b.iter()
        .take(n)
        .map(|x| char::from(b'0' + x % 10))
        .collect()
}
