//! `paymux channel`: a merchant's live channel accounts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use paymux_channels::alipay::{AlipayConfig, PRODUCTION_GATEWAY};
use paymux_channels::unionpay::UnionpayConfig;
use paymux_channels::wechat::{WechatConfig, PRODUCTION_BASE_URL};
use paymux_core::SystemClock;
use paymux_server::accounts;
use paymux_store::{ChannelAccount, Store};

use crate::DbArgs;

#[derive(Subcommand)]
pub enum ChannelCommand {
    /// Add a live channel account for a merchant (its newest enabled account is used).
    Add {
        #[command(subcommand)]
        channel: AddChannel,
    },
    /// List channel accounts (secrets masked).
    List {
        /// Only this merchant's accounts.
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Show one account (secrets masked).
    Show {
        account: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Stop using an account for new payments.
    Disable {
        account: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Use an account again.
    Enable {
        account: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Make a harmless authenticated call with the account's keys and explain any failure.
    Test {
        account: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// One subcommand per channel, each with the fields that channel needs.
#[derive(Subcommand)]
pub enum AddChannel {
    /// WeChat Pay API v3 (direct merchant).
    Wechat(Box<WechatAddArgs>),
    /// Alipay Open Platform (one app), public-key or certificate mode.
    Alipay(Box<AlipayAddArgs>),
    /// China UnionPay online payments (ACP 5.1.0), one merchant number.
    Unionpay(Box<UnionpayAddArgs>),
}

#[derive(Args)]
pub struct WechatAddArgs {
    #[arg(long)]
    merchant: String,
    /// The AppID payments are made for (mini-program, official account or app).
    #[arg(long)]
    appid: String,
    #[arg(long)]
    mchid: String,
    /// Serial number of the merchant API certificate.
    #[arg(long)]
    serial_no: String,
    /// The merchant API private key (apiclient_key.pem).
    #[arg(long)]
    private_key_file: PathBuf,
    /// The APIv3 key (32 characters). Prefer --apiv3-key-file or the
    /// environment: a command line is visible to other users of the machine.
    #[arg(long, env = "PAYMUX_WECHAT_APIV3_KEY", hide_env_values = true)]
    apiv3_key: Option<String>,
    #[arg(long, conflicts_with = "apiv3_key")]
    apiv3_key_file: Option<PathBuf>,
    /// The official account's AppSecret for the appid: lets the cashier
    /// learn payers' openids inside WeChat (web authorisation).
    #[arg(long, env = "PAYMUX_WECHAT_OAUTH_APP_SECRET", hide_env_values = true)]
    oauth_app_secret: Option<String>,
    /// WeChat Pay public-key mode: the public key (pub_key.pem)…
    #[arg(long, requires = "platform_public_key_id")]
    platform_public_key_file: Option<PathBuf>,
    /// …and its id (PUB_KEY_ID_…). Without these, platform certificates are downloaded.
    #[arg(long, requires = "platform_public_key_file")]
    platform_public_key_id: Option<String>,
    /// The API endpoint: WeChat Pay itself by default, or a simulator.
    #[arg(long, default_value = PRODUCTION_BASE_URL)]
    base_url: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
pub struct AlipayAddArgs {
    #[arg(long)]
    merchant: String,
    /// The Alipay app's APPID.
    #[arg(long)]
    app_id: String,
    /// The app private key (PKCS#8 or PKCS#1 PEM).
    #[arg(long)]
    private_key_file: PathBuf,
    /// Public-key mode: the Alipay public key (PEM).
    #[arg(long, required_unless_present = "app_cert_file")]
    alipay_public_key_file: Option<PathBuf>,
    /// Certificate mode: the app public-key certificate (appCertPublicKey_….crt)…
    #[arg(
        long,
        conflicts_with = "alipay_public_key_file",
        requires_all = ["alipay_cert_file", "alipay_root_cert_file"]
    )]
    app_cert_file: Option<PathBuf>,
    /// …the Alipay public-key certificate (alipayCertPublicKey_RSA2.crt)…
    #[arg(long, requires = "app_cert_file")]
    alipay_cert_file: Option<PathBuf>,
    /// …and the Alipay root certificate (alipayRootCert.crt).
    #[arg(long, requires = "app_cert_file")]
    alipay_root_cert_file: Option<PathBuf>,
    /// The merchant's Alipay user id (2088…); notifies for any other seller are refused.
    #[arg(long)]
    seller_id: Option<String>,
    /// Optional content encryption key (base64 AES key). Prefer
    /// --encrypt-key-file or the environment: a command line is visible to
    /// other users of the machine.
    #[arg(long, env = "PAYMUX_ALIPAY_ENCRYPT_KEY", hide_env_values = true)]
    encrypt_key: Option<String>,
    #[arg(long, conflicts_with = "encrypt_key")]
    encrypt_key_file: Option<PathBuf>,
    /// The gateway: Alipay itself by default, or a simulator
    /// (`http://127.0.0.1:9000/sim/alipay/gateway.do`).
    #[arg(long, default_value = PRODUCTION_GATEWAY)]
    base_url: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
pub struct UnionpayAddArgs {
    #[arg(long)]
    merchant: String,
    /// The UnionPay merchant number (merId).
    #[arg(long)]
    mer_id: String,
    /// The signing key as UnionPay issues it: the PKCS#12 file (.pfx)…
    #[arg(long, required_unless_present = "private_key_file")]
    pfx_file: Option<PathBuf>,
    /// …and its password. Prefer --pfx-password-file or the environment: a
    /// command line is visible to other users of the machine.
    #[arg(long, env = "PAYMUX_UNIONPAY_PFX_PASSWORD", hide_env_values = true)]
    pfx_password: Option<String>,
    #[arg(long, conflicts_with = "pfx_password")]
    pfx_password_file: Option<PathBuf>,
    /// Or the signing key as PEM…
    #[arg(long, conflicts_with = "pfx_file", requires = "sign_cert_file")]
    private_key_file: Option<PathBuf>,
    /// …with its certificate (PEM or DER).
    #[arg(long, requires = "private_key_file")]
    sign_cert_file: Option<PathBuf>,
    /// UnionPay's root certificate (acp_prod_root.cer), PEM or DER.
    #[arg(long)]
    root_cert_file: PathBuf,
    /// UnionPay's intermediate certificate (acp_prod_middle.cer), PEM or DER.
    #[arg(long)]
    middle_cert_file: PathBuf,
    /// Where UnionPay's payment page sends the payer back after a PC / WAP payment.
    #[arg(long)]
    front_url: Option<String>,
    /// Accept certificates not in UnionPay's name: only for UnionPay's test
    /// environment, whose certificates are issued that way.
    #[arg(long)]
    test_environment_certs: bool,
    /// The gateway: UnionPay itself by default, UnionPay's test environment
    /// (`https://gateway.test.95516.com`), or a simulator
    /// (`http://127.0.0.1:9000/sim/unionpay`).
    #[arg(long, default_value = paymux_channels::unionpay::PRODUCTION_BASE_URL)]
    base_url: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// A certificate file as PEM: UnionPay's `.cer` files come as PEM or DER.
fn read_cert(path: &Path, what: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => Ok(text.to_string()),
        _ => Ok(paymux_channels::keys::pem_encode("CERTIFICATE", &bytes)),
    }
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

pub async fn run(command: ChannelCommand) -> Result<(), String> {
    match command {
        ChannelCommand::Add {
            channel: AddChannel::Wechat(a),
        } => add_wechat(*a).await,
        ChannelCommand::Add {
            channel: AddChannel::Alipay(a),
        } => add_alipay(*a).await,
        ChannelCommand::Add {
            channel: AddChannel::Unionpay(a),
        } => add_unionpay(*a).await,
        ChannelCommand::List { merchant, json, db } => {
            // Listing needs no master key: secrets are masked, never opened.
            let store = db.open().await?;
            let accounts = store
                .raw()
                .list_channel_accounts(merchant.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let views: Vec<_> = accounts.iter().map(accounts::view_stored).collect();
            if json {
                println!("{}", to_json(&views)?);
            } else {
                for v in views {
                    let state = if v.enabled { "enabled" } else { "disabled" };
                    // The channel's own id for the account: WeChat's mchid,
                    // Alipay's app_id, UnionPay's mer_id.
                    let mchid = ["mchid", "app_id", "mer_id"]
                        .iter()
                        .find_map(|f| v.config.get(*f).and_then(|m| m.as_str()))
                        .unwrap_or("");
                    println!(
                        "{}  {}  {}  {}  {}  {}",
                        v.id, v.merchant_id, v.channel, mchid, state, v.created_at
                    );
                }
            }
            Ok(())
        }
        ChannelCommand::Show { account, db } => {
            let store = db.open().await?;
            let a = store
                .raw()
                .channel_account(&account)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no channel account {account}"))?;
            println!("{}", to_json(&accounts::view_stored(&a))?);
            Ok(())
        }
        ChannelCommand::Disable { account, db } => set_enabled(&account, &db, false).await,
        ChannelCommand::Enable { account, db } => set_enabled(&account, &db, true).await,
        ChannelCommand::Test { account, json, db } => {
            let store = db.open().await?;
            let a = store
                .channel_account(&account)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no channel account {account}"))?;
            let outcome = accounts::test(&a, Arc::new(SystemClock)).await;
            if json {
                println!("{}", to_json(&outcome)?);
            }
            match outcome.diagnosis {
                None => {
                    if !json {
                        println!(
                            "ok: {account} ({}) answered an authenticated call",
                            a.channel
                        );
                    }
                    Ok(())
                }
                Some(d) => Err(format!(
                    "channel test of {account} failed: {}: {}",
                    d.code, d.message
                )),
            }
        }
    }
}

async fn set_enabled(account: &str, db: &DbArgs, enabled: bool) -> Result<(), String> {
    let store = db.open().await?;
    accounts::set_enabled(&*store, account, enabled)
        .await
        .map_err(|e| e.to_string())?;
    println!("{account} {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

async fn add_wechat(a: WechatAddArgs) -> Result<(), String> {
    let apiv3_key =
        match (&a.apiv3_key, &a.apiv3_key_file) {
            (Some(k), None) => k.clone(),
            (None, Some(path)) => read(path, "APIv3 key file")?.trim().to_string(),
            _ => return Err(
                "give the APIv3 key with --apiv3-key-file, PAYMUX_WECHAT_APIV3_KEY or --apiv3-key"
                    .into(),
            ),
        };
    let platform_public_key_pem = a
        .platform_public_key_file
        .as_deref()
        .map(|p| read(p, "platform public key file"))
        .transpose()?;
    let config = WechatConfig {
        base_url: a.base_url.clone(),
        appid: a.appid.clone(),
        mchid: a.mchid.clone(),
        serial_no: a.serial_no.trim().to_uppercase(),
        private_key_pem: read(&a.private_key_file, "private key file")?,
        apiv3_key,
        platform_public_key_id: a.platform_public_key_id.clone(),
        platform_public_key_pem,
        oauth_app_secret: a.oauth_app_secret.clone(),
    };
    let store = open_for_secrets(&a.db).await?;
    let account = accounts::add_wechat(&*store, &SystemClock, &a.merchant, config)
        .await
        .map_err(|e| e.to_string())?;
    print_added(&account, a.json)
}

async fn add_alipay(a: AlipayAddArgs) -> Result<(), String> {
    let encrypt_key = match (&a.encrypt_key, &a.encrypt_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(path)) => Some(read(path, "encrypt key file")?.trim().to_string()),
        (None, None) => None,
    };
    let file = |p: &Option<PathBuf>, what: &str| p.as_deref().map(|p| read(p, what)).transpose();
    let config = AlipayConfig {
        gateway_url: a.base_url.clone(),
        app_id: a.app_id.trim().to_string(),
        private_key_pem: read(&a.private_key_file, "private key file")?,
        alipay_public_key_pem: file(&a.alipay_public_key_file, "Alipay public key file")?,
        app_cert_pem: file(&a.app_cert_file, "app certificate file")?,
        alipay_cert_pem: file(&a.alipay_cert_file, "Alipay certificate file")?,
        alipay_root_cert_pem: file(&a.alipay_root_cert_file, "Alipay root certificate file")?,
        seller_id: a.seller_id.clone(),
        encrypt_key,
        barcode_timeout_secs: None,
        barcode_poll_ms: None,
    };
    let store = open_for_secrets(&a.db).await?;
    let account = accounts::add_alipay(&*store, &SystemClock, &a.merchant, config)
        .await
        .map_err(|e| e.to_string())?;
    print_added(&account, a.json)
}

async fn add_unionpay(a: UnionpayAddArgs) -> Result<(), String> {
    use base64::Engine;
    let (sign_pfx, sign_pfx_password) = match &a.pfx_file {
        Some(path) => {
            let der =
                std::fs::read(path).map_err(|e| format!("PKCS#12 file {}: {e}", path.display()))?;
            let password = match (&a.pfx_password, &a.pfx_password_file) {
                (Some(p), None) => p.clone(),
                (None, Some(path)) => read(path, "PKCS#12 password file")?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                _ => return Err(
                    "give the PKCS#12 password with --pfx-password-file, PAYMUX_UNIONPAY_PFX_PASSWORD or --pfx-password"
                        .into(),
                ),
            };
            (
                Some(base64::engine::general_purpose::STANDARD.encode(der)),
                Some(password),
            )
        }
        None => (None, None),
    };
    let config = UnionpayConfig {
        base_url: a.base_url.clone(),
        mer_id: a.mer_id.trim().to_string(),
        sign_pfx,
        sign_pfx_password,
        private_key_pem: a
            .private_key_file
            .as_deref()
            .map(|p| read(p, "private key file"))
            .transpose()?,
        sign_cert_pem: a
            .sign_cert_file
            .as_deref()
            .map(|p| read_cert(p, "signing certificate file"))
            .transpose()?,
        root_cert_pem: read_cert(&a.root_cert_file, "root certificate file")?,
        middle_cert_pem: read_cert(&a.middle_cert_file, "intermediate certificate file")?,
        front_url: a.front_url.clone(),
        validate_cn_name: !a.test_environment_certs,
    };
    let store = open_for_secrets(&a.db).await?;
    let account = accounts::add_unionpay(&*store, &SystemClock, &a.merchant, config)
        .await
        .map_err(|e| e.to_string())?;
    print_added(&account, a.json)
}

/// Opens the store for writing live keys, which are never written in clear.
async fn open_for_secrets(db: &DbArgs) -> Result<Arc<paymux_store::SealedStore>, String> {
    if db.master_key()?.is_none() {
        return Err(format!(
            "no master key: channel keys are stored encrypted, so set {} or --master-key-file \
             (`paymux keys generate` makes one)",
            paymux_server::secrets::MASTER_KEY_ENV
        ));
    }
    db.open().await
}

fn print_added(account: &ChannelAccount, json: bool) -> Result<(), String> {
    if json {
        println!("{}", to_json(&accounts::view(account))?);
    } else {
        println!("{}", account.id);
        println!("Check it with: paymux channel test {}", account.id);
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}
