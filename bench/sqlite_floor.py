"""Raw SQLite rate for paymux's per-payment commits (see floor.sh)."""
import os, sqlite3, sys, tempfile, time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
path = os.path.join(tempfile.mkdtemp(prefix="paymux-floor-"), "floor.db")
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.executescript(open(os.path.join(os.path.dirname(__file__), "..", "crates/store/migrations/sqlite/0001_init.sql")).read())
now = lambda: int(time.time() * 1e6)
db.execute("INSERT INTO merchants VALUES ('mch_floor', 'floor', ?)", (now(),))
db.execute("INSERT INTO channel_accounts VALUES ('acct_floor', 'mch_floor', 'wechat', '{}', 1, 1, ?)", (now(),))
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    n += 1
    pid, t = f"pay_floor_{n}", now()
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO payments (id, merchant_id, merchant_order_no, amount_minor, currency, channel, method, status,"
        " description, notify_url, payer, metadata, request_hash, channel_account_id, expires_at, created_at, updated_at)"
        " VALUES (?, 'mch_floor', ?, 1999, 'CNY', 'wechat', 'mini_program', 'created', 'floor', 'http://x', '{}', '{}', 'h',"
        " 'acct_floor', ?, ?, ?)", (pid, f"o{n}", t + 7_200_000_000, t, t))
    db.execute("COMMIT")
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE payments SET status='pending', pay_params='{}', updated_at=? WHERE id=? AND status='created'", (t, pid))
    db.execute("COMMIT")
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE payments SET status='succeeded', paid_at=?, updated_at=? WHERE id=? AND status='pending'", (t, t, pid))
    db.execute("INSERT INTO events (id, merchant_id, payment_id, event_type, payload, notify_url, created_at, attempts,"
               " next_attempt_at, dead) VALUES (?, 'mch_floor', ?, 'payment.succeeded', '{}', 'http://x', ?, 0, ?, 0)",
               ("evt" + pid, pid, t, t))
    db.execute("COMMIT")
elapsed = time.perf_counter() - start
print(f"{n / elapsed:.0f} payments/s ({3 * n / elapsed:.0f} commits/s), {elapsed / n * 1000:.3f} ms per payment")
