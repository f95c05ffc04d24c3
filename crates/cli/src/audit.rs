//! `paymux audit`: prove the audit trail, show a subject's trail.

use clap::Subcommand;
use paymux_store::{audit, Store};
use serde_json::json;

use crate::DbArgs;

/// Rows read per page of an export.
const EXPORT_PAGE: u32 = 1000;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the trail's hash chain; exits non-zero where it breaks.
    Verify {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every row written in a time range, as JSON lines, oldest first.
    Export {
        /// RFC 3339, inclusive.
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// RFC 3339, exclusive.
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
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
        AuditCommand::Export { from, to, db } => {
            let store = db.open().await?;
            let mut after = 0;
            loop {
                let page = store
                    .audit_between(from, to, after, EXPORT_PAGE)
                    .await
                    .map_err(|e| e.to_string())?;
                for e in &page {
                    println!("{}", serde_json::to_string(e).map_err(|e| e.to_string())?);
                }
                match page.last() {
                    Some(last) if page.len() == EXPORT_PAGE as usize => after = last.seq,
                    _ => return Ok(()),
                }
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
