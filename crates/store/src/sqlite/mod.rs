//! The embedded SQLite backend, on the group-committing [`engine`].
//!
//! Every write is a closure the engine's writer thread runs inside the
//! batch's transaction, so a compare-and-set and its outbox row commit
//! together, and what a caller needs afterwards (the row it changed, or the
//! row that won a conflict) is read in the same closure instead of in
//! another round trip. Lookups by key run on a read connection on the
//! caller's thread; listings and counts on a blocking thread.

mod cols;
mod engine;

use std::path::Path;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use paymux_core::{ChannelKind, PaymentId, PaymentStatus, RefundStatus};
use rusqlite::{params, Connection};

use self::cols::{all, exec, exec_unique, from_micros, json_text, micros, one};
use self::engine::Engine;
use crate::ledger::{self, AccountBalance, LedgerCheck, Posting};
use crate::row::{self, Cols};
use crate::shared::{self, check_edge, claim_window, event_updated, lease_end, sort_due, updated};
use crate::{migrate, model::*, Result, Store, StoreError};

pub struct SqliteStore {
    engine: Engine,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        let path = path.to_path_buf();
        let engine = tokio::task::spawn_blocking(move || Engine::open(&path, migrate::sqlite))
            .await
            .map_err(|e| StoreError::Engine(format!("opening: {e}")))??;
        Ok(SqliteStore { engine })
    }

    /// Commits what is queued, stops the writer and closes every connection.
    pub async fn close(&self) {
        self.engine.close().await;
    }
}

const PAYMENT_BY_ID: &str = "SELECT * FROM payments WHERE id = ?1";
const REFUND_BY_ID: &str = "SELECT * FROM refunds WHERE id = ?1";
const EVENT_BY_ID: &str = "SELECT * FROM events WHERE id = ?1";
const INSERT_APP: &str = "INSERT INTO apps (app_id, merchant_id, secret, created_at,
    previous_secret, previous_secret_expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

fn insert_app(conn: &Connection, app: &App) -> Result<u64> {
    exec_unique(
        conn,
        INSERT_APP,
        params![
            app.app_id,
            app.merchant_id,
            app.secret,
            micros(app.created_at),
            app.previous_secret,
            app.previous_secret_expires_at.map(micros),
        ],
        "app",
    )
}

fn payment_by_id(conn: &Connection, id: &str) -> Result<Option<Payment>> {
    one(conn, PAYMENT_BY_ID, [id], |r| row::payment(r))
}

fn refund_by_id(conn: &Connection, id: &str) -> Result<Option<Refund>> {
    one(conn, REFUND_BY_ID, [id], |r| row::refund(r))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn write_batches(&self) -> Option<WriteBatches> {
        let stats = self.engine.stats();
        Some(WriteBatches {
            commits: stats.commits.load(Ordering::Relaxed),
            writes: stats.writes.load(Ordering::Relaxed),
        })
    }

    async fn backlog(&self) -> Result<Backlog> {
        self.engine
            .scan(|c| {
                let backlog = one(
                    c,
                    "SELECT
                (SELECT COUNT(*) FROM events WHERE delivered_at IS NULL AND dead = 0) AS undelivered,
                (SELECT COUNT(*) FROM events WHERE delivered_at IS NULL AND NOT (dead = 0)) AS dead,
                (SELECT MIN(created_at) FROM events WHERE delivered_at IS NULL AND dead = 0) AS oldest,
                (SELECT COUNT(*) FROM payments WHERE status IN ('created', 'pending')) AS open,
                (SELECT COUNT(*) FROM refunds WHERE status = 'processing') AS processing",
                    [],
                    |r| {
                        Ok(Backlog {
                            undelivered_events: r.int("undelivered")?,
                            dead_events: r.int("dead")?,
                            oldest_undelivered: r
                                .get::<_, Option<i64>>("oldest")?
                                .map(|v| from_micros("oldest", v))
                                .transpose()?,
                            open_payments: r.int("open")?,
                            processing_refunds: r.int("processing")?,
                        })
                    },
                )?;
                backlog.ok_or_else(|| StoreError::Corrupt("backlog: no row".into()))
            })
            .await
    }

    async fn directory_version(&self) -> Result<i64> {
        self.engine
            .read(|c| {
                one(
                    c,
                    "SELECT version FROM directory_version WHERE id = 1",
                    [],
                    |r| r.int("version"),
                )?
                .ok_or_else(|| StoreError::Corrupt("directory_version: no row".into()))
            })
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.engine
            .read(|c| {
                Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map(drop)?)
            })
            .await
    }

    async fn insert_merchant(&self, merchant: &Merchant, app: &App) -> Result<()> {
        let (merchant, app) = (merchant.clone(), app.clone());
        self.engine
            .write(move |c| {
                exec_unique(
                    c,
                    "INSERT INTO merchants (id, name, created_at) VALUES (?1, ?2, ?3)",
                    params![merchant.id, merchant.name, micros(merchant.created_at)],
                    "merchant",
                )?;
                insert_app(c, &app).map(drop)
            })
            .await
    }

    async fn merchant(&self, id: &str) -> Result<Option<Merchant>> {
        self.engine
            .read(|c| {
                one(c, "SELECT * FROM merchants WHERE id = ?1", [id], |r| {
                    row::merchant(r)
                })
            })
            .await
    }

    async fn list_merchants(&self) -> Result<Vec<Merchant>> {
        self.engine
            .scan(|c| {
                all(
                    c,
                    "SELECT * FROM merchants ORDER BY created_at, id",
                    [],
                    |r| row::merchant(r),
                )
            })
            .await
    }

    async fn app(&self, app_id: &str) -> Result<Option<App>> {
        self.engine
            .read(|c| {
                one(c, "SELECT * FROM apps WHERE app_id = ?1", [app_id], |r| {
                    row::app(r)
                })
            })
            .await
    }

    async fn merchant_apps(&self, merchant_id: &str) -> Result<Vec<App>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM apps WHERE merchant_id = ?1 ORDER BY created_at, app_id",
                    [merchant_id],
                    |r| row::app(r),
                )
            })
            .await
    }

    async fn scrub(&self) -> Result<()> {
        // secure_delete already zeroed freed space in the pages; what is left
        // is old page images in the WAL, which a truncating checkpoint removes.
        self.engine
            .write_standalone(|c| {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                Ok(())
            })
            .await
    }

    async fn insert_app(&self, app: &App) -> Result<()> {
        let app = app.clone();
        self.engine
            .write(move |c| insert_app(c, &app).map(drop))
            .await
    }

    async fn update_app_request_key(&self, app_id: &str, key: Option<&RequestKey>) -> Result<()> {
        let (app_id, key) = (app_id.to_owned(), key.cloned());
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE apps SET request_key_alg = ?2, request_key_pem = ?3 WHERE app_id = ?1",
                    params![
                        app_id,
                        key.as_ref().map(|k| k.alg.as_str()),
                        key.as_ref().map(|k| k.public_key_pem.as_str()),
                    ],
                )?;
                updated(rows, "app", &app_id)
            })
            .await
    }

    async fn update_app_client_cert(&self, app_id: &str, sha256: Option<&str>) -> Result<()> {
        let (app_id, sha256) = (app_id.to_owned(), sha256.map(str::to_owned));
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE apps SET client_cert_sha256 = ?2 WHERE app_id = ?1",
                    params![app_id, sha256],
                )?;
                updated(rows, "app", &app_id)
            })
            .await
    }

    async fn update_app_event_types(&self, app_id: &str, types: Option<&[String]>) -> Result<()> {
        let app_id = app_id.to_owned();
        let types = types.map(|t| json_text(&serde_json::json!(t)));
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE apps SET event_types = ?2 WHERE app_id = ?1",
                    params![app_id, types],
                )?;
                updated(rows, "app", &app_id)
            })
            .await
    }

    async fn update_app_secrets(&self, app: &App) -> Result<()> {
        let app = app.clone();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE apps SET secret = ?2, previous_secret = ?3,
                        previous_secret_expires_at = ?4 WHERE app_id = ?1",
                    params![
                        app.app_id,
                        app.secret,
                        app.previous_secret,
                        app.previous_secret_expires_at.map(micros),
                    ],
                )?;
                updated(rows, "app", &app.app_id)
            })
            .await
    }

    async fn list_channel_accounts(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Vec<ChannelAccount>> {
        let merchant_id = merchant_id.map(str::to_owned);
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM channel_accounts WHERE ?1 IS NULL OR merchant_id = ?1
                     ORDER BY created_at, id",
                    [merchant_id],
                    |r| row::channel_account(r),
                )
            })
            .await
    }

    async fn set_channel_account_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        let id = id.to_owned();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE channel_accounts SET enabled = ?2 WHERE id = ?1",
                    params![id, enabled],
                )?;
                updated(rows, "channel account", &id)
            })
            .await
    }

    async fn update_channel_account_config(
        &self,
        id: &str,
        config: &serde_json::Value,
    ) -> Result<()> {
        let (id, config) = (id.to_owned(), json_text(config));
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE channel_accounts SET config = ?2 WHERE id = ?1",
                    params![id, config],
                )?;
                updated(rows, "channel account", &id)
            })
            .await
    }

    async fn insert_channel_account(&self, a: &ChannelAccount) -> Result<()> {
        let a = a.clone();
        self.engine
            .write(move |c| {
                exec_unique(
                    c,
                    "INSERT INTO channel_accounts
                        (id, merchant_id, channel, config, sandbox, enabled, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        a.id,
                        a.merchant_id,
                        a.channel.as_str(),
                        json_text(&a.config),
                        a.sandbox,
                        a.enabled,
                        micros(a.created_at),
                    ],
                    "channel account",
                )
                .map(drop)
            })
            .await
    }

    async fn channel_account(&self, id: &str) -> Result<Option<ChannelAccount>> {
        self.engine
            .read(|c| {
                one(
                    c,
                    "SELECT * FROM channel_accounts WHERE id = ?1",
                    [id],
                    |r| row::channel_account(r),
                )
            })
            .await
    }

    async fn channel_account_for(
        &self,
        merchant_id: &str,
        channel: ChannelKind,
    ) -> Result<Option<ChannelAccount>> {
        self.engine
            .read(|c| {
                one(
                    c,
                    "SELECT * FROM channel_accounts
                     WHERE merchant_id = ?1 AND channel = ?2 AND enabled = 1
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                    [merchant_id, channel.as_str()],
                    |r| row::channel_account(r),
                )
            })
            .await
    }

    async fn use_nonce(
        &self,
        app_id: &str,
        nonce: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let (app_id, nonce) = (app_id.to_owned(), nonce.to_owned());
        // A nonce whose earlier use has expired may be used again: the upsert
        // only overwrites an expired row, and reports a change iff it wrote.
        self.engine
            .write(move |c| {
                let changed = exec(
                    c,
                    "INSERT INTO nonces (app_id, nonce, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (app_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE nonces.expires_at <= ?4",
                    params![app_id, nonce, micros(expires_at), micros(now)],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    async fn purge_nonces(&self, now: DateTime<Utc>) -> Result<u64> {
        self.engine
            .write(move |c| {
                exec(
                    c,
                    "DELETE FROM nonces WHERE expires_at <= ?1",
                    [micros(now)],
                )
            })
            .await
    }

    async fn insert_payment(&self, p: &Payment) -> Result<Inserted> {
        let p = p.clone();
        self.engine
            .write(move |c| {
                if insert_payment_row(c, &p)? == 1 {
                    return Ok(Inserted::New);
                }
                // Read in the same transaction: the row that won the conflict.
                payment_by_order_no(c, &p.merchant_id, &p.merchant_order_no)?
                    .map(Inserted::Existing)
                    .ok_or_else(|| StoreError::NotFound(format!("payment {}", p.merchant_order_no)))
            })
            .await
    }

    async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>> {
        self.engine.read(|c| payment_by_id(c, id.as_str())).await
    }

    async fn list_payments(&self, q: &PaymentQuery) -> Result<Vec<Payment>> {
        let q = q.clone();
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM payments
                     WHERE merchant_id = ?1
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR channel = ?3)
                       AND (?4 IS NULL OR method = ?4)
                       AND (?5 IS NULL OR created_at >= ?5)
                       AND (?6 IS NULL OR created_at < ?6)
                       AND (?7 IS NULL OR substr(merchant_order_no, 1, length(?7)) = ?7)
                       AND (?8 IS NULL OR id < ?8)
                     ORDER BY id DESC
                     LIMIT ?9",
                    params![
                        q.merchant_id,
                        q.status.map(|s| s.as_str()),
                        q.channel.map(|c| c.as_str()),
                        q.method.map(|m| m.as_str()),
                        q.created_from.map(micros),
                        q.created_to.map(micros),
                        q.order_no_prefix,
                        q.starting_after.as_ref().map(|id| id.as_str()),
                        i64::from(q.limit),
                    ],
                    |r| row::payment(r),
                )
            })
            .await
    }

    async fn list_refunds(&self, q: &RefundQuery) -> Result<Vec<Refund>> {
        let q = q.clone();
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM refunds
                     WHERE merchant_id = ?1
                       AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR payment_id = ?3)
                       AND (?4 IS NULL OR created_at >= ?4)
                       AND (?5 IS NULL OR created_at < ?5)
                       AND (?6 IS NULL OR id < ?6)
                     ORDER BY id DESC
                     LIMIT ?7",
                    params![
                        q.merchant_id,
                        q.status.map(|s| s.as_str()),
                        q.payment_id.as_ref().map(|id| id.as_str()),
                        q.created_from.map(micros),
                        q.created_to.map(micros),
                        q.starting_after,
                        i64::from(q.limit),
                    ],
                    |r| row::refund(r),
                )
            })
            .await
    }

    async fn payment_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Payment>> {
        self.engine
            .read(|c| payment_by_order_no(c, merchant_id, merchant_order_no))
            .await
    }

    async fn transition(
        &self,
        id: &PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        patch: &TransitionPatch,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<Transition> {
        check_edge(from, to)?;
        let (id, patch, event) = (id.clone(), patch.clone(), event.cloned());
        self.engine
            .write(move |c| {
                let after = one(
                    c,
                    "UPDATE payments SET status = ?1, updated_at = ?2,
                        pay_params = COALESCE(?3, pay_params),
                        channel_trade_no = COALESCE(?4, channel_trade_no),
                        paid_at = COALESCE(?5, paid_at)
                     WHERE id = ?6 AND status = ?7
                     RETURNING *",
                    params![
                        to.as_str(),
                        micros(now),
                        patch.pay_params.as_ref().map(json_text),
                        patch.channel_trade_no,
                        patch.paid_at.map(micros),
                        id.as_str(),
                        from.as_str(),
                    ],
                    |r| row::payment(r),
                )?;
                let Some(after) = after else {
                    return match payment_by_id(c, id.as_str())? {
                        Some(current) => Ok(Transition::Unchanged(current)),
                        None => Err(StoreError::NotFound(format!("payment {id}"))),
                    };
                };
                if to == PaymentStatus::Succeeded {
                    insert_postings(c, &ledger::capture(&after, now))?;
                    if let Some(checkout_id) = &after.checkout_id {
                        settle_attempt(c, checkout_id, &after.id, now)?;
                    }
                }
                if let Some(group_id) = &after.group_id {
                    count_member(c, group_id, to, patch.group_event.as_ref(), now)?;
                }
                if let Some(e) = &event {
                    insert_event(c, e)?;
                }
                Ok(Transition::Applied(after))
            })
            .await
    }

    async fn insert_refund(&self, r: &Refund) -> Result<RefundInserted> {
        let r = r.clone();
        // The writer runs one transaction at a time, so the sum read below
        // cannot change before the insert.
        self.engine
            .write(move |c| {
                if let Some(existing) = refund_by_no(c, &r.merchant_id, &r.merchant_refund_no)? {
                    return Ok(RefundInserted::Existing(existing));
                }
                let payment = payment_by_id(c, r.payment_id.as_str())?
                    .ok_or_else(|| StoreError::NotFound(format!("payment {}", r.payment_id)))?;
                let held: i64 = c
                    .prepare_cached(
                        "SELECT COALESCE(SUM(amount_minor), 0) FROM refunds
                         WHERE payment_id = ?1 AND status <> 'failed'",
                    )?
                    .query_row([r.payment_id.as_str()], |row| row.get(0))?;
                if let Some(verdict) = shared::refund_verdict(&payment, held, &r)? {
                    return Ok(verdict);
                }
                exec_unique(
                    c,
                    "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_no,
                        amount_minor, currency, status, reason, notify_url, request_hash,
                        channel_refund_no, failure_reason, refunded_at, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    params![
                        r.id,
                        r.merchant_id,
                        r.payment_id.as_str(),
                        r.merchant_refund_no,
                        r.amount.minor,
                        r.amount.currency.as_str(),
                        r.status.as_str(),
                        r.reason,
                        r.notify_url,
                        r.request_hash,
                        r.channel_refund_no,
                        r.failure_reason,
                        r.refunded_at.map(micros),
                        micros(r.created_at),
                        micros(r.updated_at),
                    ],
                    "refund",
                )?;
                Ok(RefundInserted::New)
            })
            .await
    }

    async fn refund(&self, id: &str) -> Result<Option<Refund>> {
        self.engine.read(|c| refund_by_id(c, id)).await
    }

    async fn refund_by_no(
        &self,
        merchant_id: &str,
        merchant_refund_no: &str,
    ) -> Result<Option<Refund>> {
        self.engine
            .read(|c| refund_by_no(c, merchant_id, merchant_refund_no))
            .await
    }

    async fn refunds_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<Refund>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM refunds WHERE payment_id = ?1 ORDER BY created_at, id",
                    [payment_id.as_str()],
                    |r| row::refund(r),
                )
            })
            .await
    }

    async fn insert_group(&self, g: &GroupBuy) -> Result<GroupInserted> {
        let g = g.clone();
        self.engine
            .write(move |c| {
                let inserted = exec_unique(
                    c,
                    "INSERT INTO group_buys (id, merchant_id, app_id, merchant_group_no, size,
                        amount_minor, currency, notify_url, request_hash, status, expires_at,
                        created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT (merchant_id, merchant_group_no) DO NOTHING",
                    params![
                        g.id,
                        g.merchant_id,
                        g.app_id,
                        g.merchant_group_no,
                        g.size,
                        g.amount,
                        g.currency.as_str(),
                        g.notify_url,
                        g.request_hash,
                        g.status.as_str(),
                        micros(g.expires_at),
                        micros(g.created_at),
                        micros(g.updated_at),
                    ],
                    "group",
                )?;
                if inserted == 1 {
                    return Ok(GroupInserted::New);
                }
                one(
                    c,
                    "SELECT * FROM group_buys WHERE merchant_id = ?1 AND merchant_group_no = ?2",
                    [&g.merchant_id, &g.merchant_group_no],
                    |r| row::group_buy(r),
                )?
                .map(GroupInserted::Existing)
                .ok_or_else(|| StoreError::NotFound(format!("group {}", g.merchant_group_no)))
            })
            .await
    }

    async fn group(&self, id: &str) -> Result<Option<GroupBuy>> {
        self.engine.read(|c| group_by_id(c, id)).await
    }

    async fn group_members(&self, id: &str) -> Result<Vec<Payment>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM payments WHERE group_id = ?1 ORDER BY id LIMIT 1000",
                    [id],
                    |r| row::payment(r),
                )
            })
            .await
    }

    async fn join_group(&self, p: &Payment, now: DateTime<Utc>) -> Result<Joined> {
        let p = p.clone();
        let group_id = p
            .group_id
            .clone()
            .ok_or_else(|| StoreError::Invalid("a member's payment names its group".into()))?;
        // The writer runs one transaction at a time: nothing changes between
        // the seat and the insert.
        self.engine
            .write(move |c| {
                if let Some(existing) =
                    payment_by_order_no(c, &p.merchant_id, &p.merchant_order_no)?
                {
                    return Ok(Joined::Existing(existing));
                }
                let took = exec(
                    c,
                    "UPDATE group_buys SET seats_taken = seats_taken + 1, updated_at = ?1
                     WHERE id = ?2 AND status = 'open' AND expires_at > ?1 AND seats_taken < size",
                    params![micros(now), group_id],
                )?;
                if took == 0 {
                    let g = group_by_id(c, &group_id)?
                        .ok_or_else(|| StoreError::NotFound(format!("group {group_id}")))?;
                    return Ok(if g.status == GroupStatus::Open && g.expires_at > now {
                        Joined::Full
                    } else {
                        Joined::Closed(g.status)
                    });
                }
                insert_payment_row(c, &p)?;
                Ok(Joined::New)
            })
            .await
    }

    async fn expired_groups(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<GroupBuy>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM group_buys WHERE status = 'open' AND expires_at <= ?1
                     ORDER BY expires_at LIMIT ?2",
                    params![micros(now), i64::from(limit)],
                    |r| row::group_buy(r),
                )
            })
            .await
    }

    async fn fail_group(
        &self,
        id: &str,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (id, event) = (id.to_string(), event.cloned());
        self.engine
            .write(move |c| {
                let failed = exec(
                    c,
                    "UPDATE group_buys SET status = 'failed', failed_at = ?1, updated_at = ?1
                     WHERE id = ?2 AND status = 'open' AND expires_at <= ?1",
                    params![micros(now), id],
                )?;
                if failed == 0 {
                    return Ok(false);
                }
                if let Some(e) = &event {
                    insert_event(c, e)?;
                }
                Ok(true)
            })
            .await
    }

    async fn groups_to_settle(&self, limit: u32) -> Result<Vec<GroupBuy>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM group_buys WHERE status = 'failed' AND settled_at IS NULL
                     ORDER BY failed_at LIMIT ?1",
                    [i64::from(limit)],
                    |r| row::group_buy(r),
                )
            })
            .await
    }

    async fn mark_group_settled(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let id = id.to_string();
        self.engine
            .write(move |c| {
                exec(
                    c,
                    "UPDATE group_buys SET settled_at = ?1, updated_at = ?1
                     WHERE id = ?2 AND status = 'failed' AND settled_at IS NULL",
                    params![micros(now), id],
                )
                .map(drop)
            })
            .await
    }

    async fn insert_qr_code(&self, qr: &QrCode) -> Result<()> {
        let qr = qr.clone();
        self.engine
            .write(move |c| {
                exec_unique(
                    c,
                    "INSERT INTO qr_codes (id, merchant_id, app_id, name, description,
                        amount_minor, currency, notify_url, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        qr.id,
                        qr.merchant_id,
                        qr.app_id,
                        qr.name,
                        qr.description,
                        qr.amount,
                        qr.currency.as_str(),
                        qr.notify_url,
                        micros(qr.created_at),
                    ],
                    "qr code",
                )
                .map(drop)
            })
            .await
    }

    async fn qr_code(&self, id: &str) -> Result<Option<QrCode>> {
        self.engine
            .read(|c| {
                one(c, "SELECT * FROM qr_codes WHERE id = ?1", [id], |r| {
                    row::qr_code(r)
                })
            })
            .await
    }

    async fn insert_checkout(&self, k: &Checkout) -> Result<CheckoutInserted> {
        let k = k.clone();
        self.engine
            .write(move |c| {
                let inserted = exec_unique(
                    c,
                    "INSERT INTO checkouts (id, merchant_id, app_id, merchant_order_no,
                        amount_minor, currency, description, notify_url, return_url, metadata,
                        request_hash, expires_at, created_at, updated_at, cashier_token)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                     ON CONFLICT (merchant_id, merchant_order_no) DO NOTHING",
                    params![
                        k.id,
                        k.merchant_id,
                        k.app_id,
                        k.merchant_order_no,
                        k.amount.minor,
                        k.amount.currency.as_str(),
                        k.description,
                        k.notify_url,
                        k.return_url,
                        json_text(&k.metadata),
                        k.request_hash,
                        micros(k.expires_at),
                        micros(k.created_at),
                        micros(k.updated_at),
                        k.cashier_token,
                    ],
                    "checkout",
                )?;
                if inserted == 1 {
                    return Ok(CheckoutInserted::New);
                }
                checkout_by_order_no(c, &k.merchant_id, &k.merchant_order_no)?
                    .map(CheckoutInserted::Existing)
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("checkout {}", k.merchant_order_no))
                    })
            })
            .await
    }

    async fn checkout(&self, id: &str) -> Result<Option<Checkout>> {
        self.engine
            .read(|c| {
                one(c, "SELECT * FROM checkouts WHERE id = ?1", [id], |r| {
                    row::checkout(r)
                })
            })
            .await
    }

    async fn checkout_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Checkout>> {
        self.engine
            .read(|c| checkout_by_order_no(c, merchant_id, merchant_order_no))
            .await
    }

    async fn checkout_attempts(&self, checkout_id: &str) -> Result<Vec<Payment>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM payments WHERE checkout_id = ?1 ORDER BY id
                     LIMIT ?2",
                    params![checkout_id, i64::from(MAX_CHECKOUT_ATTEMPTS)],
                    |r| row::payment(r),
                )
            })
            .await
    }

    async fn checkouts_to_close(&self, limit: u32) -> Result<Vec<Checkout>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM checkouts
                     WHERE winner_payment_id IS NOT NULL AND attempts_closed_at IS NULL
                     ORDER BY won_at LIMIT ?1",
                    [i64::from(limit)],
                    |r| row::checkout(r),
                )
            })
            .await
    }

    async fn mark_checkout_attempts_closed(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let id = id.to_string();
        self.engine
            .write(move |c| {
                exec(
                    c,
                    "UPDATE checkouts SET attempts_closed_at = ?1, updated_at = ?1
                     WHERE id = ?2 AND attempts_closed_at IS NULL",
                    params![micros(now), id],
                )
                .map(drop)
            })
            .await
    }

    async fn open_duplicates(&self, limit: u32) -> Result<Vec<CheckoutDuplicate>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM checkout_duplicates WHERE resolved_at IS NULL
                     ORDER BY created_at LIMIT ?1",
                    [i64::from(limit)],
                    |r| row::checkout_duplicate(r),
                )
            })
            .await
    }

    async fn checkout_duplicate(
        &self,
        payment_id: &PaymentId,
    ) -> Result<Option<CheckoutDuplicate>> {
        self.engine
            .read(|c| {
                one(
                    c,
                    "SELECT * FROM checkout_duplicates WHERE payment_id = ?1",
                    [payment_id.as_str()],
                    |r| row::checkout_duplicate(r),
                )
            })
            .await
    }

    async fn resolve_duplicate(
        &self,
        payment_id: &PaymentId,
        refund_id: Option<&str>,
        event: &NewEvent,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (id, refund_id, event) = (
            payment_id.clone(),
            refund_id.map(str::to_string),
            event.clone(),
        );
        self.engine
            .write(move |c| {
                let resolved = exec(
                    c,
                    "UPDATE checkout_duplicates SET refund_id = ?1, resolved_at = ?2
                     WHERE payment_id = ?3 AND resolved_at IS NULL",
                    params![refund_id, micros(now), id.as_str()],
                )?;
                if resolved == 0 {
                    return Ok(false);
                }
                insert_event(c, &event)?;
                Ok(true)
            })
            .await
    }

    async fn transition_refund(
        &self,
        id: &str,
        from: RefundStatus,
        to: RefundStatus,
        patch: &RefundPatch,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<RefundTransition> {
        let (id, patch, event) = (id.to_owned(), patch.clone(), event.cloned());
        self.engine
            .write(move |c| {
                let after = one(
                    c,
                    "UPDATE refunds SET status = ?1, updated_at = ?2,
                        channel_refund_no = COALESCE(?3, channel_refund_no),
                        failure_reason = COALESCE(?4, failure_reason),
                        refunded_at = COALESCE(?5, refunded_at)
                     WHERE id = ?6 AND status = ?7
                     RETURNING *",
                    params![
                        to.as_str(),
                        micros(now),
                        patch.channel_refund_no,
                        patch.failure_reason,
                        patch.refunded_at.map(micros),
                        id,
                        from.as_str(),
                    ],
                    |r| row::refund(r),
                )?;
                let Some(after) = after else {
                    return match refund_by_id(c, &id)? {
                        Some(current) => Ok(RefundTransition::Unchanged(current)),
                        None => Err(StoreError::NotFound(format!("refund {id}"))),
                    };
                };
                if to == RefundStatus::Succeeded {
                    let account = one(
                        c,
                        "UPDATE payments SET refunded_minor = refunded_minor + ?1 WHERE id = ?2
                         RETURNING channel_account_id",
                        params![after.amount.minor, after.payment_id.as_str()],
                        |r| r.text("channel_account_id"),
                    )?
                    .ok_or_else(|| StoreError::NotFound(format!("payment {}", after.payment_id)))?;
                    insert_postings(c, &ledger::refund(&after, &account, now))?;
                }
                if let Some(e) = &event {
                    insert_event(c, e)?;
                }
                Ok(RefundTransition::Applied(after))
            })
            .await
    }

    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DueRefund>> {
        let until = lease_end(now, lease)?;
        self.engine
            .write(move |c| {
                all(
                    c,
                    "UPDATE refunds SET poll_locked_until = ?2
                     WHERE id IN (
                        SELECT id FROM refunds
                        WHERE id IN (
                            SELECT id FROM (
                                SELECT id FROM refunds
                                WHERE status = 'processing' AND next_poll_at <= ?1
                                  AND (poll_locked_until IS NULL OR poll_locked_until <= ?1)
                                ORDER BY next_poll_at LIMIT ?5)
                            UNION SELECT id FROM (
                                SELECT id FROM refunds
                                WHERE status = 'processing' AND next_poll_at IS NULL
                                  AND created_at <= ?3
                                  AND (poll_locked_until IS NULL OR poll_locked_until <= ?1)
                                ORDER BY created_at LIMIT ?5))
                        ORDER BY COALESCE(next_poll_at, created_at), id
                        LIMIT ?4)
                     RETURNING *",
                    params![
                        micros(now),
                        micros(until),
                        micros(first_poll_before),
                        i64::from(limit),
                        claim_window(limit),
                    ],
                    |r| {
                        Ok(DueRefund {
                            refund: row::refund(r)?,
                            poll_attempts: r.int32("poll_attempts")?,
                        })
                    },
                )
            })
            .await
    }

    async fn schedule_refund_poll(
        &self,
        id: &str,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()> {
        let id = id.to_owned();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE refunds SET poll_attempts = ?1, next_poll_at = ?2,
                        poll_locked_until = NULL
                     WHERE id = ?3",
                    params![attempts, micros(next_poll_at), id],
                )?;
                updated(rows, "refund", &id)
            })
            .await
    }

    async fn claim_due_payments(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DuePayment>> {
        let until = lease_end(now, lease)?;
        // Selecting and leasing in one statement of the one writer: they
        // cannot interleave with another claimer.
        self.engine
            .write(move |c| {
                all(
                    c,
                    "UPDATE payments SET poll_locked_until = ?2
                     WHERE id IN (
                        SELECT id FROM payments
                        WHERE id IN (
                            SELECT id FROM (
                                SELECT id FROM payments
                                WHERE status IN ('created', 'pending') AND next_poll_at <= ?1
                                  AND (poll_locked_until IS NULL OR poll_locked_until <= ?1)
                                ORDER BY next_poll_at LIMIT ?5)
                            UNION SELECT id FROM (
                                SELECT id FROM payments
                                WHERE status IN ('created', 'pending') AND next_poll_at IS NULL
                                  AND created_at <= ?3
                                  AND (poll_locked_until IS NULL OR poll_locked_until <= ?1)
                                ORDER BY created_at LIMIT ?5)
                            UNION SELECT id FROM (
                                SELECT id FROM payments
                                WHERE status IN ('created', 'pending') AND next_poll_at IS NULL
                                  AND expires_at <= ?1
                                  AND (poll_locked_until IS NULL OR poll_locked_until <= ?1)
                                ORDER BY expires_at LIMIT ?5))
                        ORDER BY COALESCE(next_poll_at, created_at), id
                        LIMIT ?4)
                     RETURNING *",
                    params![
                        micros(now),
                        micros(until),
                        micros(first_poll_before),
                        i64::from(limit),
                        claim_window(limit),
                    ],
                    |r| {
                        Ok(DuePayment {
                            payment: row::payment(r)?,
                            poll_attempts: r.int32("poll_attempts")?,
                        })
                    },
                )
            })
            .await
    }

    async fn schedule_payment_poll(
        &self,
        id: &PaymentId,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()> {
        let id = id.clone();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE payments SET poll_attempts = ?1, next_poll_at = ?2,
                        poll_locked_until = NULL
                     WHERE id = ?3",
                    params![attempts, micros(next_poll_at), id.as_str()],
                )?;
                updated(rows, "payment", id.as_str())
            })
            .await
    }

    async fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        claim: &EventClaim,
    ) -> Result<Vec<OutboxEvent>> {
        let until = lease_end(now, lease)?;
        let skip = serde_json::to_string(&claim.skip_merchants)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (limit, per_merchant) = (i64::from(claim.limit), i64::from(claim.per_merchant.max(1)));
        let window = claim_window(claim.limit);
        // One statement of the one writer: selecting and leasing cannot
        // interleave with another claimer. The window ranks each merchant's
        // due events so no merchant takes more than its share.
        let mut events = self
            .engine
            .write(move |c| {
                all(
                    c,
                    "UPDATE events SET locked_until = ?2
                     WHERE id IN (
                        SELECT id FROM (
                            SELECT id, next_attempt_at, created_at,
                                   ROW_NUMBER() OVER (PARTITION BY merchant_id
                                       ORDER BY next_attempt_at, created_at, id) AS nth
                            FROM (
                                SELECT id, merchant_id, next_attempt_at, created_at FROM events
                                WHERE delivered_at IS NULL AND dead = 0 AND next_attempt_at <= ?1
                                  AND (locked_until IS NULL OR locked_until <= ?1)
                                  AND merchant_id NOT IN (SELECT value FROM json_each(?5))
                                ORDER BY next_attempt_at LIMIT ?6))
                        WHERE nth <= ?4
                        ORDER BY next_attempt_at, created_at, id
                        LIMIT ?3)
                     RETURNING *",
                    params![
                        micros(now),
                        micros(until),
                        limit,
                        per_merchant,
                        skip,
                        window
                    ],
                    |r| row::event(r),
                )
            })
            .await?;
        sort_due(&mut events);
        Ok(events)
    }

    async fn renew_event_lease(&self, id: &str, until: DateTime<Utc>) -> Result<bool> {
        let id = id.to_owned();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE events SET locked_until = ?2
                     WHERE id = ?1 AND delivered_at IS NULL AND dead = 0",
                    params![id, micros(until)],
                )?;
                Ok(rows == 1)
            })
            .await
    }

    async fn mark_event_delivered(
        &self,
        id: &str,
        attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = id.to_owned();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE events SET delivered_at = COALESCE(delivered_at, ?2),
                        attempts = ?3, locked_until = NULL
                     WHERE id = ?1",
                    params![id, micros(now), attempts],
                )?;
                event_updated(rows, &id)
            })
            .await
    }

    async fn mark_event_failed(
        &self,
        id: &str,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE events SET attempts = ?2, next_attempt_at = ?3, last_error = ?4,
                        locked_until = NULL
                     WHERE id = ?1",
                    params![id, attempts, micros(next_attempt_at), error],
                )?;
                event_updated(rows, &id)
            })
            .await
    }

    async fn mark_event_dead(&self, id: &str, attempts: i32, error: &str) -> Result<()> {
        let (id, error) = (id.to_owned(), error.to_owned());
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE events SET dead = 1, attempts = ?2, last_error = ?3,
                        locked_until = NULL
                     WHERE id = ?1",
                    params![id, attempts, error],
                )?;
                event_updated(rows, &id)
            })
            .await
    }

    async fn event(&self, id: &str) -> Result<Option<OutboxEvent>> {
        self.engine
            .read(|c| one(c, EVENT_BY_ID, [id], |r| row::event(r)))
            .await
    }

    async fn events_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<OutboxEvent>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM events WHERE payment_id = ?1 ORDER BY created_at, id",
                    [payment_id.as_str()],
                    |r| row::event(r),
                )
            })
            .await
    }

    async fn undelivered_events(
        &self,
        merchant_id: Option<&str>,
        dead_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>> {
        let merchant_id = merchant_id.map(str::to_owned);
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM events
                     WHERE delivered_at IS NULL
                       AND (?1 IS NULL OR merchant_id = ?1)
                       AND (dead = 1 OR NOT ?2)
                     ORDER BY created_at, id
                     LIMIT ?3",
                    params![merchant_id, dead_only, i64::from(limit)],
                    |r| row::event(r),
                )
            })
            .await
    }

    async fn retry_event(&self, id: &str, now: DateTime<Utc>) -> Result<OutboxEvent> {
        let id = id.to_owned();
        self.engine
            .write(move |c| {
                let retried = one(
                    c,
                    "UPDATE events SET dead = 0, attempts = 0, next_attempt_at = ?2
                     WHERE id = ?1 AND delivered_at IS NULL
                     RETURNING *",
                    params![id, micros(now)],
                    |r| row::event(r),
                )?;
                match retried {
                    Some(event) => Ok(event),
                    None if one(c, EVENT_BY_ID, [&id], |_| Ok(()))?.is_some() => {
                        Err(StoreError::Invalid(format!(
                            "event {id} was delivered; it is never sent again"
                        )))
                    }
                    None => Err(StoreError::NotFound(format!("event {id}"))),
                }
            })
            .await
    }

    async fn seal_audit(&self, limit: u32) -> Result<u64> {
        // The writer runs one transaction at a time: this is the only sealer.
        self.engine
            .write(move |c| {
                let last = one(
                    c,
                    "SELECT chain_pos, hash FROM audit_log WHERE chain_pos IS NOT NULL
                     ORDER BY chain_pos DESC LIMIT 1",
                    [],
                    |r| Ok((r.int("chain_pos")?, r.text("hash")?)),
                )?;
                let (mut pos, mut prev) =
                    last.unwrap_or_else(|| (0, crate::audit::GENESIS.to_string()));
                let rows = all(
                    c,
                    "SELECT * FROM audit_log WHERE chain_pos IS NULL ORDER BY seq LIMIT ?1",
                    [i64::from(limit)],
                    |r| row::audit_entry(r),
                )?;
                for e in &rows {
                    pos += 1;
                    let hash = crate::audit::entry_hash(&prev, pos, e);
                    let n = exec(
                        c,
                        "UPDATE audit_log SET chain_pos = ?1, prev_hash = ?2, hash = ?3
                         WHERE seq = ?4 AND chain_pos IS NULL",
                        params![pos, prev, hash, e.seq],
                    )?;
                    shared::sealed_once(n, e.seq)?;
                    prev = hash;
                }
                Ok(rows.len() as u64)
            })
            .await
    }

    async fn audit_chain(
        &self,
        after_pos: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM audit_log WHERE chain_pos > ?1 ORDER BY chain_pos LIMIT ?2",
                    params![after_pos, i64::from(limit)],
                    |r| row::audit_entry(r),
                )
            })
            .await
    }

    async fn audit_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM audit_log WHERE at >= ?1 AND at < ?2 AND seq > ?3
                     ORDER BY seq LIMIT ?4",
                    params![micros(from), micros(to), after_seq, i64::from(limit)],
                    |r| row::audit_entry(r),
                )
            })
            .await
    }

    async fn audit_head(&self) -> Result<Option<crate::audit::AuditEntry>> {
        self.engine
            .read(|c| {
                one(
                    c,
                    "SELECT * FROM audit_log WHERE chain_pos IS NOT NULL
                     ORDER BY chain_pos DESC LIMIT 1",
                    [],
                    |r| row::audit_entry(r),
                )
            })
            .await
    }

    async fn audit_unsealed(&self) -> Result<i64> {
        self.engine
            .scan(|c| {
                Ok(
                    c.prepare_cached("SELECT COUNT(*) FROM audit_log WHERE chain_pos IS NULL")?
                        .query_row([], |r| r.get(0))?,
                )
            })
            .await
    }

    async fn audit_of(&self, subject_id: &str) -> Result<Vec<crate::audit::AuditEntry>> {
        self.engine
            .read(|c| {
                all(
                    c,
                    "SELECT * FROM audit_log WHERE subject_id = ?1 ORDER BY seq",
                    [subject_id],
                    |r| row::audit_entry(r),
                )
            })
            .await
    }

    async fn insert_reconciliation(&self, run: &ReconciliationRun) -> Result<()> {
        let run = run.clone();
        self.engine
            .write(move |c| {
                exec_unique(
                    c,
                    &format!("{INSERT_RECONCILIATION} VALUES {RECONCILIATION_VALUES}"),
                    rusqlite::params_from_iter(reconciliation_params(&run)),
                    "reconciliation",
                )
                .map(drop)
            })
            .await
    }

    async fn claim_daily_reconciliation(
        &self,
        run: &ReconciliationRun,
        retry_failed_before: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let run = run.clone();
        self.engine
            .write(move |c| {
                let mut p = reconciliation_params(&run);
                p.push(Box::new(micros(retry_failed_before)));
                one(
                    c,
                    &format!(
                        "{INSERT_RECONCILIATION} VALUES {RECONCILIATION_VALUES}
                         ON CONFLICT (channel_account_id, bill_date) WHERE trigger_kind = 'daily'
                         DO UPDATE SET status = 'running', started_at = excluded.started_at,
                             finished_at = NULL, error = NULL
                         WHERE reconciliations.status = 'failed'
                           AND reconciliations.finished_at < ?14
                         RETURNING id"
                    ),
                    rusqlite::params_from_iter(p),
                    |r| r.text("id"),
                )
            })
            .await
    }

    async fn finish_reconciliation(&self, run: &ReconciliationRun) -> Result<()> {
        let run = run.clone();
        self.engine
            .write(move |c| {
                let n = exec(
                    c,
                    "UPDATE reconciliations SET status = ?2, matched = ?3, discrepancy_count = ?4,
                        discrepancies = ?5, error = ?6, finished_at = ?7
                     WHERE id = ?1 AND status = 'running'",
                    params![
                        run.id,
                        run.status.as_str(),
                        run.matched,
                        run.discrepancy_count,
                        json_text(&run.discrepancies),
                        run.error,
                        run.finished_at.map(micros),
                    ],
                )?;
                if n == 1 {
                    return Ok(());
                }
                let current = one(
                    c,
                    "SELECT * FROM reconciliations WHERE id = ?1",
                    [&run.id],
                    |r| row::reconciliation(r),
                )?;
                shared::not_finished(current, &run.id)
            })
            .await
    }

    async fn reconciliation(&self, id: &str) -> Result<Option<ReconciliationRun>> {
        self.engine
            .read(|c| {
                one(
                    c,
                    "SELECT * FROM reconciliations WHERE id = ?1",
                    [id],
                    |r| row::reconciliation(r),
                )
            })
            .await
    }

    async fn reconciliations(
        &self,
        channel_account_id: &str,
        bill_date: chrono::NaiveDate,
    ) -> Result<Vec<ReconciliationRun>> {
        let (account, date) = (channel_account_id.to_owned(), bill_date.to_string());
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM reconciliations WHERE channel_account_id = ?1 AND bill_date = ?2
                     ORDER BY started_at DESC, id DESC",
                    [&account, &date],
                    |r| row::reconciliation(r),
                )
            })
            .await
    }

    async fn settled_payments(&self, q: &SettledQuery) -> Result<Vec<Payment>> {
        let q = q.clone();
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT * FROM payments
                     WHERE channel_account_id = ?1 AND status = 'succeeded'
                       AND paid_at >= ?2 AND paid_at < ?3 AND (?4 IS NULL OR id > ?4)
                     ORDER BY id LIMIT ?5",
                    params![
                        q.channel_account_id,
                        micros(q.from),
                        micros(q.to),
                        q.after,
                        i64::from(q.limit)
                    ],
                    |r| row::payment(r),
                )
            })
            .await
    }

    async fn settled_refunds(&self, q: &SettledQuery) -> Result<Vec<Refund>> {
        let q = q.clone();
        self.engine
            .scan(move |c| {
                all(
                    c,
                    "SELECT r.* FROM refunds r JOIN payments p ON p.id = r.payment_id
                     WHERE p.channel_account_id = ?1 AND r.status = 'succeeded'
                       AND r.refunded_at >= ?2 AND r.refunded_at < ?3
                       AND (?4 IS NULL OR r.id > ?4)
                     ORDER BY r.id LIMIT ?5",
                    params![
                        q.channel_account_id,
                        micros(q.from),
                        micros(q.to),
                        q.after,
                        i64::from(q.limit)
                    ],
                    |r| row::refund(r),
                )
            })
            .await
    }

    async fn balances(&self, merchant_id: &str) -> Result<Vec<AccountBalance>> {
        let merchant_id = merchant_id.to_owned();
        self.engine
            .scan(move |c| {
                all(c, ledger::BALANCES, [&merchant_id], |r| {
                    row::account_balance(r)
                })
            })
            .await
    }

    async fn payment_postings(&self, payment_id: &PaymentId) -> Result<Vec<Posting>> {
        self.engine
            .read(|c| {
                all(c, ledger::PAYMENT_POSTINGS, [payment_id.as_str()], |r| {
                    row::posting(r)
                })
            })
            .await
    }

    async fn post_fee(
        &self,
        payment_id: &PaymentId,
        fee: i64,
        at: DateTime<Utc>,
    ) -> Result<ledger::FeePosted> {
        let id = payment_id.clone();
        self.engine
            .write(move |c| {
                let payment = payment_by_id(c, id.as_str())?
                    .ok_or_else(|| StoreError::NotFound(format!("payment {id}")))?;
                shared::check_fee(&payment, fee)?;
                let before: Option<i64> = c
                    .prepare_cached(ledger::POSTED_FEE)?
                    .query_row([ledger::fee_txn(id.as_str())], |r| r.get("fee"))?;
                // The writer runs one transaction at a time: nothing can
                // post this fee between the read above and this insert.
                if before.is_none() {
                    insert_postings(c, &ledger::fee(&payment, fee, at))?;
                }
                Ok(shared::fee_outcome(before, fee))
            })
            .await
    }

    async fn ledger_check(&self, limit: u32) -> Result<LedgerCheck> {
        self.engine
            .scan(move |c| {
                // One snapshot for every check, so a payment settling
                // meanwhile cannot show as a mismatch between two of them.
                // Read only: dropping it rolls back.
                let c = &c.unchecked_transaction()?;
                let (postings, transactions) = one(c, ledger::COUNTS, [], |r| {
                    Ok((r.int("postings")?, r.int("transactions")?))
                })?
                .unwrap_or_default();
                let mut issues = Vec::new();
                for &(kind, sql) in ledger::CHECKS {
                    let sql = format!("{sql} LIMIT {limit}");
                    issues.extend(all(c, &sql, [], |r| row::ledger_issue(kind, r))?);
                }
                Ok(LedgerCheck {
                    transactions,
                    postings,
                    issues,
                })
            })
            .await
    }

    async fn idempotency_record(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        self.engine
            .read(|c| {
                one(
                    c,
                    "SELECT * FROM idempotency_keys WHERE merchant_id = ?1 AND key = ?2",
                    [merchant_id, key],
                    |r| row::idempotency_record(r),
                )
            })
            .await
    }

    async fn save_idempotency_record(&self, r: &IdempotencyRecord) -> Result<bool> {
        let r = r.clone();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "INSERT INTO idempotency_keys
                        (merchant_id, key, request_hash, status, body, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (merchant_id, key) DO NOTHING",
                    params![
                        r.merchant_id,
                        r.key,
                        r.request_hash,
                        i32::from(r.status),
                        r.body,
                        micros(r.created_at),
                    ],
                )?;
                Ok(rows == 1)
            })
            .await
    }

    async fn complete_idempotency_record(&self, r: &IdempotencyRecord) -> Result<bool> {
        let r = r.clone();
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "UPDATE idempotency_keys SET status = ?3, body = ?4
                     WHERE merchant_id = ?1 AND key = ?2 AND status = 0 AND created_at = ?5",
                    params![
                        r.merchant_id,
                        r.key,
                        i32::from(r.status),
                        r.body,
                        micros(r.created_at),
                    ],
                )?;
                Ok(rows == 1)
            })
            .await
    }

    async fn release_idempotency_key(
        &self,
        merchant_id: &str,
        key: &str,
        reserved_at: DateTime<Utc>,
    ) -> Result<bool> {
        let (merchant_id, key) = (merchant_id.to_owned(), key.to_owned());
        self.engine
            .write(move |c| {
                let rows = exec(
                    c,
                    "DELETE FROM idempotency_keys
                     WHERE merchant_id = ?1 AND key = ?2 AND status = 0 AND created_at = ?3",
                    params![merchant_id, key, micros(reserved_at)],
                )?;
                Ok(rows == 1)
            })
            .await
    }

    async fn purge_idempotency_records(&self, before: DateTime<Utc>) -> Result<u64> {
        self.engine
            .write(move |c| {
                exec(
                    c,
                    "DELETE FROM idempotency_keys WHERE created_at < ?1",
                    [micros(before)],
                )
            })
            .await
    }
}

fn payment_by_order_no(
    conn: &Connection,
    merchant_id: &str,
    merchant_order_no: &str,
) -> Result<Option<Payment>> {
    one(
        conn,
        "SELECT * FROM payments WHERE merchant_id = ?1 AND merchant_order_no = ?2",
        [merchant_id, merchant_order_no],
        |r| row::payment(r),
    )
}

fn refund_by_no(
    conn: &Connection,
    merchant_id: &str,
    merchant_refund_no: &str,
) -> Result<Option<Refund>> {
    one(
        conn,
        "SELECT * FROM refunds WHERE merchant_id = ?1 AND merchant_refund_no = ?2",
        [merchant_id, merchant_refund_no],
        |r| row::refund(r),
    )
}

/// Writes an outbox event inside the transaction of the change it reports.
const INSERT_RECONCILIATION: &str = "INSERT INTO reconciliations (id, merchant_id,
    channel_account_id, channel, bill_date, trigger_kind, status, matched, discrepancy_count,
    discrepancies, error, started_at, finished_at)";
const RECONCILIATION_VALUES: &str = "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// A run's columns as [`INSERT_RECONCILIATION`] lists them.
fn reconciliation_params(run: &ReconciliationRun) -> Vec<Box<dyn rusqlite::ToSql>> {
    vec![
        Box::new(run.id.clone()),
        Box::new(run.merchant_id.clone()),
        Box::new(run.channel_account_id.clone()),
        Box::new(run.channel.as_str()),
        Box::new(run.bill_date.to_string()),
        Box::new(run.trigger.clone()),
        Box::new(run.status.as_str()),
        Box::new(run.matched),
        Box::new(run.discrepancy_count),
        Box::new(json_text(&run.discrepancies)),
        Box::new(run.error.clone()),
        Box::new(micros(run.started_at)),
        Box::new(run.finished_at.map(micros)),
    ]
}

/// Inserts a payment row unless its order number is taken: 1 or 0 rows.
fn insert_payment_row(conn: &Connection, p: &Payment) -> Result<u64> {
    exec_unique(
        conn,
        "INSERT INTO payments (id, merchant_id, merchant_order_no, amount_minor,
            currency, channel, method, status, description, notify_url, payer,
            metadata, request_hash, channel_account_id, pay_params,
            channel_trade_no, paid_at, expires_at, created_at, updated_at, app_id,
            checkout_id, group_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
            ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)
         ON CONFLICT (merchant_id, merchant_order_no) DO NOTHING",
        params![
            p.id.as_str(),
            p.merchant_id,
            p.merchant_order_no,
            p.amount.minor,
            p.amount.currency.as_str(),
            p.channel.as_str(),
            p.method.as_str(),
            p.status.as_str(),
            p.description,
            p.notify_url,
            json_text(&p.payer),
            json_text(&p.metadata),
            p.request_hash,
            p.channel_account_id,
            p.pay_params.as_ref().map(json_text),
            p.channel_trade_no,
            p.paid_at.map(micros),
            micros(p.expires_at),
            micros(p.created_at),
            micros(p.updated_at),
            p.app_id,
            p.checkout_id,
            p.group_id,
        ],
        "payment",
    )
}

/// A checkout's attempt succeeded: it wins the checkout if nothing has yet,
/// else it is a duplicate to refund. Part of the success's transaction.
fn settle_attempt(
    conn: &Connection,
    checkout_id: &str,
    payment_id: &PaymentId,
    now: DateTime<Utc>,
) -> Result<()> {
    let won = exec(
        conn,
        "UPDATE checkouts SET winner_payment_id = ?1, won_at = ?2, updated_at = ?2
         WHERE id = ?3 AND winner_payment_id IS NULL",
        params![payment_id.as_str(), micros(now), checkout_id],
    )?;
    if won == 0 {
        exec(
            conn,
            "INSERT INTO checkout_duplicates (payment_id, checkout_id, created_at)
             VALUES (?1, ?2, ?3)",
            params![payment_id.as_str(), checkout_id, micros(now)],
        )?;
    }
    Ok(())
}

/// A group member's payment reached `to`: a success counts (and completes
/// the group, with its event, when it is the last seat paid before
/// expiry; after a failure it puts the group back to settle); a close or
/// failure gives the seat back while the group is open.
fn count_member(
    conn: &Connection,
    group_id: &str,
    to: PaymentStatus,
    event: Option<&NewEvent>,
    now: DateTime<Utc>,
) -> Result<()> {
    match to {
        PaymentStatus::Succeeded => {
            // SET expressions all see the row as it was.
            let (status, paid, size): (String, i64, i64) = conn
                .prepare_cached(
                    "UPDATE group_buys SET paid_count = paid_count + 1,
                        status = CASE WHEN status = 'open' AND paid_count + 1 >= size
                            AND ?2 <= expires_at THEN 'succeeded' ELSE status END,
                        succeeded_at = CASE WHEN status = 'open' AND paid_count + 1 >= size
                            AND ?2 <= expires_at THEN ?2 ELSE succeeded_at END,
                        settled_at = CASE WHEN status = 'failed' THEN NULL ELSE settled_at END,
                        updated_at = ?2
                     WHERE id = ?1
                     RETURNING status, paid_count, size",
                )?
                .query_row(params![group_id, micros(now)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            // paid_count reaches size once: this success completed the group.
            if status == "succeeded" && paid == size {
                if let Some(e) = event {
                    insert_event(conn, e)?;
                }
            }
        }
        PaymentStatus::Closed | PaymentStatus::Failed => {
            exec(
                conn,
                "UPDATE group_buys SET seats_taken = seats_taken - 1, updated_at = ?2
                 WHERE id = ?1 AND status = 'open'",
                params![group_id, micros(now)],
            )?;
        }
        PaymentStatus::Created | PaymentStatus::Pending => {}
    }
    Ok(())
}

fn group_by_id(conn: &Connection, id: &str) -> Result<Option<GroupBuy>> {
    one(conn, "SELECT * FROM group_buys WHERE id = ?1", [id], |r| {
        row::group_buy(r)
    })
}

fn checkout_by_order_no(
    conn: &Connection,
    merchant_id: &str,
    merchant_order_no: &str,
) -> Result<Option<Checkout>> {
    one(
        conn,
        "SELECT * FROM checkouts WHERE merchant_id = ?1 AND merchant_order_no = ?2",
        [merchant_id, merchant_order_no],
        |r| row::checkout(r),
    )
}

fn insert_postings(conn: &Connection, postings: &[Posting]) -> Result<()> {
    for p in postings {
        exec_unique(
            conn,
            ledger::INSERT_POSTING,
            params![
                p.txn_id,
                p.account.as_str(),
                p.merchant_id,
                p.channel_account_id,
                p.currency,
                p.debit,
                p.credit,
                p.payment_id,
                p.refund_id,
                micros(p.created_at),
            ],
            "ledger posting",
        )?;
    }
    Ok(())
}

fn insert_event(conn: &Connection, e: &NewEvent) -> Result<()> {
    exec_unique(
        conn,
        "INSERT INTO events (id, merchant_id, payment_id, refund_id, event_type, payload,
            notify_url, created_at, attempts, next_attempt_at, app_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?8, ?9)",
        params![
            e.id,
            e.merchant_id,
            e.payment_id.as_str(),
            e.refund_id,
            e.event_type,
            json_text(&e.payload),
            e.notify_url,
            micros(e.created_at),
            e.app_id,
        ],
        "event",
    )
    .map(drop)
}
