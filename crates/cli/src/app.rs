//! `paymux app`: a merchant's API credentials.

use clap::Subcommand;
use paymux_core::SystemClock;
use paymux_server::merchants;

use crate::DbArgs;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Add an app (its own app_id and secret) to a merchant; the secret is shown once.
    Create {
        #[arg(long)]
        merchant: String,
        /// Print {"app_id", "app_secret"} as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Make an app sign its requests with its own key pair: paymux keeps only
    /// the public key, the merchant the private one. Answers and
    /// notifications are still signed with the app secret.
    SetRequestKey {
        app_id: String,
        /// ed25519 or rsa-sha256 (RSASSA-PKCS1-v1_5, SHA-256, 2048 bits or more).
        #[arg(long, required_unless_present = "clear")]
        alg: Option<String>,
        /// A PEM file holding the public key (BEGIN PUBLIC KEY).
        #[arg(long, required_unless_present = "clear")]
        public_key: Option<std::path::PathBuf>,
        /// Sign with the app secret again.
        #[arg(long, conflicts_with_all = ["alg", "public_key"])]
        clear: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Serve an app only over mutual TLS with this client certificate (needs
    /// tls_cert_file, tls_key_file and client_ca_file on the server).
    BindClientCert {
        app_id: String,
        /// The client certificate, PEM.
        #[arg(long, required_unless_present = "clear")]
        cert: Option<std::path::PathBuf>,
        /// Serve the app without a client certificate again.
        #[arg(long, conflicts_with = "cert")]
        clear: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Give an app a new secret (shown once). The old one keeps verifying
    /// requests during the grace period.
    RotateSecret {
        app_id: String,
        /// How long the old secret keeps working, in seconds.
        #[arg(long, default_value_t = 86_400)]
        grace_seconds: i64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub async fn run(command: AppCommand) -> Result<(), String> {
    let (app, json, note) = match command {
        AppCommand::BindClientCert {
            app_id,
            cert,
            clear,
            db,
        } => {
            let pem = match (clear, cert) {
                (true, _) => None,
                (false, Some(path)) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                ),
                (false, None) => return Err("give --cert or --clear".into()),
            };
            let store = db.open_for_secrets().await?;
            let bound = merchants::bind_app_client_cert(&*store, &app_id, pem.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            match bound {
                Some(fp) => {
                    println!("{app_id} is served only with the client certificate sha256:{fp}.")
                }
                None => println!("{app_id} is served without a client certificate."),
            }
            return Ok(());
        }
        AppCommand::SetRequestKey {
            app_id,
            alg,
            public_key,
            clear,
            db,
        } => {
            let key = match (clear, alg, public_key) {
                (true, _, _) => None,
                (false, Some(alg), Some(path)) => Some(paymux_store::RequestKey {
                    alg: alg.parse()?,
                    public_key_pem: std::fs::read_to_string(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                }),
                _ => return Err("give --alg and --public-key, or --clear".into()),
            };
            let store = db.open_for_secrets().await?;
            merchants::set_app_request_key(&*store, &app_id, key.clone())
                .await
                .map_err(|e| e.to_string())?;
            match key {
                Some(k) => println!(
                    "{app_id} now signs its requests with its {} key.",
                    k.alg.as_str()
                ),
                None => println!("{app_id} now signs its requests with its secret."),
            }
            return Ok(());
        }
        AppCommand::Create { merchant, json, db } => {
            let store = db.open_for_secrets().await?;
            let app = merchants::create_app(&*store, &SystemClock, &merchant)
                .await
                .map_err(|e| e.to_string())?;
            (app, json, None)
        }
        AppCommand::RotateSecret {
            app_id,
            grace_seconds,
            json,
            db,
        } => {
            let store = db.open_for_secrets().await?;
            let app = merchants::rotate_app_secret(&*store, &SystemClock, &app_id, grace_seconds)
                .await
                .map_err(|e| e.to_string())?;
            let note = match app.previous_secret_expires_at {
                Some(until) => format!("The previous secret keeps working until {until}."),
                None => "The previous secret no longer works.".to_string(),
            };
            (app, json, Some(note))
        }
    };
    if json {
        let out = serde_json::json!({
            "merchant_id": app.merchant_id,
            "app_id": app.app_id,
            "app_secret": app.secret,
            "previous_secret_expires_at": app.previous_secret_expires_at,
        });
        println!("{out}");
    } else {
        println!("app_id:      {}\napp_secret:  {}", app.app_id, app.secret);
        println!("Keep the secret: it is shown only once.");
        if let Some(note) = note {
            println!("{note}");
        }
    }
    Ok(())
}
