//! The PostgreSQL backend, for deployments with several paymux nodes.
//!
//! Compare-and-set updates rely on row locks (a concurrent UPDATE of the same
//! payment waits and then re-checks its WHERE clause), and outbox workers on
//! `FOR UPDATE SKIP LOCKED`, so any number of nodes can share one database.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use paymux_core::{ChannelKind, PaymentId, PaymentStatus, RefundStatus};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

use crate::ledger::{self, AccountBalance, LedgerCheck, Posting};
use crate::row::{self, get, Cols};
use crate::shared::{self, check_edge, claim_window, event_updated, lease_end, sort_due, updated};
use crate::{migrate, model::*, Result, Store, StoreError};

/// Advisory lock key ("auditsl" in ASCII) that admits one audit sealer at a time.
const AUDIT_SEAL_LOCK: i64 = 0x61_7564_6974_736c;

/// Connections each node keeps to PostgreSQL at most, unless configured.
pub const MAX_CONNECTIONS: u32 = 16;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, MAX_CONNECTIONS).await
    }

    /// Connects with a pool of at most `pool_size` connections (at least 1).
    pub async fn connect_with(url: &str, pool_size: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect(url)
            .await?;
        migrate::postgres(&pool).await?;
        Ok(PgStore { pool })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Cols for PgRow {
    fn text(&self, col: &str) -> Result<String> {
        get(self, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        get(self, col)
    }
    fn int(&self, col: &str) -> Result<i64> {
        get(self, col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        get(self, col)
    }
    fn int32(&self, col: &str) -> Result<i32> {
        get(self, col)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        get(self, col)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        get(self, col)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        get(self, col)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        get(self, col)
    }
    fn json(&self, col: &str) -> Result<serde_json::Value> {
        get(self, col)
    }
    fn opt_json(&self, col: &str) -> Result<Option<serde_json::Value>> {
        get(self, col)
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn backlog(&self) -> Result<Backlog> {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT
                (SELECT COUNT(*) FROM events WHERE delivered_at IS NULL AND NOT dead) AS undelivered,
                (SELECT COUNT(*) FROM events WHERE delivered_at IS NULL AND NOT (NOT dead)) AS dead,
                (SELECT MIN(created_at) FROM events WHERE delivered_at IS NULL AND NOT dead) AS oldest,
                (SELECT COUNT(*) FROM payments WHERE status IN ('created', 'pending')) AS open,
                (SELECT COUNT(*) FROM refunds WHERE status = 'processing') AS processing",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            undelivered_events: row.try_get("undelivered")?,
            dead_events: row.try_get("dead")?,
            oldest_undelivered: row.try_get::<Option<DateTime<Utc>>, _>("oldest")?,
            open_payments: row.try_get("open")?,
            processing_refunds: row.try_get("processing")?,
        })
    }

    async fn directory_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM directory_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        get(&row, "version")
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_merchant(&self, merchant: &Merchant, app: &App) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO merchants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&merchant.id)
            .bind(&merchant.name)
            .bind(merchant.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::unique(e, "merchant"))?;
        sqlx::query(
            "INSERT INTO apps (app_id, merchant_id, secret, created_at, previous_secret,
                previous_secret_expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&app.app_id)
        .bind(&app.merchant_id)
        .bind(&app.secret)
        .bind(app.created_at)
        .bind(&app.previous_secret)
        .bind(app.previous_secret_expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::unique(e, "app"))?;
        tx.commit().await?;
        Ok(())
    }

    async fn merchant(&self, id: &str) -> Result<Option<Merchant>> {
        let row = sqlx::query("SELECT * FROM merchants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::merchant).transpose()
    }

    async fn list_merchants(&self) -> Result<Vec<Merchant>> {
        let rows = sqlx::query("SELECT * FROM merchants ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row::merchant).collect()
    }

    async fn app(&self, app_id: &str) -> Result<Option<App>> {
        let row = sqlx::query("SELECT * FROM apps WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::app).transpose()
    }

    async fn merchant_apps(&self, merchant_id: &str) -> Result<Vec<App>> {
        let rows =
            sqlx::query("SELECT * FROM apps WHERE merchant_id = $1 ORDER BY created_at, app_id")
                .bind(merchant_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(row::app).collect()
    }

    async fn scrub(&self) -> Result<()> {
        // Rewrites the tables that hold secrets, so replaced values do not
        // survive as dead tuples. They are small; the lock is brief.
        sqlx::raw_sql("VACUUM FULL apps, channel_accounts")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_app(&self, app: &App) -> Result<()> {
        sqlx::query(
            "INSERT INTO apps (app_id, merchant_id, secret, created_at, previous_secret,
                previous_secret_expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&app.app_id)
        .bind(&app.merchant_id)
        .bind(&app.secret)
        .bind(app.created_at)
        .bind(&app.previous_secret)
        .bind(app.previous_secret_expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, "app"))?;
        Ok(())
    }

    async fn update_app_request_key(&self, app_id: &str, key: Option<&RequestKey>) -> Result<()> {
        let done = sqlx::query(
            "UPDATE apps SET request_key_alg = $2, request_key_pem = $3 WHERE app_id = $1",
        )
        .bind(app_id)
        .bind(key.map(|k| k.alg.as_str()))
        .bind(key.map(|k| k.public_key_pem.as_str()))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("app {app_id}")));
        }
        Ok(())
    }

    async fn update_app_client_cert(&self, app_id: &str, sha256: Option<&str>) -> Result<()> {
        let done = sqlx::query("UPDATE apps SET client_cert_sha256 = $2 WHERE app_id = $1")
            .bind(app_id)
            .bind(sha256)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("app {app_id}")));
        }
        Ok(())
    }

    async fn update_app_event_types(&self, app_id: &str, types: Option<&[String]>) -> Result<()> {
        let done = sqlx::query("UPDATE apps SET event_types = $2 WHERE app_id = $1")
            .bind(app_id)
            .bind(types.map(|t| serde_json::json!(t)))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("app {app_id}")));
        }
        Ok(())
    }

    async fn update_app_secrets(&self, app: &App) -> Result<()> {
        let rows = sqlx::query(
            "UPDATE apps SET secret = $2, previous_secret = $3,
                previous_secret_expires_at = $4 WHERE app_id = $1",
        )
        .bind(&app.app_id)
        .bind(&app.secret)
        .bind(&app.previous_secret)
        .bind(app.previous_secret_expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        updated(rows, "app", &app.app_id)
    }

    async fn list_channel_accounts(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Vec<ChannelAccount>> {
        let rows = sqlx::query(
            "SELECT * FROM channel_accounts WHERE $1::text IS NULL OR merchant_id = $1
             ORDER BY created_at, id",
        )
        .bind(merchant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::channel_account).collect()
    }

    async fn set_channel_account_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        let rows = sqlx::query("UPDATE channel_accounts SET enabled = $2 WHERE id = $1")
            .bind(id)
            .bind(enabled)
            .execute(&self.pool)
            .await?
            .rows_affected();
        updated(rows, "channel account", id)
    }

    async fn update_channel_account_config(
        &self,
        id: &str,
        config: &serde_json::Value,
    ) -> Result<()> {
        let rows = sqlx::query("UPDATE channel_accounts SET config = $2 WHERE id = $1")
            .bind(id)
            .bind(config)
            .execute(&self.pool)
            .await?
            .rows_affected();
        updated(rows, "channel account", id)
    }

    async fn insert_channel_account(&self, a: &ChannelAccount) -> Result<()> {
        sqlx::query(
            "INSERT INTO channel_accounts
                (id, merchant_id, channel, config, sandbox, enabled, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.id)
        .bind(&a.merchant_id)
        .bind(a.channel.as_str())
        .bind(&a.config)
        .bind(a.sandbox)
        .bind(a.enabled)
        .bind(a.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, "channel account"))?;
        Ok(())
    }

    async fn channel_account(&self, id: &str) -> Result<Option<ChannelAccount>> {
        let row = sqlx::query("SELECT * FROM channel_accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::channel_account).transpose()
    }

    async fn channel_account_for(
        &self,
        merchant_id: &str,
        channel: ChannelKind,
    ) -> Result<Option<ChannelAccount>> {
        let row = sqlx::query(
            "SELECT * FROM channel_accounts
             WHERE merchant_id = $1 AND channel = $2 AND enabled
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(merchant_id)
        .bind(channel.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row::channel_account).transpose()
    }

    async fn use_nonce(
        &self,
        app_id: &str,
        nonce: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        // A nonce whose earlier use has expired may be used again: the upsert
        // only overwrites an expired row, and reports a change iff it wrote.
        let changed = sqlx::query(
            "INSERT INTO nonces (app_id, nonce, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (app_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
             WHERE nonces.expires_at <= $4",
        )
        .bind(app_id)
        .bind(nonce)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn purge_nonces(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM nonces WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn insert_payment(&self, p: &Payment) -> Result<Inserted> {
        // ON CONFLICT waits for a concurrent insert of the same order to
        // finish, so exactly one of any number of racing inserts wins.
        let inserted = insert_payment_row(&self.pool, p).await?;
        if inserted == 1 {
            return Ok(Inserted::New);
        }
        // Payments are never deleted, so the row that won the conflict is there.
        self.payment_by_order_no(&p.merchant_id, &p.merchant_order_no)
            .await?
            .map(Inserted::Existing)
            .ok_or_else(|| StoreError::NotFound(format!("payment {}", p.merchant_order_no)))
    }

    async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>> {
        let row = sqlx::query("SELECT * FROM payments WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::payment).transpose()
    }

    async fn list_payments(&self, q: &PaymentQuery) -> Result<Vec<Payment>> {
        let rows = sqlx::query(
            "SELECT * FROM payments
             WHERE merchant_id = $1
               AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR channel = $3)
               AND ($4 IS NULL OR method = $4)
               AND ($5 IS NULL OR created_at >= $5)
               AND ($6 IS NULL OR created_at < $6)
               AND ($7 IS NULL OR left(merchant_order_no, length($7)) = $7)
               AND ($8 IS NULL OR id COLLATE \"C\" < $8)
             ORDER BY id COLLATE \"C\" DESC
             LIMIT $9",
        )
        .bind(&q.merchant_id)
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.channel.map(|c| c.as_str()))
        .bind(q.method.map(|m| m.as_str()))
        .bind(q.created_from)
        .bind(q.created_to)
        .bind(&q.order_no_prefix)
        .bind(q.starting_after.as_ref().map(|id| id.as_str()))
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::payment).collect()
    }

    async fn list_refunds(&self, q: &RefundQuery) -> Result<Vec<Refund>> {
        let rows = sqlx::query(
            "SELECT * FROM refunds
             WHERE merchant_id = $1
               AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR payment_id = $3)
               AND ($4 IS NULL OR created_at >= $4)
               AND ($5 IS NULL OR created_at < $5)
               AND ($6 IS NULL OR id COLLATE \"C\" < $6)
             ORDER BY id COLLATE \"C\" DESC
             LIMIT $7",
        )
        .bind(&q.merchant_id)
        .bind(q.status.map(|s| s.as_str()))
        .bind(q.payment_id.as_ref().map(|id| id.as_str()))
        .bind(q.created_from)
        .bind(q.created_to)
        .bind(&q.starting_after)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::refund).collect()
    }

    async fn payment_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Payment>> {
        let row =
            sqlx::query("SELECT * FROM payments WHERE merchant_id = $1 AND merchant_order_no = $2")
                .bind(merchant_id)
                .bind(merchant_order_no)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(row::payment).transpose()
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
        // One statement, one round trip: the compare-and-set and, only if it
        // matched, its outbox row and postings, committed together or not
        // at all. A concurrent transition of the same payment blocks on the
        // row lock and, once the winner commits, re-checks `status = from`
        // and misses. Payments of a checkout or a group need more (their
        // checkout or group changes with them): the plain statement leaves
        // them alone, and the linked one, tried after, does it all.
        let step = TransitionStep {
            id,
            from,
            to,
            patch,
            event,
            now,
        };
        if let Some(after) = self.transition_with(false, &step).await? {
            return Ok(Transition::Applied(row::payment(&after)?));
        }
        let current = self
            .payment(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("payment {id}")))?;
        let linked = current.checkout_id.is_some() || current.group_id.is_some();
        if current.status != from || !linked {
            return Ok(Transition::Unchanged(current));
        }
        match self.transition_with(true, &step).await? {
            Some(after) => Ok(Transition::Applied(row::payment(&after)?)),
            None => match self.payment(id).await? {
                Some(current) => Ok(Transition::Unchanged(current)),
                None => Err(StoreError::NotFound(format!("payment {id}"))),
            },
        }
    }

    async fn insert_refund(&self, r: &Refund) -> Result<RefundInserted> {
        let mut tx = self.pool.begin().await?;
        // The payment row lock serialises every refund of this payment: the
        // sum read below cannot change until this transaction ends.
        let payment = sqlx::query("SELECT * FROM payments WHERE id = $1 FOR UPDATE")
            .bind(r.payment_id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("payment {}", r.payment_id)))?;
        let payment = row::payment(&payment)?;
        let existing =
            sqlx::query("SELECT * FROM refunds WHERE merchant_id = $1 AND merchant_refund_no = $2")
                .bind(&r.merchant_id)
                .bind(&r.merchant_refund_no)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(existing) = existing {
            tx.rollback().await?;
            return Ok(RefundInserted::Existing(row::refund(&existing)?));
        }
        let held: i64 = get(
            &sqlx::query(
                "SELECT COALESCE(SUM(amount_minor), 0)::BIGINT AS held FROM refunds
                 WHERE payment_id = $1 AND status <> 'failed'",
            )
            .bind(r.payment_id.as_str())
            .fetch_one(&mut *tx)
            .await?,
            "held",
        )?;
        if let Some(verdict) = shared::refund_verdict(&payment, held, r)? {
            tx.rollback().await?;
            return Ok(verdict);
        }
        let inserted = sqlx::query(
            "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_no, amount_minor,
                currency, status, reason, notify_url, request_hash, channel_refund_no,
                failure_reason, refunded_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&r.id)
        .bind(&r.merchant_id)
        .bind(r.payment_id.as_str())
        .bind(&r.merchant_refund_no)
        .bind(r.amount.minor)
        .bind(r.amount.currency.as_str())
        .bind(r.status.as_str())
        .bind(&r.reason)
        .bind(&r.notify_url)
        .bind(&r.request_hash)
        .bind(&r.channel_refund_no)
        .bind(&r.failure_reason)
        .bind(r.refunded_at)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::unique(e, "refund"));
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                Ok(RefundInserted::New)
            }
            // The same merchant_refund_no, for another payment, committed
            // meanwhile: that refund holds the number.
            Err(StoreError::Duplicate(_)) => {
                tx.rollback().await?;
                self.refund_by_no(&r.merchant_id, &r.merchant_refund_no)
                    .await?
                    .map(RefundInserted::Existing)
                    .ok_or_else(|| StoreError::Corrupt("refund vanished after a conflict".into()))
            }
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, id: &str) -> Result<Option<Refund>> {
        let row = sqlx::query("SELECT * FROM refunds WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::refund).transpose()
    }

    async fn refund_by_no(
        &self,
        merchant_id: &str,
        merchant_refund_no: &str,
    ) -> Result<Option<Refund>> {
        let row =
            sqlx::query("SELECT * FROM refunds WHERE merchant_id = $1 AND merchant_refund_no = $2")
                .bind(merchant_id)
                .bind(merchant_refund_no)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(row::refund).transpose()
    }

    async fn refunds_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<Refund>> {
        let rows =
            sqlx::query("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY created_at, id")
                .bind(payment_id.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(row::refund).collect()
    }

    async fn insert_group(&self, g: &GroupBuy) -> Result<GroupInserted> {
        let inserted = sqlx::query(
            "INSERT INTO group_buys (id, merchant_id, app_id, merchant_group_no, size,
                amount_minor, currency, notify_url, request_hash, status, expires_at,
                created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (merchant_id, merchant_group_no) DO NOTHING",
        )
        .bind(&g.id)
        .bind(&g.merchant_id)
        .bind(&g.app_id)
        .bind(&g.merchant_group_no)
        .bind(g.size)
        .bind(g.amount)
        .bind(g.currency.as_str())
        .bind(&g.notify_url)
        .bind(&g.request_hash)
        .bind(g.status.as_str())
        .bind(g.expires_at)
        .bind(g.created_at)
        .bind(g.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, "group"))?
        .rows_affected();
        if inserted == 1 {
            return Ok(GroupInserted::New);
        }
        let row = sqlx::query(
            "SELECT * FROM group_buys WHERE merchant_id = $1 AND merchant_group_no = $2",
        )
        .bind(&g.merchant_id)
        .bind(&g.merchant_group_no)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(row::group_buy)
            .transpose()?
            .map(GroupInserted::Existing)
            .ok_or_else(|| StoreError::NotFound(format!("group {}", g.merchant_group_no)))
    }

    async fn group(&self, id: &str) -> Result<Option<GroupBuy>> {
        let row = sqlx::query("SELECT * FROM group_buys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::group_buy).transpose()
    }

    async fn group_members(&self, id: &str) -> Result<Vec<Payment>> {
        let rows = sqlx::query("SELECT * FROM payments WHERE group_id = $1 ORDER BY id LIMIT 1000")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row::payment).collect()
    }

    async fn join_group(&self, p: &Payment, now: DateTime<Utc>) -> Result<Joined> {
        let group_id = p
            .group_id
            .as_deref()
            .ok_or_else(|| StoreError::Invalid("a member's payment names its group".into()))?;
        if let Some(existing) = self
            .payment_by_order_no(&p.merchant_id, &p.merchant_order_no)
            .await?
        {
            return Ok(Joined::Existing(existing));
        }
        let mut tx = self.pool.begin().await?;
        // The group's row lock orders concurrent joins: each sees the seats
        // the ones before it took.
        let took = sqlx::query(
            "UPDATE group_buys SET seats_taken = seats_taken + 1, updated_at = $1
             WHERE id = $2 AND status = 'open' AND expires_at > $1 AND seats_taken < size",
        )
        .bind(now)
        .bind(group_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if took == 0 {
            tx.rollback().await?;
            let g = self
                .group(group_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("group {group_id}")))?;
            return Ok(if g.status == GroupStatus::Open && g.expires_at > now {
                Joined::Full
            } else {
                Joined::Closed(g.status)
            });
        }
        if insert_payment_row(&mut *tx, p).await? == 0 {
            // The same order number won meanwhile: its seat is the one kept.
            tx.rollback().await?;
            return self
                .payment_by_order_no(&p.merchant_id, &p.merchant_order_no)
                .await?
                .map(Joined::Existing)
                .ok_or_else(|| StoreError::NotFound(format!("payment {}", p.merchant_order_no)));
        }
        tx.commit().await?;
        Ok(Joined::New)
    }

    async fn expired_groups(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<GroupBuy>> {
        let rows = sqlx::query(
            "SELECT * FROM group_buys WHERE status = 'open' AND expires_at <= $1
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::group_buy).collect()
    }

    async fn fail_group(
        &self,
        id: &str,
        event: Option<&NewEvent>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query(
            "UPDATE group_buys SET status = 'failed', failed_at = $1, updated_at = $1
             WHERE id = $2 AND status = 'open' AND expires_at <= $1",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if failed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(e) = event {
            insert_event(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn groups_to_settle(&self, limit: u32) -> Result<Vec<GroupBuy>> {
        let rows = sqlx::query(
            "SELECT * FROM group_buys WHERE status = 'failed' AND settled_at IS NULL
             ORDER BY failed_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::group_buy).collect()
    }

    async fn mark_group_settled(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE group_buys SET settled_at = $1, updated_at = $1
             WHERE id = $2 AND status = 'failed' AND settled_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_qr_code(&self, qr: &QrCode) -> Result<()> {
        sqlx::query(
            "INSERT INTO qr_codes (id, merchant_id, app_id, name, description, amount_minor,
                currency, notify_url, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&qr.id)
        .bind(&qr.merchant_id)
        .bind(&qr.app_id)
        .bind(&qr.name)
        .bind(&qr.description)
        .bind(qr.amount)
        .bind(qr.currency.as_str())
        .bind(&qr.notify_url)
        .bind(qr.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, "qr code"))?;
        Ok(())
    }

    async fn qr_code(&self, id: &str) -> Result<Option<QrCode>> {
        let row = sqlx::query("SELECT * FROM qr_codes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::qr_code).transpose()
    }

    async fn insert_checkout(&self, k: &Checkout) -> Result<CheckoutInserted> {
        let inserted = sqlx::query(
            "INSERT INTO checkouts (id, merchant_id, app_id, merchant_order_no, amount_minor,
                currency, description, notify_url, return_url, metadata, request_hash,
                expires_at, created_at, updated_at, cashier_token)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (merchant_id, merchant_order_no) DO NOTHING",
        )
        .bind(&k.id)
        .bind(&k.merchant_id)
        .bind(&k.app_id)
        .bind(&k.merchant_order_no)
        .bind(k.amount.minor)
        .bind(k.amount.currency.as_str())
        .bind(&k.description)
        .bind(&k.notify_url)
        .bind(&k.return_url)
        .bind(&k.metadata)
        .bind(&k.request_hash)
        .bind(k.expires_at)
        .bind(k.created_at)
        .bind(k.updated_at)
        .bind(&k.cashier_token)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::unique(e, "checkout"))?
        .rows_affected();
        if inserted == 1 {
            return Ok(CheckoutInserted::New);
        }
        self.checkout_by_order_no(&k.merchant_id, &k.merchant_order_no)
            .await?
            .map(CheckoutInserted::Existing)
            .ok_or_else(|| StoreError::NotFound(format!("checkout {}", k.merchant_order_no)))
    }

    async fn checkout(&self, id: &str) -> Result<Option<Checkout>> {
        let row = sqlx::query("SELECT * FROM checkouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::checkout).transpose()
    }

    async fn checkout_by_order_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Checkout>> {
        let row = sqlx::query(
            "SELECT * FROM checkouts WHERE merchant_id = $1 AND merchant_order_no = $2",
        )
        .bind(merchant_id)
        .bind(merchant_order_no)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row::checkout).transpose()
    }

    async fn checkout_attempts(&self, checkout_id: &str) -> Result<Vec<Payment>> {
        let rows =
            sqlx::query("SELECT * FROM payments WHERE checkout_id = $1 ORDER BY id LIMIT $2")
                .bind(checkout_id)
                .bind(i64::from(MAX_CHECKOUT_ATTEMPTS))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(row::payment).collect()
    }

    async fn checkouts_to_close(&self, limit: u32) -> Result<Vec<Checkout>> {
        let rows = sqlx::query(
            "SELECT * FROM checkouts
             WHERE winner_payment_id IS NOT NULL AND attempts_closed_at IS NULL
             ORDER BY won_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::checkout).collect()
    }

    async fn mark_checkout_attempts_closed(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE checkouts SET attempts_closed_at = $1, updated_at = $1
             WHERE id = $2 AND attempts_closed_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn open_duplicates(&self, limit: u32) -> Result<Vec<CheckoutDuplicate>> {
        let rows = sqlx::query(
            "SELECT * FROM checkout_duplicates WHERE resolved_at IS NULL
             ORDER BY created_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::checkout_duplicate).collect()
    }

    async fn checkout_duplicate(
        &self,
        payment_id: &PaymentId,
    ) -> Result<Option<CheckoutDuplicate>> {
        let row = sqlx::query("SELECT * FROM checkout_duplicates WHERE payment_id = $1")
            .bind(payment_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::checkout_duplicate).transpose()
    }

    async fn resolve_duplicate(
        &self,
        payment_id: &PaymentId,
        refund_id: Option<&str>,
        event: &NewEvent,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let resolved = sqlx::query(
            "UPDATE checkout_duplicates SET refund_id = $1, resolved_at = $2
             WHERE payment_id = $3 AND resolved_at IS NULL",
        )
        .bind(refund_id)
        .bind(now)
        .bind(payment_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if resolved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
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
        let mut tx = self.pool.begin().await?;
        let after = sqlx::query(
            "UPDATE refunds SET status = $1, updated_at = $2,
                channel_refund_no = COALESCE($3, channel_refund_no),
                failure_reason = COALESCE($4, failure_reason),
                refunded_at = COALESCE($5, refunded_at)
             WHERE id = $6 AND status = $7
             RETURNING *",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(&patch.channel_refund_no)
        .bind(&patch.failure_reason)
        .bind(patch.refunded_at)
        .bind(id)
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(after) = after else {
            tx.rollback().await?;
            return match self.refund(id).await? {
                Some(current) => Ok(RefundTransition::Unchanged(current)),
                None => Err(StoreError::NotFound(format!("refund {id}"))),
            };
        };
        let after = row::refund(&after)?;
        if to == RefundStatus::Succeeded {
            let account: String = sqlx::query_scalar(
                "UPDATE payments SET refunded_minor = refunded_minor + $1 WHERE id = $2
                 RETURNING channel_account_id",
            )
            .bind(after.amount.minor)
            .bind(after.payment_id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("payment {}", after.payment_id)))?;
            insert_postings(&mut tx, &ledger::refund(&after, &account, now)).await?;
        }
        if let Some(e) = event {
            insert_event(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(RefundTransition::Applied(after))
    }

    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DueRefund>> {
        let until = lease_end(now, lease)?;
        let rows = sqlx::query(
            "UPDATE refunds SET poll_locked_until = $2
             WHERE id IN (
                SELECT id FROM refunds
                WHERE id IN (
                    (SELECT id FROM refunds
                     WHERE status = 'processing' AND next_poll_at <= $1
                       AND (poll_locked_until IS NULL OR poll_locked_until <= $1)
                     ORDER BY next_poll_at LIMIT $5)
                    UNION (SELECT id FROM refunds
                     WHERE status = 'processing' AND next_poll_at IS NULL AND created_at <= $3
                       AND (poll_locked_until IS NULL OR poll_locked_until <= $1)
                     ORDER BY created_at LIMIT $5))
                  AND (poll_locked_until IS NULL OR poll_locked_until <= $1)
                ORDER BY COALESCE(next_poll_at, created_at), id
                LIMIT $4
                FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(now)
        .bind(until)
        .bind(first_poll_before)
        .bind(i64::from(limit))
        .bind(claim_window(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueRefund {
                    refund: row::refund(r)?,
                    poll_attempts: r.int32("poll_attempts")?,
                })
            })
            .collect()
    }

    async fn schedule_refund_poll(
        &self,
        id: &str,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE refunds SET poll_attempts = $1, next_poll_at = $2, poll_locked_until = NULL
             WHERE id = $3",
        )
        .bind(attempts)
        .bind(next_poll_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        updated(done.rows_affected(), "refund", id)
    }

    async fn claim_due_payments(
        &self,
        now: DateTime<Utc>,
        first_poll_before: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DuePayment>> {
        let until = lease_end(now, lease)?;
        // SKIP LOCKED: rows another node is claiming right now are passed
        // over, not waited for; rows it already claimed fail the lease check.
        let rows = sqlx::query(
            "UPDATE payments SET poll_locked_until = $2
             WHERE id IN (
                SELECT id FROM payments
                WHERE id IN (
                    (SELECT id FROM payments
                     WHERE status IN ('created', 'pending') AND next_poll_at <= $1
                       AND (poll_locked_until IS NULL OR poll_locked_until <= $1)
                     ORDER BY next_poll_at LIMIT $5)
                    UNION (SELECT id FROM payments
                     WHERE status IN ('created', 'pending') AND next_poll_at IS NULL
                       AND created_at <= $3
                       AND (poll_locked_until IS NULL OR poll_locked_until <= $1)
                     ORDER BY created_at LIMIT $5)
                    UNION (SELECT id FROM payments
                     WHERE status IN ('created', 'pending') AND next_poll_at IS NULL
                       AND expires_at <= $1
                       AND (poll_locked_until IS NULL OR poll_locked_until <= $1)
                     ORDER BY expires_at LIMIT $5))
                  AND (poll_locked_until IS NULL OR poll_locked_until <= $1)
                ORDER BY COALESCE(next_poll_at, created_at), id
                LIMIT $4
                FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(now)
        .bind(until)
        .bind(first_poll_before)
        .bind(i64::from(limit))
        .bind(claim_window(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DuePayment {
                    payment: row::payment(r)?,
                    poll_attempts: r.int32("poll_attempts")?,
                })
            })
            .collect()
    }

    async fn schedule_payment_poll(
        &self,
        id: &PaymentId,
        attempts: i32,
        next_poll_at: DateTime<Utc>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE payments SET poll_attempts = $1, next_poll_at = $2, poll_locked_until = NULL
             WHERE id = $3",
        )
        .bind(attempts)
        .bind(next_poll_at)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("payment {id}")));
        }
        Ok(())
    }

    async fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        claim: &EventClaim,
    ) -> Result<Vec<OutboxEvent>> {
        let until = lease_end(now, lease)?;
        // The window ranks each merchant's due events so no merchant takes
        // more than its share. SKIP LOCKED: rows another node is claiming
        // right now are passed over, not waited for; rows it already claimed
        // fail the lease check, which the UPDATE makes again on the locked row.
        let rows = sqlx::query(
            "WITH ranked AS (
                SELECT id, ROW_NUMBER() OVER (PARTITION BY merchant_id
                                              ORDER BY next_attempt_at, created_at, id) AS nth
                FROM (
                    SELECT id, merchant_id, next_attempt_at, created_at FROM events
                    WHERE delivered_at IS NULL AND NOT dead AND next_attempt_at <= $1
                      AND (locked_until IS NULL OR locked_until <= $1)
                      AND merchant_id <> ALL($5)
                    ORDER BY next_attempt_at LIMIT $6) oldest),
             picked AS (
                SELECT e.id FROM events e JOIN ranked r ON r.id = e.id
                WHERE r.nth <= $4
                ORDER BY e.next_attempt_at, e.created_at, e.id
                LIMIT $3
                FOR UPDATE OF e SKIP LOCKED)
             UPDATE events SET locked_until = $2
             FROM picked
             WHERE events.id = picked.id AND events.delivered_at IS NULL AND NOT events.dead
               AND (events.locked_until IS NULL OR events.locked_until <= $1)
             RETURNING events.*",
        )
        .bind(now)
        .bind(until)
        .bind(i64::from(claim.limit))
        .bind(i64::from(claim.per_merchant.max(1)))
        .bind(&claim.skip_merchants)
        .bind(claim_window(claim.limit))
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows.iter().map(row::event).collect::<Result<Vec<_>>>()?;
        sort_due(&mut events);
        Ok(events)
    }

    async fn renew_event_lease(&self, id: &str, until: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE events SET locked_until = $2
             WHERE id = $1 AND delivered_at IS NULL AND NOT dead",
        )
        .bind(id)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_event_delivered(
        &self,
        id: &str,
        attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let sql = "UPDATE events SET delivered_at = COALESCE(delivered_at, $2), attempts = $3, locked_until = NULL
                   WHERE id = $1";
        let done = sqlx::query(sql)
            .bind(id)
            .bind(now)
            .bind(attempts)
            .execute(&self.pool)
            .await?;
        event_updated(done.rows_affected(), id)
    }

    async fn mark_event_failed(
        &self,
        id: &str,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE events SET attempts = $2, next_attempt_at = $3, last_error = $4,
                locked_until = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(error)
        .execute(&self.pool)
        .await?;
        event_updated(done.rows_affected(), id)
    }

    async fn mark_event_dead(&self, id: &str, attempts: i32, error: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE events SET dead = TRUE, attempts = $2, last_error = $3, locked_until = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(error)
        .execute(&self.pool)
        .await?;
        event_updated(done.rows_affected(), id)
    }

    async fn event(&self, id: &str) -> Result<Option<OutboxEvent>> {
        let row = sqlx::query("SELECT * FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::event).transpose()
    }

    async fn events_for_payment(&self, payment_id: &PaymentId) -> Result<Vec<OutboxEvent>> {
        let rows =
            sqlx::query("SELECT * FROM events WHERE payment_id = $1 ORDER BY created_at, id")
                .bind(payment_id.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(row::event).collect()
    }

    async fn undelivered_events(
        &self,
        merchant_id: Option<&str>,
        dead_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM events
             WHERE delivered_at IS NULL
               AND ($1 IS NULL OR merchant_id = $1)
               AND (dead = TRUE OR NOT $2)
             ORDER BY created_at, id
             LIMIT $3",
        )
        .bind(merchant_id)
        .bind(dead_only)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::event).collect()
    }

    async fn retry_event(&self, id: &str, now: DateTime<Utc>) -> Result<OutboxEvent> {
        let row = sqlx::query(
            "UPDATE events SET dead = FALSE, attempts = 0, next_attempt_at = $2
             WHERE id = $1 AND delivered_at IS NULL
             RETURNING *",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => row::event(&row),
            None if self.event(id).await?.is_some() => Err(StoreError::Invalid(format!(
                "event {id} was delivered; it is never sent again"
            ))),
            None => Err(StoreError::NotFound(format!("event {id}"))),
        }
    }

    async fn seal_audit(&self, limit: u32) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // One sealer at a time, whichever node: the lock ends with the transaction.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_SEAL_LOCK)
            .execute(&mut *tx)
            .await?;
        let last = sqlx::query(
            "SELECT chain_pos, hash FROM audit_log WHERE chain_pos IS NOT NULL
             ORDER BY chain_pos DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let (mut pos, mut prev) = match last {
            Some(r) => (r.int("chain_pos")?, r.text("hash")?),
            None => (0, crate::audit::GENESIS.to_string()),
        };
        let rows =
            sqlx::query("SELECT * FROM audit_log WHERE chain_pos IS NULL ORDER BY seq LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
        for r in &rows {
            let e = row::audit_entry(r)?;
            pos += 1;
            let hash = crate::audit::entry_hash(&prev, pos, &e);
            let n = sqlx::query(
                "UPDATE audit_log SET chain_pos = $1, prev_hash = $2, hash = $3
                 WHERE seq = $4 AND chain_pos IS NULL",
            )
            .bind(pos)
            .bind(&prev)
            .bind(&hash)
            .bind(e.seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            shared::sealed_once(n, e.seq)?;
            prev = hash;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn audit_chain(
        &self,
        after_pos: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        let rows =
            sqlx::query("SELECT * FROM audit_log WHERE chain_pos > $1 ORDER BY chain_pos LIMIT $2")
                .bind(after_pos)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(row::audit_entry).collect()
    }

    async fn audit_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE at >= $1 AND at < $2 AND seq > $3
             ORDER BY seq LIMIT $4",
        )
        .bind(from)
        .bind(to)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::audit_entry).collect()
    }

    async fn audit_head(&self) -> Result<Option<crate::audit::AuditEntry>> {
        let row = sqlx::query(
            "SELECT * FROM audit_log WHERE chain_pos IS NOT NULL ORDER BY chain_pos DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row::audit_entry).transpose()
    }

    async fn audit_unsealed(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE chain_pos IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn audit_of(&self, subject_id: &str) -> Result<Vec<crate::audit::AuditEntry>> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE subject_id = $1 ORDER BY seq")
            .bind(subject_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row::audit_entry).collect()
    }

    async fn insert_reconciliation(&self, run: &ReconciliationRun) -> Result<()> {
        bind_reconciliation(sqlx::query(INSERT_RECONCILIATION), run)
            .execute(&self.pool)
            .await
            .map_err(|err| StoreError::unique(err, "reconciliation"))?;
        Ok(())
    }

    async fn claim_daily_reconciliation(
        &self,
        run: &ReconciliationRun,
        retry_failed_before: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let sql = format!(
            "{INSERT_RECONCILIATION}
             ON CONFLICT (channel_account_id, bill_date) WHERE trigger_kind = 'daily'
             DO UPDATE SET status = 'running', started_at = excluded.started_at,
                 finished_at = NULL, error = NULL
             WHERE reconciliations.status = 'failed' AND reconciliations.finished_at < $14
             RETURNING id"
        );
        let row = bind_reconciliation(sqlx::query(&sql), run)
            .bind(retry_failed_before)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.text("id")).transpose()
    }

    async fn finish_reconciliation(&self, run: &ReconciliationRun) -> Result<()> {
        let n = sqlx::query(
            "UPDATE reconciliations SET status = $2, matched = $3, discrepancy_count = $4,
                discrepancies = $5, error = $6, finished_at = $7
             WHERE id = $1 AND status = 'running'",
        )
        .bind(&run.id)
        .bind(run.status.as_str())
        .bind(run.matched)
        .bind(run.discrepancy_count)
        .bind(&run.discrepancies)
        .bind(&run.error)
        .bind(run.finished_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(());
        }
        shared::not_finished(self.reconciliation(&run.id).await?, &run.id)
    }

    async fn reconciliation(&self, id: &str) -> Result<Option<ReconciliationRun>> {
        let row = sqlx::query("SELECT * FROM reconciliations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::reconciliation).transpose()
    }

    async fn reconciliations(
        &self,
        channel_account_id: &str,
        bill_date: chrono::NaiveDate,
    ) -> Result<Vec<ReconciliationRun>> {
        let rows = sqlx::query(
            "SELECT * FROM reconciliations WHERE channel_account_id = $1 AND bill_date = $2
             ORDER BY started_at DESC, id DESC",
        )
        .bind(channel_account_id)
        .bind(bill_date.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::reconciliation).collect()
    }

    async fn settled_payments(&self, q: &SettledQuery) -> Result<Vec<Payment>> {
        let rows = sqlx::query(
            "SELECT * FROM payments
             WHERE channel_account_id = $1 AND status = 'succeeded'
               AND paid_at >= $2 AND paid_at < $3 AND ($4::text IS NULL OR id COLLATE \"C\" > $4)
             ORDER BY id COLLATE \"C\" LIMIT $5",
        )
        .bind(&q.channel_account_id)
        .bind(q.from)
        .bind(q.to)
        .bind(&q.after)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::payment).collect()
    }

    async fn settled_refunds(&self, q: &SettledQuery) -> Result<Vec<Refund>> {
        let rows = sqlx::query(
            "SELECT r.* FROM refunds r JOIN payments p ON p.id = r.payment_id
             WHERE p.channel_account_id = $1 AND r.status = 'succeeded'
               AND r.refunded_at >= $2 AND r.refunded_at < $3
               AND ($4::text IS NULL OR r.id COLLATE \"C\" > $4)
             ORDER BY r.id COLLATE \"C\" LIMIT $5",
        )
        .bind(&q.channel_account_id)
        .bind(q.from)
        .bind(q.to)
        .bind(&q.after)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::refund).collect()
    }

    async fn balances(&self, merchant_id: &str) -> Result<Vec<AccountBalance>> {
        let rows = sqlx::query(ledger::BALANCES)
            .bind(merchant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row::account_balance).collect()
    }

    async fn payment_postings(&self, payment_id: &PaymentId) -> Result<Vec<Posting>> {
        let rows = sqlx::query(ledger::PAYMENT_POSTINGS)
            .bind(payment_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row::posting).collect()
    }

    async fn post_fee(
        &self,
        payment_id: &PaymentId,
        fee: i64,
        at: DateTime<Utc>,
    ) -> Result<ledger::FeePosted> {
        let mut tx = self.pool.begin().await?;
        // Locked, so two runs posting the same fee wait for each other.
        let payment = sqlx::query("SELECT * FROM payments WHERE id = $1 FOR UPDATE")
            .bind(payment_id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("payment {payment_id}")))?;
        let payment = row::payment(&payment)?;
        shared::check_fee(&payment, fee)?;
        let before: Option<i64> = sqlx::query_scalar(ledger::POSTED_FEE)
            .bind(ledger::fee_txn(payment_id.as_str()))
            .fetch_one(&mut *tx)
            .await?;
        if before.is_none() {
            insert_postings(&mut tx, &ledger::fee(&payment, fee, at)).await?;
        }
        tx.commit().await?;
        Ok(shared::fee_outcome(before, fee))
    }

    async fn ledger_check(&self, limit: u32) -> Result<LedgerCheck> {
        // One snapshot for every check, so a payment settling meanwhile
        // cannot show as a mismatch between two of them.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let counts = sqlx::query(ledger::COUNTS).fetch_one(&mut *tx).await?;
        let mut issues = Vec::new();
        for &(kind, sql) in ledger::CHECKS {
            let rows = sqlx::query(&format!("{sql} LIMIT {limit}"))
                .fetch_all(&mut *tx)
                .await?;
            for r in &rows {
                issues.push(row::ledger_issue(kind, r)?);
            }
        }
        tx.commit().await?;
        Ok(LedgerCheck {
            transactions: counts.int("transactions")?,
            postings: counts.int("postings")?,
            issues,
        })
    }

    async fn idempotency_record(
        &self,
        merchant_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>> {
        let row = sqlx::query("SELECT * FROM idempotency_keys WHERE merchant_id = $1 AND key = $2")
            .bind(merchant_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row::idempotency_record).transpose()
    }

    async fn save_idempotency_record(&self, r: &IdempotencyRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO idempotency_keys (merchant_id, key, request_hash, status, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (merchant_id, key) DO NOTHING",
        )
        .bind(&r.merchant_id)
        .bind(&r.key)
        .bind(&r.request_hash)
        .bind(i32::from(r.status))
        .bind(&r.body)
        .bind(r.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_idempotency_record(&self, r: &IdempotencyRecord) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = $4
             WHERE merchant_id = $1 AND key = $2 AND status = 0 AND created_at = $5",
        )
        .bind(&r.merchant_id)
        .bind(&r.key)
        .bind(i32::from(r.status))
        .bind(&r.body)
        .bind(r.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_idempotency_key(
        &self,
        merchant_id: &str,
        key: &str,
        reserved_at: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE merchant_id = $1 AND key = $2 AND status = 0 AND created_at = $3",
        )
        .bind(merchant_id)
        .bind(key)
        .bind(reserved_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_idempotency_records(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Writes an outbox event inside the transaction of the change it reports.
const INSERT_RECONCILIATION: &str = "INSERT INTO reconciliations (id, merchant_id,
    channel_account_id, channel, bill_date, trigger_kind, status, matched, discrepancy_count,
    discrepancies, error, started_at, finished_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

fn bind_reconciliation<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    run: &'q ReconciliationRun,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&run.id)
        .bind(&run.merchant_id)
        .bind(&run.channel_account_id)
        .bind(run.channel.as_str())
        .bind(run.bill_date.to_string())
        .bind(&run.trigger)
        .bind(run.status.as_str())
        .bind(run.matched)
        .bind(run.discrepancy_count)
        .bind(&run.discrepancies)
        .bind(&run.error)
        .bind(run.started_at)
        .bind(run.finished_at)
}

async fn insert_postings(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    postings: &[Posting],
) -> Result<()> {
    for p in postings {
        sqlx::query(ledger::INSERT_POSTING)
            .bind(&p.txn_id)
            .bind(p.account.as_str())
            .bind(&p.merchant_id)
            .bind(&p.channel_account_id)
            .bind(&p.currency)
            .bind(p.debit)
            .bind(p.credit)
            .bind(&p.payment_id)
            .bind(&p.refund_id)
            .bind(p.created_at)
            .execute(&mut **tx)
            .await
            .map_err(|err| StoreError::unique(err, "ledger posting"))?;
    }
    Ok(())
}

/// What one payment transition is asked to do.
struct TransitionStep<'a> {
    id: &'a PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    patch: &'a TransitionPatch,
    event: Option<&'a NewEvent>,
    now: DateTime<Utc>,
}

/// The compare-and-set up to its condition on the payment's row.
macro_rules! transition_update {
    () => {
        "WITH moved AS (
                UPDATE payments SET status = $1, updated_at = $2,
                    pay_params = COALESCE($3, pay_params),
                    channel_trade_no = COALESCE($4, channel_trade_no),
                    paid_at = COALESCE($5, paid_at)
                WHERE id = $6 AND status = $7"
    };
}

/// After the condition: the moved row, its outbox row and its postings.
macro_rules! transition_writes {
    () => {
        "
                RETURNING *),
             outbox AS (
                INSERT INTO events (id, merchant_id, payment_id, refund_id, event_type, payload,
                    notify_url, created_at, attempts, next_attempt_at, app_id)
                SELECT $8, $9, $10, $11, $12, $13, $14, $15, 0, $15, $16 FROM moved
                WHERE $8::text IS NOT NULL),
             -- The capture's postings (`ledger::capture`), from the moved row:
             -- one per leg bound below, none when the payment did not succeed.
             ledger AS (
                INSERT INTO ledger_postings (txn_id, account, merchant_id, channel_account_id,
                    currency, debit_minor, credit_minor, payment_id, refund_id, created_at)
                SELECT 'capture:' || moved.id, leg.account, moved.merchant_id,
                    moved.channel_account_id, moved.currency,
                    CASE WHEN leg.debit THEN moved.amount_minor ELSE 0 END,
                    CASE WHEN leg.debit THEN 0 ELSE moved.amount_minor END,
                    moved.id, NULL, $2
                FROM moved CROSS JOIN UNNEST($17::text[], $18::bool[]) AS leg(account, debit))"
    };
}

/// The transition of a payment of no checkout and no group.
const TRANSITION_PLAIN: &str = concat!(
    transition_update!(),
    " AND checkout_id IS NULL AND group_id IS NULL",
    transition_writes!(),
    "\n             SELECT * FROM moved"
);

/// The transition of a checkout's attempt or a group's member: the plain
/// one, and what it does to its checkout or group.
const TRANSITION_LINKED: &str = concat!(
    transition_update!(),
    transition_writes!(),
    ",\n",
    "             -- A checkout's attempt that succeeds wins the checkout, unless
             -- another won first (a racing winner holds the checkout's row
             -- lock; once it commits, the condition is checked again and
             -- misses): then it is a duplicate, to be refunded.
             claimed AS (
                UPDATE checkouts SET winner_payment_id = moved.id, won_at = $2, updated_at = $2
                FROM moved
                WHERE $1 = 'succeeded' AND checkouts.id = moved.checkout_id
                  AND checkouts.winner_payment_id IS NULL
                RETURNING checkouts.id),
             duplicate AS (
                INSERT INTO checkout_duplicates (payment_id, checkout_id, created_at)
                SELECT moved.id, moved.checkout_id, $2 FROM moved
                WHERE $1 = 'succeeded' AND moved.checkout_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM claimed)),
             -- A group member's success counts; the one that completes the
             -- group before its expiry succeeds it (SET sees the old row), and
             -- writes the group's event. After a failure it is settled again.
             member_paid AS (
                UPDATE group_buys g SET paid_count = g.paid_count + 1,
                    status = CASE WHEN g.status = 'open' AND g.paid_count + 1 >= g.size
                        AND $2 <= g.expires_at THEN 'succeeded' ELSE g.status END,
                    succeeded_at = CASE WHEN g.status = 'open' AND g.paid_count + 1 >= g.size
                        AND $2 <= g.expires_at THEN $2 ELSE g.succeeded_at END,
                    settled_at = CASE WHEN g.status = 'failed' THEN NULL ELSE g.settled_at END,
                    updated_at = $2
                FROM moved
                WHERE $1 = 'succeeded' AND g.id = moved.group_id
                RETURNING g.status, g.paid_count, g.size),
             -- A member's close or failure gives its seat back.
             member_left AS (
                UPDATE group_buys g SET seats_taken = g.seats_taken - 1, updated_at = $2
                FROM moved
                WHERE $1 IN ('closed', 'failed') AND g.id = moved.group_id
                  AND g.status = 'open'
                RETURNING g.id),
             group_event AS (
                INSERT INTO events (id, merchant_id, payment_id, refund_id, event_type, payload,
                    notify_url, created_at, attempts, next_attempt_at, app_id)
                SELECT $19, $20, $21, NULL, $22, $23, $24, $25, 0, $25, $26 FROM member_paid
                WHERE $19::text IS NOT NULL AND member_paid.status = 'succeeded'
                  AND member_paid.paid_count = member_paid.size)
             SELECT * FROM moved"
);

impl PgStore {
    /// Runs one of the transition statements; the moved row, if the
    /// compare-and-set matched.
    async fn transition_with(
        &self,
        linked: bool,
        step: &TransitionStep<'_>,
    ) -> Result<Option<PgRow>> {
        let TransitionStep {
            id,
            from,
            to,
            patch,
            event,
            now,
        } = *step;
        let legs: &[_] = if to == PaymentStatus::Succeeded {
            &ledger::CAPTURE
        } else {
            &[]
        };
        let sql = if linked {
            TRANSITION_LINKED
        } else {
            TRANSITION_PLAIN
        };
        let mut query = sqlx::query(sql)
            .bind(to.as_str())
            .bind(now)
            .bind(&patch.pay_params)
            .bind(&patch.channel_trade_no)
            .bind(patch.paid_at)
            .bind(id.as_str())
            .bind(from.as_str())
            .bind(event.map(|e| e.id.as_str()))
            .bind(event.map(|e| e.merchant_id.as_str()))
            .bind(event.map(|e| e.payment_id.as_str()))
            .bind(event.and_then(|e| e.refund_id.as_deref()))
            .bind(event.map(|e| e.event_type.as_str()))
            .bind(event.map(|e| &e.payload))
            .bind(event.map(|e| e.notify_url.as_str()))
            .bind(event.map(|e| e.created_at))
            .bind(event.and_then(|e| e.app_id.as_deref()))
            .bind(legs.iter().map(|l| l.0.as_str()).collect::<Vec<_>>())
            .bind(
                legs.iter()
                    .map(|l| l.1 == ledger::Side::Debit)
                    .collect::<Vec<_>>(),
            );
        // Only the linked statement has the group event's parameters.
        if linked {
            let group_event = patch.group_event.as_ref();
            query = query
                .bind(group_event.map(|e| e.id.as_str()))
                .bind(group_event.map(|e| e.merchant_id.as_str()))
                .bind(group_event.map(|e| e.payment_id.as_str()))
                .bind(group_event.map(|e| e.event_type.as_str()))
                .bind(group_event.map(|e| &e.payload))
                .bind(group_event.map(|e| e.notify_url.as_str()))
                .bind(group_event.map(|e| e.created_at))
                .bind(group_event.and_then(|e| e.app_id.as_deref()));
        }
        Ok(query
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| StoreError::unique(err, "event"))?)
    }
}

/// Inserts a payment row unless its order number is taken: 1 or 0 rows.
async fn insert_payment_row<'e>(executor: impl sqlx::PgExecutor<'e>, p: &Payment) -> Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO payments (id, merchant_id, merchant_order_no, amount_minor, currency,
            channel, method, status, description, notify_url, payer, metadata, request_hash,
            channel_account_id, pay_params, channel_trade_no, paid_at, expires_at,
            created_at, updated_at, app_id, checkout_id, group_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
            $17, $18, $19, $20, $21, $22, $23)
         ON CONFLICT (merchant_id, merchant_order_no) DO NOTHING",
    )
    .bind(p.id.as_str())
    .bind(&p.merchant_id)
    .bind(&p.merchant_order_no)
    .bind(p.amount.minor)
    .bind(p.amount.currency.as_str())
    .bind(p.channel.as_str())
    .bind(p.method.as_str())
    .bind(p.status.as_str())
    .bind(&p.description)
    .bind(&p.notify_url)
    .bind(&p.payer)
    .bind(&p.metadata)
    .bind(&p.request_hash)
    .bind(&p.channel_account_id)
    .bind(&p.pay_params)
    .bind(&p.channel_trade_no)
    .bind(p.paid_at)
    .bind(p.expires_at)
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(&p.app_id)
    .bind(&p.checkout_id)
    .bind(&p.group_id)
    .execute(executor)
    .await
    .map_err(|e| StoreError::unique(e, "payment"))?
    .rows_affected())
}

async fn insert_event(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, e: &NewEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (id, merchant_id, payment_id, refund_id, event_type, payload,
            notify_url, created_at, attempts, next_attempt_at, app_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $8, $9)",
    )
    .bind(&e.id)
    .bind(&e.merchant_id)
    .bind(e.payment_id.as_str())
    .bind(&e.refund_id)
    .bind(&e.event_type)
    .bind(&e.payload)
    .bind(&e.notify_url)
    .bind(e.created_at)
    .bind(&e.app_id)
    .execute(&mut **tx)
    .await
    .map_err(|err| StoreError::unique(err, "event"))?;
    Ok(())
}
