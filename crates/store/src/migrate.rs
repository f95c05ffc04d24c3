//! Versioned schema migrations, embedded in the binary and applied at open.
//!
//! Each backend has its own list; a version is applied at most once, in its
//! own transaction together with its `schema_migrations` row, so a failed
//! migration leaves nothing half-done.

use chrono::Utc;
use sqlx::PgPool;

use crate::Result;

struct Migration {
    version: i64,
    sql: &'static str,
}

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/sqlite/0002_app_secret_rotation.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../migrations/sqlite/0003_payment_polling.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../migrations/sqlite/0004_refunds.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../migrations/sqlite/0005_payment_refunded.sql"),
    },
    Migration {
        version: 6,
        sql: include_str!("../migrations/sqlite/0006_payment_app_refund_bound.sql"),
    },
    Migration {
        version: 7,
        sql: include_str!("../migrations/sqlite/0007_listing_indexes.sql"),
    },
    Migration {
        version: 8,
        sql: include_str!("../migrations/sqlite/0008_app_request_keys.sql"),
    },
    Migration {
        version: 9,
        sql: include_str!("../migrations/sqlite/0009_app_client_cert.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../migrations/sqlite/0010_due_indexes.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("../migrations/sqlite/0011_directory_version.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("../migrations/sqlite/0012_event_app.sql"),
    },
    Migration {
        version: 13,
        sql: include_str!("../migrations/sqlite/0013_ledger.sql"),
    },
    Migration {
        version: 14,
        sql: include_str!("../migrations/sqlite/0014_reconciliations.sql"),
    },
    Migration {
        version: 15,
        sql: include_str!("../migrations/sqlite/0015_audit_log.sql"),
    },
    Migration {
        version: 16,
        sql: include_str!("../migrations/sqlite/0016_checkouts.sql"),
    },
    Migration {
        version: 17,
        sql: include_str!("../migrations/sqlite/0017_qr_codes.sql"),
    },
    Migration {
        version: 18,
        sql: include_str!("../migrations/sqlite/0018_group_buys.sql"),
    },
    Migration {
        version: 19,
        sql: include_str!("../migrations/sqlite/0019_app_event_types.sql"),
    },
];

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../migrations/postgres/0002_app_secret_rotation.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../migrations/postgres/0003_payment_polling.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../migrations/postgres/0004_refunds.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../migrations/postgres/0005_payment_refunded.sql"),
    },
    Migration {
        version: 6,
        sql: include_str!("../migrations/postgres/0006_payment_app_refund_bound.sql"),
    },
    Migration {
        version: 7,
        sql: include_str!("../migrations/postgres/0007_listing_indexes.sql"),
    },
    Migration {
        version: 8,
        sql: include_str!("../migrations/postgres/0008_app_request_keys.sql"),
    },
    Migration {
        version: 9,
        sql: include_str!("../migrations/postgres/0009_app_client_cert.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../migrations/postgres/0010_due_indexes.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("../migrations/postgres/0011_directory_version.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("../migrations/postgres/0012_event_app.sql"),
    },
    Migration {
        version: 13,
        sql: include_str!("../migrations/postgres/0013_ledger.sql"),
    },
    Migration {
        version: 14,
        sql: include_str!("../migrations/postgres/0014_reconciliations.sql"),
    },
    Migration {
        version: 15,
        sql: include_str!("../migrations/postgres/0015_audit_log.sql"),
    },
    Migration {
        version: 16,
        sql: include_str!("../migrations/postgres/0016_checkouts.sql"),
    },
    Migration {
        version: 17,
        sql: include_str!("../migrations/postgres/0017_qr_codes.sql"),
    },
    Migration {
        version: 18,
        sql: include_str!("../migrations/postgres/0018_group_buys.sql"),
    },
    Migration {
        version: 19,
        sql: include_str!("../migrations/postgres/0019_app_event_types.sql"),
    },
];

/// Advisory lock key ("paymux" in ASCII) that serialises migrating nodes.
const PG_LOCK_KEY: i64 = 0x7061_796d_7578;

pub(crate) fn sqlite(conn: &rusqlite::Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
    )?;
    for m in SQLITE {
        // BEGIN IMMEDIATE takes the write lock up front, so two processes
        // opening the same file cannot both decide a version is missing.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = (|| {
            let claimed = conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)
                 ON CONFLICT (version) DO NOTHING",
                (m.version, Utc::now().timestamp_micros()),
            )?;
            if claimed == 1 {
                conn.execute_batch(m.sql)?;
            }
            Ok::<_, rusqlite::Error>(claimed == 1)
        })();
        match applied {
            Ok(true) => {
                conn.execute_batch("COMMIT")?;
                tracing::info!(version = m.version, "applied sqlite migration");
            }
            Ok(false) => conn.execute_batch("ROLLBACK")?, // already applied
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
    }
    Ok(())
}

pub(crate) async fn postgres(pool: &PgPool) -> Result<()> {
    for m in POSTGRES {
        let mut tx = pool.begin().await?;
        // Held until commit/rollback; it also covers creating the bookkeeping
        // table, since concurrent CREATE TABLE IF NOT EXISTS can still collide.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if applied.is_some() {
            continue;
        }
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, "applied postgres migration");
    }
    Ok(())
}
