//! `paymux keys`: master keys for secrets at rest.

use std::path::PathBuf;

use clap::Subcommand;
use paymux_store::{Keyring, MasterKey};

use crate::DbArgs;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Print a new random master key (base64). Keep it out of the database's backups.
    Generate,
    /// Re-encrypt every app secret and channel key under a new master key.
    /// The current key comes from PAYMUX_MASTER_KEY / --master-key-file (none
    /// if secrets are still in clear). Safe to run again if interrupted.
    Rotate {
        /// The file holding the new master key.
        #[arg(long)]
        new_master_key_file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub async fn run(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Generate => {
            println!(
                "{}",
                MasterKey::generate_base64().map_err(|e| e.to_string())?
            );
            Ok(())
        }
        KeysCommand::Rotate {
            new_master_key_file,
            db,
        } => {
            let text = std::fs::read_to_string(&new_master_key_file)
                .map_err(|e| format!("{}: {e}", new_master_key_file.display()))?;
            let new_key = MasterKey::parse(&text)
                .map_err(|e| format!("{}: {e}", new_master_key_file.display()))?;
            let new_id = new_key.id().to_string();
            let mut keys = Keyring::new(new_key);
            if let Some(old) = db.master_key()? {
                keys = keys.also_open_with(old);
            }
            let store = db.open_with(keys).await?;
            let counts = store.reseal_all().await.map_err(|e| e.to_string())?;
            println!(
                "re-encrypted {} app(s) and {} channel account(s) under master key {new_id}",
                counts.apps, counts.channel_accounts
            );
            println!("From now on start paymux with the new key; the old one can be destroyed.");
            Ok(())
        }
    }
}
