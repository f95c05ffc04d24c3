//! `paymux serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use paymux_server::ServerConfig;

use crate::DbArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's].
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    db: DbArgs,
    /// Mount the channel simulators in this process and give every merchant sandbox accounts.
    #[arg(long)]
    sandbox: bool,
    /// The URL channels reach this server at (callback base).
    #[arg(long, env = "PAYMUX_PUBLIC_URL")]
    public_url: Option<String>,
    /// A TOML configuration file (keys as in ServerConfig: listen, sandbox, notifier.schedule_secs, …).
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            toml::from_str::<ServerConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.sandbox {
        config.sandbox = true;
    }
    if args.public_url.is_some() {
        config.public_url = args.public_url.clone();
    }
    let master_key = args.db.master_key()?;
    if master_key.is_none() {
        if !config.sandbox {
            return Err(format!(
                "no master key: outside sandbox paymux refuses to start without one \
                 (set {} or --master-key-file; `paymux keys generate` makes one)",
                paymux_server::secrets::MASTER_KEY_ENV
            ));
        }
        paymux_server::secrets::warn_plaintext();
    }
    let store = args
        .db
        .open_with(paymux_server::secrets::keyring(master_key))
        .await?;
    if config.sandbox {
        first_sandbox_merchant(&*store).await?;
    }
    let running = paymux_server::start(config, store)
        .await
        .map_err(|e| e.to_string())?;
    println!("paymux listening on {}", running.base_url());
    // Committed state is all there is: stopping at any point is safe, and the
    // outbox resumes undelivered notifications on the next start.
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        _ = running.wait() => {}
    }
    Ok(())
}

/// A new sandbox with no merchant gets one, so the API can be tried at once.
/// Its credentials are printed here, once, like `paymux merchant create` does.
async fn first_sandbox_merchant(store: &dyn paymux_store::Store) -> Result<(), String> {
    if !store
        .list_merchants()
        .await
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        return Ok(());
    }
    let (merchant, app) = paymux_server::merchants::create_merchant(
        store,
        &paymux_core::SystemClock,
        "Sandbox Merchant",
    )
    .await
    .map_err(|e| e.to_string())?;
    println!("Sandbox merchant created (shown once; `paymux merchant create` makes more):");
    println!(
        "{}",
        serde_json::json!({"merchant_id": merchant.id, "app_id": app.app_id, "app_secret": app.secret})
    );
    Ok(())
}
