#!/usr/bin/env bash
# The floor under paymux's numbers on this machine: RSA-2048 signing (every
# WeChat request and paySign needs one), and the databases' own rate for the
# transactions paymux runs per payment. Compare with `paymux bench`.
#
#   bench/floor.sh [postgres-admin-url]
set -euo pipefail
cd "$(dirname "$0")/.."
ADMIN_URL="${1:-${PAYMUX_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
SECONDS_PER_RUN="${FLOOR_SECONDS:-10}"

echo "== machine"
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

echo "== RSA-2048 sign/verify (openssl speed, 1 core)"
openssl speed -seconds 3 rsa2048 2>/dev/null | grep -E '^rsa 2048|sign/s'

echo "== PostgreSQL: the create (insert + created->pending) and callback (pending->succeeded + outbox row) transactions"
db="paymux_floor_$$"
psql "$ADMIN_URL" -qAtc "CREATE DATABASE $db" >/dev/null
DB_URL="${ADMIN_URL%/*}/$db"
trap 'psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT
psql "$DB_URL" -q -f crates/store/migrations/postgres/0001_init.sql >/dev/null
psql "$DB_URL" -q <<'SQL' >/dev/null
INSERT INTO merchants VALUES ('mch_floor', 'floor', now());
INSERT INTO channel_accounts VALUES ('acct_floor', 'mch_floor', 'wechat', '{}', true, true, now());
SQL
cat > "/tmp/$db.sql" <<'SQL'
\set n random(1, 9000000000000000)
BEGIN;
INSERT INTO payments (id, merchant_id, merchant_order_no, amount_minor, currency, channel, method, status,
  description, notify_url, payer, metadata, request_hash, channel_account_id, expires_at, created_at, updated_at)
VALUES ('pay_' || :n, 'mch_floor', 'o' || :n, 1999, 'CNY', 'wechat', 'mini_program', 'created', 'floor',
  'http://127.0.0.1/notify', '{"openid":"o"}', '{}', 'h', 'acct_floor', now() + interval '2 hours', now(), now());
COMMIT;
UPDATE payments SET status = 'pending', pay_params = '{"package":"prepay_id=x"}', updated_at = now()
  WHERE id = 'pay_' || :n AND status = 'created';
BEGIN;
UPDATE payments SET status = 'succeeded', channel_trade_no = 't', paid_at = now(), updated_at = now()
  WHERE id = 'pay_' || :n AND status = 'pending';
INSERT INTO events (id, merchant_id, payment_id, event_type, payload, notify_url, created_at, next_attempt_at)
  VALUES ('evt_' || :n, 'mch_floor', 'pay_' || :n, 'payment.succeeded', '{"type":"payment.succeeded"}',
  'http://127.0.0.1/notify', now(), now());
COMMIT;
SQL
for c in 1 64; do
  echo "-- pgbench, $c clients (one 'transaction' = one payment's three commits)"
  pgbench -n -c "$c" -j 2 -T "$SECONDS_PER_RUN" -f "/tmp/$db.sql" "$DB_URL" 2>/dev/null | grep -E 'tps|latency average'
done
rm -f "/tmp/$db.sql"

echo "== SQLite (WAL, synchronous=NORMAL, one writer): the same three commits per payment"
python3 bench/sqlite_floor.py "$SECONDS_PER_RUN"
