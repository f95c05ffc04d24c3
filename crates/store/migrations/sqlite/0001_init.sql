-- paymux schema for SQLite. Timestamps are INTEGER unix microseconds (so
-- comparisons are numeric), JSON is TEXT, booleans are INTEGER 0/1.
-- STRICT makes SQLite reject values of the wrong type instead of storing them.

CREATE TABLE merchants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE apps (
    app_id      TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX apps_merchant ON apps (merchant_id);

CREATE TABLE channel_accounts (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    channel     TEXT NOT NULL,
    config      TEXT NOT NULL,
    sandbox     INTEGER NOT NULL CHECK (sandbox IN (0, 1)),
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX channel_accounts_lookup ON channel_accounts (merchant_id, channel, created_at);

CREATE TABLE payments (
    id                 TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL REFERENCES merchants (id),
    merchant_order_no  TEXT NOT NULL,
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    channel            TEXT NOT NULL,
    method             TEXT NOT NULL,
    status             TEXT NOT NULL,
    description        TEXT NOT NULL,
    notify_url         TEXT NOT NULL,
    payer              TEXT NOT NULL,
    metadata           TEXT NOT NULL,
    request_hash       TEXT NOT NULL,
    channel_account_id TEXT NOT NULL REFERENCES channel_accounts (id),
    pay_params         TEXT,
    channel_trade_no   TEXT,
    paid_at            INTEGER,
    expires_at         INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (merchant_id, merchant_order_no)
) STRICT;

-- Sweepers look for open payments by status, then by expiry.
CREATE INDEX payments_status ON payments (status, expires_at);

-- The outbox. `locked_until` is the lease of the worker delivering the event.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    notify_url      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    dead            INTEGER NOT NULL DEFAULT 0 CHECK (dead IN (0, 1)),
    last_error      TEXT,
    locked_until    INTEGER
) STRICT;

CREATE INDEX events_due ON events (delivered_at, dead, next_attempt_at);
CREATE INDEX events_payment ON events (payment_id, created_at);

CREATE TABLE nonces (
    app_id     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, nonce)
) STRICT, WITHOUT ROWID;

CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE idempotency_keys (
    merchant_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, key)
) STRICT;
