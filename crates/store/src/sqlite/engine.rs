//! The SQLite engine: one writer thread that commits concurrent callers'
//! transactions together (group commit), and a small pool of read
//! connections.
//!
//! Why: SQLite allows one writer at a time, and each commit costs a WAL
//! write. Handing every caller's transaction to one thread that owns the
//! write connection removes lock contention, and committing a whole queue of
//! them at once makes that cost once per batch instead of once per caller.
//!
//! Each caller's work runs inside its own savepoint within the batch, so one
//! that fails rolls back alone; no caller is answered before the batch's
//! `COMMIT` has returned, so nothing a caller was told is committed can be
//! lost when the process dies (`synchronous=NORMAL` in WAL mode: the commit
//! is in the WAL file when `COMMIT` returns; only a power cut or an OS crash
//! can lose the last commits, and the status poller then settles those
//! payments from the channel).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{Result, StoreError};

/// Most callers committed by one `COMMIT`: bounds the latency a batch adds
/// to its first caller and the work lost if the commit fails.
const MAX_BATCH: usize = 256;
/// Callers waiting for the writer at most; more wait in `send` (back-pressure).
const QUEUE: usize = 4096;
/// Read connections kept open.
const READERS: usize = 4;
/// How long a statement waits for a lock another process holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 64;

/// A caller's transaction, run by the writer thread.
trait Job: Send {
    /// Runs the work on the write connection; `true` if it succeeded (and
    /// its savepoint is kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: with the work's result if the batch committed,
    /// else with why it did not.
    fn finish(self: Box<Self>, committed: std::result::Result<(), String>);
}

struct Pending<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panic in one caller's work must not take the writer thread (and
        // every later caller) down with it.
        let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
            Err(StoreError::Engine(
                "the write panicked and was rolled back".into(),
            ))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: std::result::Result<(), String>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Engine("the write never ran".into())),
            // Its own failure says more than the batch's.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(why), _) => Err(StoreError::Engine(why)),
        };
        // The caller may have given up waiting; the work is done either way.
        let _ = self.reply.send(answer);
    }
}

enum Message {
    /// Work that runs inside the batch's transaction.
    Transaction(Box<dyn Job>),
    /// Work that must run outside any transaction (a checkpoint).
    Standalone(Box<dyn Job>),
    /// Commit what is queued before this, then end the thread.
    Stop,
}

pub(crate) struct Engine {
    writes: mpsc::Sender<Message>,
    stats: Arc<Stats>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Readers>,
}

/// What the writer has done so far, for benchmarks and tests.
#[derive(Default)]
pub(crate) struct Stats {
    /// Transactions committed (one per batch).
    pub(crate) commits: AtomicU64,
    /// Callers' writes in those transactions.
    pub(crate) writes: AtomicU64,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Engine {
    /// Opens the database at `path` (creating it), runs `prepare` on the
    /// write connection before anything else may use it (migrations), and
    /// starts the writer thread.
    pub(crate) fn open(
        path: &Path,
        prepare: impl FnOnce(&Connection) -> Result<()>,
    ) -> Result<Self> {
        let writer = connect(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        prepare(&writer)?;
        let (writes, queue) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let counted = stats.clone();
        let handle = std::thread::Builder::new()
            .name("paymux-sqlite-writer".into())
            .spawn(move || write_loop(writer, queue, &counted))?;
        let idle = (0..READERS)
            .map(|_| connect(path))
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine {
            writes,
            stats,
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(Readers {
                path: path.to_path_buf(),
                idle: Mutex::new(idle),
                permits: Arc::new(Semaphore::new(READERS)),
            }),
        })
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Runs `work` as one all-or-nothing transaction on the write
    /// connection, committed together with whatever else is queued; answers
    /// once the commit is done.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.send(work, Message::Transaction).await
    }

    /// Runs `work` on the write connection outside any transaction.
    pub(crate) async fn write_standalone<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.send(work, Message::Standalone).await
    }

    async fn send<T, F>(&self, work: F, wrap: fn(Box<dyn Job>) -> Message) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            result: None,
            reply,
        });
        self.writes
            .send(wrap(job))
            .await
            .map_err(|_| StoreError::Engine("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Engine("the writer stopped".into()))?
    }

    /// A short read (a lookup by key): runs on the caller's thread, which
    /// costs less than handing it to another; SQLite answers such a read in
    /// microseconds.
    pub(crate) async fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _permit = self
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Engine("the store is closed".into()))?;
        let conn = self.readers.take()?;
        let result = work(&conn);
        self.readers.give_back(conn);
        result
    }

    /// A read that may scan (listings, counts): runs on a blocking thread so
    /// it never holds up the request path.
    pub(crate) async fn scan<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Engine("the store is closed".into()))?;
        let readers = self.readers.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers.take()?;
            let result = work(&conn);
            readers.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Engine(format!("read task: {e}")))?;
        result
    }

    /// Stops the writer after the work queued so far, and closes every
    /// connection.
    pub(crate) async fn close(&self) {
        self.readers.permits.close();
        let handle = self.writer.lock().map(|mut h| h.take()).unwrap_or(None);
        if let Some(handle) = handle {
            let _ = self.writes.send(Message::Stop).await;
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        if let Ok(mut idle) = self.readers.idle.lock() {
            idle.clear();
        }
    }
}

impl Readers {
    /// An idle connection; there is one for every permit, so this only
    /// opens a new one if an earlier one was lost to a panic.
    fn take(&self) -> Result<Connection> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) => Ok(conn),
            None => connect(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Freed space is zeroed, so a value that was replaced (a secret
    // re-sealed under a new master key) does not linger in the file.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// The writer thread: takes what is queued, up to [`MAX_BATCH`], runs it in
/// one transaction with a savepoint per caller, commits, answers.
fn write_loop(conn: Connection, mut queue: mpsc::Receiver<Message>, stats: &Stats) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Transaction(job) => {
                    batch.push(job);
                    if batch.len() < MAX_BATCH {
                        next = queue.try_recv().ok();
                    }
                }
                Message::Standalone(mut job) => {
                    commit_batch(&conn, &mut batch, stats);
                    job.run(&conn);
                    job.finish(Ok(()));
                    next = queue.try_recv().ok();
                }
                Message::Stop => {
                    commit_batch(&conn, &mut batch, stats);
                    return;
                }
            }
        }
        commit_batch(&conn, &mut batch, stats);
    }
}

/// Runs the batch's jobs in one transaction and answers them all.
fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>, stats: &Stats) {
    if batch.is_empty() {
        return;
    }
    let mut done: Vec<Box<dyn Job>> = Vec::with_capacity(batch.len());
    let mut jobs = batch.drain(..);
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let why = format!("could not begin: {e}");
        for job in jobs {
            job.finish(Err(why.clone()));
        }
        return;
    }
    for mut job in jobs.by_ref() {
        if let Err(e) = savepoint(conn, "SAVEPOINT job") {
            job.finish(Err(e));
            continue;
        }
        let ok = job.run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (a disk full, an I/O
            // error): everything this batch did so far is gone.
            let why = "the transaction was rolled back by the database".to_string();
            for earlier in done.drain(..) {
                earlier.finish(Err(why.clone()));
            }
            job.finish(Err(why));
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                let why = format!("could not begin: {e}");
                for job in jobs {
                    job.finish(Err(why.clone()));
                }
                return;
            }
            continue;
        }
        let closed = if ok {
            savepoint(conn, "RELEASE job")
        } else {
            savepoint(conn, "ROLLBACK TO job").and_then(|()| savepoint(conn, "RELEASE job"))
        };
        if let Err(e) = closed {
            // The transaction is in an unknown state: give it all up.
            let _ = conn.execute_batch("ROLLBACK");
            let why = format!("savepoint: {e}");
            for earlier in done.drain(..) {
                earlier.finish(Err(why.clone()));
            }
            job.finish(Err(why.clone()));
            for job in jobs {
                job.finish(Err(why.clone()));
            }
            return;
        }
        done.push(job);
    }
    drop(jobs);
    let committed = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        format!("commit failed: {e}")
    });
    if committed.is_ok() {
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.writes.fetch_add(done.len() as u64, Ordering::Relaxed);
    }
    for job in done {
        job.finish(committed.clone());
    }
}

fn savepoint(conn: &Connection, sql: &str) -> std::result::Result<(), String> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Engine {
        Engine::open(&dir.join("t.db"), |c| {
            c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)")?;
            Ok(())
        })
        .unwrap()
    }

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("paymux-engine-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn insert(k: &str) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        let k = k.to_owned();
        move |c| {
            c.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
            Ok(())
        }
    }

    async fn keys(engine: &Engine) -> Vec<String> {
        engine
            .read(|c| {
                let mut s = c.prepare("SELECT k FROM t ORDER BY k")?;
                let keys = s
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(keys)
            })
            .await
            .unwrap()
    }

    /// Holds the writer until the returned sender is dropped, so that what
    /// is sent meanwhile queues up and commits as one batch.
    async fn hold_writer(engine: &Arc<Engine>) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let e = engine.clone();
        tokio::spawn(async move {
            e.write_standalone(move |_| {
                let _ = started.send(());
                let _ = held.recv();
                Ok(())
            })
            .await
        });
        running.await.unwrap();
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_commit_together_and_a_failing_one_rolls_back_alone() {
        let dir = temp();
        let engine = Arc::new(open(&dir));
        let release = hold_writer(&engine).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                if i == 25 {
                    // Writes a row, then fails: the row must not survive.
                    e.write(|c| {
                        insert("failed")(c)?;
                        Err::<(), _>(StoreError::Invalid("refused".into()))
                    })
                    .await
                } else if i == 30 {
                    e.write(|_| -> Result<()> { panic!("a bug in one write") })
                        .await
                } else {
                    e.write(insert(&format!("k{i:02}"))).await
                }
            }));
        }
        // Let every task reach the queue before the writer goes on.
        while engine.writes.capacity() > QUEUE - 50 {
            tokio::task::yield_now().await;
        }
        let before = engine.stats().commits.load(Ordering::Relaxed);
        drop(release);
        for (i, t) in tasks.into_iter().enumerate() {
            let answer = t.await.unwrap();
            match i {
                25 => assert!(matches!(answer, Err(StoreError::Invalid(_)))),
                30 => assert!(matches!(answer, Err(StoreError::Engine(_)))),
                _ => answer.unwrap(),
            }
        }
        let commits = engine.stats().commits.load(Ordering::Relaxed) - before;
        assert_eq!(commits, 1, "50 queued writes, one commit");
        let keys = keys(&engine).await;
        assert_eq!(keys.len(), 48);
        assert!(!keys.contains(&"failed".to_string()));
        engine.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_duplicate_key_fails_only_its_own_write() {
        let dir = temp();
        let engine = Arc::new(open(&dir));
        let release = hold_writer(&engine).await;
        let (a, b, c) = (
            tokio::spawn({
                let e = engine.clone();
                async move { e.write(insert("same")).await }
            }),
            tokio::spawn({
                let e = engine.clone();
                async move { e.write(insert("same")).await }
            }),
            tokio::spawn({
                let e = engine.clone();
                async move { e.write(insert("other")).await }
            }),
        );
        while engine.writes.capacity() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        drop(release);
        let answers = [a.await.unwrap(), b.await.unwrap(), c.await.unwrap()];
        assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 1);
        assert_eq!(keys(&engine).await, ["other", "same"]);
        engine.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn close_commits_what_was_queued_and_then_refuses() {
        let dir = temp();
        let engine = open(&dir);
        engine.write(insert("a")).await.unwrap();
        engine.close().await;
        assert!(matches!(
            engine.write(insert("b")).await,
            Err(StoreError::Engine(_))
        ));
        let reopened = open_existing(&dir);
        assert_eq!(keys(&reopened).await, ["a"]);
        reopened.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn open_existing(dir: &Path) -> Engine {
        Engine::open(&dir.join("t.db"), |_| Ok(())).unwrap()
    }
}
