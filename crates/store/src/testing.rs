//! Throwaway databases for tests, here and in other crates.
//!
//! Every [`TestDb`] is a fresh, migrated database of its own, so tests can
//! run in parallel. Call [`TestDb::cleanup`] at the end of a test: it closes
//! the store and deletes the database.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::Store;

const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// Reopens the same database with [`crate::open`].
    pub url: String,
    pub backend: &'static str,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite {
        store: Arc<SqliteStore>,
        dir: PathBuf,
    },
    Postgres {
        store: Arc<PgStore>,
        admin_url: String,
        database: String,
    },
}

impl TestDb {
    /// Panics unless the whole ledger passes its check: end-to-end suites
    /// call it after every case, so no flow, fault or race leaves books
    /// that do not agree with payments and refunds.
    pub async fn assert_ledger_ok(&self) {
        let check = self
            .store
            .ledger_check(10)
            .await
            .unwrap_or_else(|e| panic!("checking the ledger: {e}"));
        assert!(
            check.ok(),
            "ledger check on {}: {:?}",
            self.backend,
            check.issues
        );
    }

    /// Seals what the audit trail has not chained yet, then panics unless
    /// the whole chain verifies.
    pub async fn assert_audit_ok(&self) {
        while self
            .store
            .seal_audit(1000)
            .await
            .unwrap_or_else(|e| panic!("sealing the audit trail: {e}"))
            > 0
        {}
        let check = crate::audit::verify(&*self.store)
            .await
            .unwrap_or_else(|e| panic!("verifying the audit trail: {e}"));
        assert!(
            check.ok(),
            "audit trail on {}: {:?}",
            self.backend,
            check.broken
        );
    }

    /// Runs `sql` on the database directly, past the store: how a test
    /// plays someone who edits the database by hand, to prove that a check
    /// notices. `sql` may be several statements; how many rows they changed.
    pub async fn tamper(&self, sql: &str) -> u64 {
        match &self.cleanup {
            Cleanup::Sqlite { dir, .. } => {
                let conn = rusqlite::Connection::open(dir.join("paymux.db"))
                    .unwrap_or_else(|e| panic!("opening the test database: {e}"));
                conn.busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                let before = conn.total_changes();
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("tampering with {sql:?}: {e}"));
                conn.total_changes() - before
            }
            Cleanup::Postgres { .. } => {
                let mut conn = PgConnection::connect(&self.url)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
                let done = sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("tampering with {sql:?}: {e}"));
                let _ = conn.close().await;
                done.rows_affected()
            }
        }
    }

    /// Closes the store and deletes the database. Panics if that fails, so
    /// leaked test databases do not go unnoticed.
    pub async fn cleanup(self) {
        match self.cleanup {
            Cleanup::Sqlite { store, dir } => {
                store.close().await;
                if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                    panic!("removing test database dir {}: {e}", dir.display());
                }
            }
            Cleanup::Postgres {
                store,
                admin_url,
                database,
            } => {
                store.close().await;
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {admin_url}: {e}"));
                // FORCE ends connections that other clones of the store still hold.
                let drop = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                if let Err(e) = sqlx::raw_sql(&drop).execute(&mut admin).await {
                    panic!("dropping test database {database}: {e}");
                }
                // Closing is a courtesy to the server; the drop already happened.
                let _ = admin.close().await;
            }
        }
    }
}

/// A fresh SQLite database in a new directory under the system temp dir.
pub async fn sqlite() -> TestDb {
    let dir = std::env::temp_dir().join(format!("paymux-test-{}", ulid::Ulid::new()));
    let path = dir.join("paymux.db");
    let store = SqliteStore::open(&path)
        .await
        .unwrap_or_else(|e| panic!("opening test database {}: {e}", path.display()));
    let store = Arc::new(store);
    TestDb {
        store: store.clone(),
        url: format!("sqlite://{}", path.display()),
        backend: "sqlite",
        cleanup: Cleanup::Sqlite { store, dir },
    }
}

/// A fresh PostgreSQL database, created through the admin URL in
/// `PAYMUX_TEST_PG_URL`. `None` (with a SKIP line on stderr) if PostgreSQL does
/// not answer, unless `PAYMUX_REQUIRE_SERVICES=1`, which makes that a panic.
pub async fn postgres() -> Option<TestDb> {
    let admin_url =
        std::env::var("PAYMUX_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_string());
    let mut admin =
        match tokio::time::timeout(PG_CONNECT_TIMEOUT, PgConnection::connect(&admin_url)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return unreachable(&admin_url, &e.to_string()),
            Err(_) => return unreachable(&admin_url, "connection timed out"),
        };
    let database = format!(
        "paymux_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    if let Err(e) = sqlx::raw_sql(&format!("CREATE DATABASE \"{database}\""))
        .execute(&mut admin)
        .await
    {
        panic!("creating test database {database} at {admin_url}: {e}");
    }
    let _ = admin.close().await;
    let url = with_database(&admin_url, &database);
    let store = PgStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to test database {database}: {e}"));
    let store = Arc::new(store);
    Some(TestDb {
        store: store.clone(),
        url,
        backend: "postgres",
        cleanup: Cleanup::Postgres {
            store,
            admin_url,
            database,
        },
    })
}

/// Every backend available here: SQLite always, PostgreSQL when it answers.
pub async fn backends() -> Vec<TestDb> {
    let mut dbs = vec![sqlite().await];
    dbs.extend(postgres().await);
    dbs
}

fn unreachable(admin_url: &str, why: &str) -> Option<TestDb> {
    if std::env::var("PAYMUX_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("PostgreSQL not reachable at {admin_url} ({why}) and PAYMUX_REQUIRE_SERVICES=1");
    }
    // Written to the process's stderr directly, not through `eprintln!`,
    // which the test harness captures and hides for a passing test: a
    // skipped backend must show in a normal `cargo test` run.
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED on PostgreSQL: {test} (not reachable at {admin_url}: {why}; \
         set PAYMUX_REQUIRE_SERVICES=1 to require it)"
    );
    None
}

/// `url` with its database (the path) replaced by `database`, query kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }
}
