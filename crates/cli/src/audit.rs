//! `paymux audit`: prove the audit trail, show a subject's trail.

use clap::Subcommand;
use paymux_store::{audit, Store};
use serde_json::json;

use crate::DbArgs;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the trail's hash chain; exits non-zero where it breaks.
    Verify {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The trail of one payment, refund, app, channel account or merchant.
    Show {
        subject_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub async fn run(command: AuditCommand) -> Result<(), String> {
    match command {
        AuditCommand::Verify { json, db } => {
            let store = db.open().await?;
            let check = audit::verify(&*store).await.map_err(|e| e.to_string())?;
            if json {
                let mut out = serde_json::to_value(&check).map_err(|e| e.to_string())?;
                out["ok"] = json!(check.ok());
                println!("{out}");
            } else {
                println!(
                    "{} entries chained, {} not sealed yet.",
                    check.sealed, check.unsealed
                );
            }
            match &check.broken {
                None => {
                    if !json {
                        println!("The audit trail holds.");
                    }
                    Ok(())
                }
                Some(b) => Err(format!(
                    "the audit trail breaks at position {}: {}",
                    b.chain_pos, b.reason
                )),
            }
        }
        AuditCommand::Show {
            subject_id,
            json,
            db,
        } => {
            let store = db.open().await?;
            let trail = store
                .audit_of(&subject_id)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_value(&trail).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            if trail.is_empty() {
                println!("No trail for {subject_id}.");
            }
            for e in &trail {
                let pos = e
                    .chain_pos
                    .map_or("unsealed".to_string(), |p| format!("#{p}"));
                println!(
                    "{}  {:<9} {:<8} {}  {}",
                    e.at.to_rfc3339(),
                    pos,
                    e.action,
                    e.subject_kind,
                    e.detail
                );
            }
            Ok(())
        }
    }
}
