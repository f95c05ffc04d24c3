//! `paymux notify`: merchant notifications that were not acknowledged. A
//! retry only reschedules the event in the database; the notifier of any
//! running `paymux serve` on that database delivers it.

use clap::Subcommand;
use paymux_core::{Clock, SystemClock};
use paymux_server::undelivered::{self, Filter};

use crate::DbArgs;

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// List events not acknowledged yet, oldest first.
    List {
        /// Only this merchant's events.
        #[arg(long)]
        merchant: Option<String>,
        /// Only events whose retry schedule ran out (dead-lettered).
        #[arg(long)]
        dead: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Send an event again, from the start of the retry schedule. An
    /// acknowledged event is never sent again.
    Retry {
        event_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub async fn run(command: NotifyCommand) -> Result<(), String> {
    match command {
        NotifyCommand::List {
            merchant,
            dead,
            limit,
            json,
            db,
        } => {
            let store = db.open().await?;
            let filter = if dead {
                Filter::Dead
            } else {
                Filter::Undelivered
            };
            let limit = undelivered::limit(Some(limit)).map_err(|e| e.to_string())?;
            let events = undelivered::list(&*store, merchant.as_deref(), filter, limit)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                let all: Vec<_> = events.iter().map(undelivered::view).collect();
                println!("{}", serde_json::Value::Array(all));
                return Ok(());
            }
            if events.is_empty() {
                println!("No undelivered events.");
            }
            for e in &events {
                let v = undelivered::view(e);
                println!(
                    "{}  {:<18} {:<8} attempts={:<3} {}  {}",
                    e.id,
                    e.event_type,
                    v["status"].as_str().unwrap_or_default(),
                    e.attempts,
                    e.notify_url,
                    e.last_error.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
        NotifyCommand::Retry { event_id, json, db } => {
            let store = db.open().await?;
            let event = undelivered::retry(&*store, None, &event_id, SystemClock.now())
                .await
                .map_err(|e| match e {
                    paymux_server::error::FlowError::NotFound => format!("no event {event_id}"),
                    other => other.to_string(),
                })?;
            if json {
                println!("{}", undelivered::view(&event));
            } else {
                println!(
                    "{} will be delivered again to {} by the running gateway.",
                    event.id, event.notify_url
                );
            }
            Ok(())
        }
    }
}
