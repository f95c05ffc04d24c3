//! `paymux ledger`: prove the books, show a merchant's balances.

use clap::Subcommand;
use paymux_store::{ledger, Store};
use serde_json::json;

use crate::DbArgs;

/// Issues of each kind that a check lists at most.
const ISSUES_PER_KIND: u32 = 100;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Check that every ledger transaction balances and that the ledger
    /// agrees with payments and refunds; exits non-zero naming the first
    /// inconsistency.
    Check {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// A merchant's books per channel account and currency (minor units).
    Balances {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub async fn run(command: LedgerCommand) -> Result<(), String> {
    match command {
        LedgerCommand::Check { json, db } => {
            let store = db.open().await?;
            let check = store
                .ledger_check(ISSUES_PER_KIND)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                let mut out = serde_json::to_value(&check).map_err(|e| e.to_string())?;
                out["ok"] = json!(check.ok());
                println!("{out}");
            } else {
                println!(
                    "{} transactions, {} postings checked.",
                    check.transactions, check.postings
                );
                for issue in &check.issues {
                    println!("  {issue}");
                }
            }
            match check.issues.first() {
                None => {
                    if !json {
                        println!("The ledger balances and agrees with payments and refunds.");
                    }
                    Ok(())
                }
                Some(first) => Err(format!(
                    "the ledger check found {} issue(s); the first: {first}",
                    check.issues.len()
                )),
            }
        }
        LedgerCommand::Balances { merchant, json, db } => {
            let store = db.open().await?;
            let rows = store.balances(&merchant).await.map_err(|e| e.to_string())?;
            let books = ledger::summarise(&rows);
            if json {
                println!("{}", json!({"merchant_id": merchant, "data": books}));
                return Ok(());
            }
            if books.is_empty() {
                println!("No money has moved for {merchant}.");
            }
            for b in &books {
                println!(
                    "{}  {:<8} {}  captured={} refunded={} fees={} receivable={}",
                    b.channel_account_id,
                    b.channel,
                    b.currency,
                    b.captured,
                    b.refunded,
                    b.fees,
                    b.receivable
                );
            }
            Ok(())
        }
    }
}
