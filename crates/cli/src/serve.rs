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

/// The effective configuration: defaults, `--config` file, `PAYMUX_…`
/// environment, then the command-line flags.
pub fn effective_config(args: &ServeArgs) -> Result<ServerConfig, String> {
    let file = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(serde_json::to_value(table).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let mut config = ServerConfig::load(file, std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.sandbox {
        config.sandbox = true;
    }
    if args.public_url.is_some() {
        config.public_url = args.public_url.clone();
    }
    if args.db.master_key_file.is_some() {
        config.master_key_file = args.db.master_key_file.clone();
    }
    if let Some(url) = &args.db.database_url {
        config.database_url = Some(paymux_server::config::SecretString::new(url.clone()));
    }
    Ok(config)
}

/// The database flags with what the configuration adds.
fn db_args(args: &ServeArgs, config: &ServerConfig) -> DbArgs {
    DbArgs {
        data_dir: args.db.data_dir.clone(),
        database_url: config.database_url.as_ref().map(|u| u.expose().to_string()),
        master_key_file: config.master_key_file.clone(),
        pool_size: Some(config.database_pool_size),
    }
}

pub async fn run(args: ServeArgs) -> Result<(), String> {
    let config = effective_config(&args)?;
    crate::init_tracing(config.log_format);
    let db = db_args(&args, &config);
    let master_key = db.master_key()?;
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
    let store = db
        .open_with(paymux_server::secrets::keyring(master_key))
        .await?;
    if config.sandbox {
        first_sandbox_merchant(&*store).await?;
    }
    let mut running = paymux_server::start(config, store)
        .await
        .map_err(|e| e.to_string())?;
    println!("paymux listening on {}", running.base_url());
    // Committed state is all there is: stopping at any point is safe, and the
    // outbox resumes undelivered notifications on the next start. A signal
    // still lets the requests in flight be answered first.
    let grace = std::time::Duration::from_secs(SHUTDOWN_GRACE_SECS);
    let signal = tokio::select! {
        signal = stop_signal() => signal,
        () = running.serving() => return Ok(()),
    };
    tracing::info!(
        signal,
        grace_secs = SHUTDOWN_GRACE_SECS,
        "shutting down: draining requests in flight"
    );
    if !running.shutdown(grace).await {
        tracing::warn!("some requests were still running when the grace period ended");
    }
    Ok(())
}

/// How long a stopping node waits for the requests in flight: less than
/// the 30 s a process manager (systemd, Kubernetes) allows before SIGKILL.
const SHUTDOWN_GRACE_SECS: u64 = 25;

/// SIGTERM (a process manager stopping the node) or SIGINT (Ctrl-C).
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// `paymux config check`: validates what `serve` would run with and prints
/// it, secrets masked. Fails if `serve` would refuse to start.
pub async fn check(args: ServeArgs) -> Result<(), String> {
    let config = effective_config(&args)?;
    let db = db_args(&args, &config);
    let mut shown = serde_json::to_value(&config).map_err(|e| e.to_string())?;
    shown["database"] = serde_json::Value::String(crate::redact(&db.url()));
    let mut problems = Vec::new();
    match db.master_key() {
        Ok(Some(key)) => shown["master_key"] = format!("set (id {})", key.id()).into(),
        Ok(None) if config.sandbox => {
            shown["master_key"] = "none: secrets stored in clear (sandbox)".into()
        }
        Ok(None) => {
            problems.push("no master key (PAYMUX_MASTER_KEY or --master-key-file)".to_string())
        }
        Err(e) => problems.push(e),
    }
    if let Err(e) = config.effective_public_url(config.listen) {
        problems.push(e);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).map_err(|e| e.to_string())?
    );
    if problems.is_empty() {
        println!("configuration ok");
        Ok(())
    } else {
        Err(format!(
            "configuration has problems:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// A new sandbox with no merchant gets one, so the API can be tried at once.
/// Its credentials are printed here, once, like `paymux merchant create` does.
async fn first_sandbox_merchant(store: &dyn paymux_store::Store) -> Result<(), String> {
    let merchants = store.list_merchants().await.map_err(|e| e.to_string())?;
    if let Some(first) = merchants.first() {
        // Secrets are shown only when made; say how to get working ones again.
        let apps = store
            .merchant_apps(&first.id)
            .await
            .map_err(|e| e.to_string())?;
        let app_id = apps.first().map_or("<none>", |a| a.app_id.as_str());
        println!(
            "Sandbox merchant {} (app {app_id}). Its secret was shown when it was made; \
             lost it? `paymux app rotate-secret {app_id} --grace-seconds 0` prints a new one, \
             `paymux merchant create` makes another merchant.",
            first.id
        );
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
