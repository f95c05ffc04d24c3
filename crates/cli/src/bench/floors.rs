//! The work nobody can avoid, measured in the same run as paymux: RSA-2048
//! signatures, and the callback's transaction straight through the database
//! driver with nothing of paymux around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};

/// How long each floor is measured.
const SPAN: Duration = Duration::from_secs(2);

/// The callback's transaction: a payment's compare-and-set with the row
/// back, and its outbox row (already delivered, so no notifier picks it up).
const CAS: &str = "UPDATE payments SET status = 'succeeded', updated_at = ?1
    WHERE id = ?2 AND status = 'succeeded' RETURNING *";
const EVENT: &str = "INSERT INTO events (id, merchant_id, payment_id, event_type, payload,
    notify_url, created_at, attempts, next_attempt_at, delivered_at)
    SELECT ?1, merchant_id, id, 'bench.floor', '{}', notify_url, ?2, 1, ?2, ?2
    FROM payments WHERE id = ?3";

/// RSA-2048 PKCS#1 v1.5 SHA-256 signatures and verifications per second on
/// one core.
pub fn rsa_rates() -> Result<(f64, f64), String> {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| e.to_string())?;
    let message = [0x5au8; 512];
    let rng = SystemRandom::new();
    let mut sig = vec![0; pair.public_modulus_len()];
    let sign_rate = rate(|| {
        pair.sign(&signature::RSA_PKCS1_SHA256, &rng, &message, &mut sig)
            .map_err(|e| e.to_string())
    })?;
    let public = UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        pair.public_key().as_ref().to_vec(),
    );
    let verify_rate = rate(|| public.verify(&message, &sig).map_err(|e| e.to_string()))?;
    Ok((sign_rate, verify_rate))
}

fn rate(mut op: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < SPAN {
        op()?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The callback's transaction on SQLite through rusqlite, group-committed
/// the way paymux's engine does (a savepoint per transaction, one commit per
/// `batch`), on one thread: the rate SQLite itself allows.
pub fn sqlite_rate(path: &std::path::Path, ids: &[String], batch: usize) -> Result<f64, String> {
    let err = |e: rusqlite::Error| e.to_string();
    let conn = rusqlite::Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    let start = Instant::now();
    let mut done = 0usize;
    for chunk in ids.chunks(batch.max(1)) {
        if start.elapsed() >= SPAN {
            break;
        }
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        for id in chunk {
            let now = chrono::Utc::now().timestamp_micros();
            conn.prepare_cached("SAVEPOINT job")
                .and_then(|mut s| s.execute([]))
                .map_err(err)?;
            let mut cas = conn.prepare_cached(CAS).map_err(err)?;
            let changed = cas
                .query((now, id))
                .and_then(|mut r| r.next().map(|r| r.is_some()))
                .map_err(err)?;
            if !changed {
                return Err(format!("floor: payment {id} is not succeeded"));
            }
            conn.prepare_cached(EVENT)
                .and_then(|mut s| s.execute((ulid::Ulid::new().to_string(), now, id)))
                .map_err(err)?;
            conn.prepare_cached("RELEASE job")
                .and_then(|mut s| s.execute([]))
                .map_err(err)?;
        }
        conn.execute_batch("COMMIT").map_err(err)?;
        done += chunk.len();
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// The callback's transaction on PostgreSQL through sqlx, from `clients`
/// concurrent tasks over a pool as large as paymux's.
pub async fn postgres_rate(
    url: &str,
    ids: Arc<Vec<String>>,
    clients: usize,
) -> Result<f64, String> {
    use sqlx::postgres::PgPoolOptions;
    let pool = PgPoolOptions::new()
        .max_connections(paymux_store::postgres::MAX_CONNECTIONS.min(clients.max(1) as u32))
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let cas = "UPDATE payments SET status = 'succeeded', updated_at = $1
        WHERE id = $2 AND status = 'succeeded' RETURNING *";
    let event = "INSERT INTO events (id, merchant_id, payment_id, event_type, payload,
        notify_url, created_at, attempts, next_attempt_at, delivered_at)
        SELECT $1, merchant_id, id, 'bench.floor', '{}'::jsonb, notify_url, $2, 1, $2, $2
        FROM payments WHERE id = $3";
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (pool, ids, next) = (pool.clone(), ids.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ids.len() || start.elapsed() >= SPAN {
                    return Ok::<_, sqlx::Error>(done);
                }
                let now = chrono::Utc::now();
                let mut tx = pool.begin().await?;
                sqlx::query(cas)
                    .bind(now)
                    .bind(&ids[i])
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(event)
                    .bind(ulid::Ulid::new().to_string())
                    .bind(now)
                    .bind(&ids[i])
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                done += 1;
            }
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}
