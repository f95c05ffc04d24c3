//! `paymux`: the one binary. `serve` runs the gateway, `merchant` manages
//! merchants, `demo` shows a payment end to end, `bench` measures.

mod app;
mod audit;
mod bench;
mod channel;
mod demo;
mod keys;
mod ledger;
mod notify;
mod reconcile;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "paymux",
    version,
    about = "A self-hosted payment gateway for WeChat Pay, Alipay and UnionPay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Manage merchants.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// Merchant API apps: create more, rotate a secret.
    App {
        #[command(subcommand)]
        command: app::AppCommand,
    },
    /// Check the configuration `serve` would run with.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Channel accounts: add, list, show, disable, test.
    Channel {
        #[command(subcommand)]
        command: channel::ChannelCommand,
    },
    /// Master keys: generate one, or re-encrypt every secret under a new one.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Merchant notifications not acknowledged: list them, send one again.
    Notify {
        #[command(subcommand)]
        command: notify::NotifyCommand,
    },
    /// The audit trail: verify its hash chain, show a subject's trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The books: check the ledger, show a merchant's balances.
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// Reconcile a channel's bill of one day, through a running paymux.
    Reconcile(reconcile::ReconcileArgs),
    /// Start a sandbox and walk one mini-program payment end to end.
    Demo(demo::DemoArgs),
    /// Measure payment creation and callback throughput against the in-process simulator.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Create a merchant and its API credentials (the secret is shown once).
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        db: DbArgs,
        /// Print {"merchant_id", "app_id", "app_secret"} as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (file, PAYMUX_… environment, flags) and print
    /// it with secrets masked. Takes the same options as `serve`.
    Check(Box<serve::ServeArgs>),
}

/// Where paymux keeps its data: an embedded SQLite file by default, or PostgreSQL.
#[derive(Args, Clone, Debug)]
pub struct DbArgs {
    /// Directory of the embedded SQLite database.
    #[arg(long, default_value = "./paymux-data", conflicts_with = "database_url")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (postgres://…); overrides --data-dir.
    #[arg(long, env = "PAYMUX_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A file holding the master key (64 hex digits or base64 of 32 bytes)
    /// that seals secrets at rest. Without it, `PAYMUX_MASTER_KEY` holds the key itself.
    #[arg(long, env = "PAYMUX_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// PostgreSQL connections to keep at most (`database_pool_size` in the
    /// configuration); one-off commands use the default.
    #[arg(skip)]
    pub pool_size: Option<u32>,
}

impl DbArgs {
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self.data_dir.join("paymux.db").display().to_string(),
        }
    }

    /// Opens the database with secrets sealed under the master key, if one is given.
    pub async fn open(&self) -> Result<Arc<paymux_store::SealedStore>, String> {
        let key = self.master_key()?;
        self.open_with(paymux_server::secrets::keyring(key)).await
    }

    /// Opens the database to write a secret; says so on stderr when it will
    /// be stored in clear (no master key: fine for a sandbox only).
    pub async fn open_for_secrets(&self) -> Result<Arc<paymux_store::SealedStore>, String> {
        let store = self.open().await?;
        if !store.keyring().seals() {
            eprintln!(
                "paymux: warning: no master key, so the secret is stored IN CLEAR \
                 (set PAYMUX_MASTER_KEY or --master-key-file outside a sandbox)"
            );
        }
        Ok(store)
    }

    pub fn master_key(&self) -> Result<Option<paymux_store::MasterKey>, String> {
        paymux_server::secrets::load_master_key(self.master_key_file.as_deref())
            .map_err(|e| e.to_string())
    }

    pub async fn open_with(
        &self,
        keys: paymux_store::Keyring,
    ) -> Result<Arc<paymux_store::SealedStore>, String> {
        let url = self.url();
        let mut options = paymux_store::OpenOptions::default();
        if let Some(size) = self.pool_size {
            options.pg_pool_size = size;
        }
        let raw = paymux_store::open_with(&url, &options)
            .await
            .map_err(|e| format!("cannot open the database at {}: {e}", redact(&url)))?;
        Ok(paymux_server::secrets::sealed(raw, keys))
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Starts a sandbox paymux on a random loopback port over the database at `url`.
pub async fn start_sandbox(
    url: &str,
) -> Result<(Arc<dyn paymux_store::Store>, paymux_server::Running), String> {
    start_sandbox_with(url, |_| {}).await
}

/// [`start_sandbox`] with more configuration.
pub async fn start_sandbox_with(
    url: &str,
    tweak: impl FnOnce(&mut paymux_server::ServerConfig),
) -> Result<(Arc<dyn paymux_store::Store>, paymux_server::Running), String> {
    let store = paymux_store::open(url).await.map_err(|e| e.to_string())?;
    let mut config = paymux_server::ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sandbox: true,
        ..Default::default()
    };
    tweak(&mut config);
    let server = paymux_server::start(config, store.clone())
        .await
        .map_err(|e| e.to_string())?;
    Ok((store, server))
}

/// Plays the payer at a sandbox simulator (`channel` is `wechat` or `alipay`)
/// and checks that paymux acknowledged every callback the simulator sent.
pub async fn sim_pay(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    id: &str,
) -> Result<serde_json::Value, String> {
    let r = http
        .post(format!("{base}/sim/{channel}/pay"))
        .json(&serde_json::json!({"out_trade_no": id}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let outcome: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    let acknowledged = outcome["callbacks"].as_array().is_some_and(|calls| {
        calls.iter().all(|c| {
            c["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
    });
    if !status.is_success() || !acknowledged {
        return Err(format!("sim pay {channel} {id}: HTTP {status} {outcome}"));
    }
    Ok(outcome)
}

/// A new directory for a throwaway SQLite database.
pub fn temp_data_dir(purpose: &str) -> PathBuf {
    let stamp = chrono::Utc::now().timestamp_millis();
    std::env::temp_dir().join(format!("paymux-{purpose}-{}-{stamp}", std::process::id()))
}

fn init_tracing(format: paymux_server::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAYMUX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        paymux_server::config::LogFormat::Text => builder.try_init(),
        // One JSON object per line, for log collectors.
        paymux_server::config::LogFormat::Json => builder.json().try_init(),
    };
}

/// mimalloc: under load paymux allocates and frees many small buffers from
/// several threads (HTTP, JSON, rows); glibc's allocator showed as about a
/// tenth of all CPU in profiles of the callback benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Config {
            command: ConfigCommand::Check(args),
        } => serve::check(*args).await,
        Command::Merchant {
            command: MerchantCommand::Create { name, db, json },
        } => create_merchant(&name, &db, json).await,
        Command::App { command } => app::run(command).await,
        Command::Channel { command } => channel::run(command).await,
        Command::Keys { command } => keys::run(command).await,
        Command::Notify { command } => notify::run(command).await,
        Command::Ledger { command } => ledger::run(command).await,
        Command::Audit { command } => audit::run(command).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paymux: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn create_merchant(name: &str, db: &DbArgs, json: bool) -> Result<(), String> {
    let store = db.open_for_secrets().await?;
    let (merchant, app) =
        paymux_server::merchants::create_merchant(&*store, &paymux_core::SystemClock, name)
            .await
            .map_err(|e| e.to_string())?;
    if json {
        let out = serde_json::json!({
            "merchant_id": merchant.id,
            "app_id": app.app_id,
            "app_secret": app.secret,
        });
        println!("{out}");
    } else {
        println!(
            "merchant_id: {}\napp_id:      {}\napp_secret:  {}",
            merchant.id, app.app_id, app.secret
        );
        println!("Keep the secret: it is shown only once.");
    }
    Ok(())
}
