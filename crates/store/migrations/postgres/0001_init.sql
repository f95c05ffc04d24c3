-- paymux schema for PostgreSQL.

CREATE TABLE merchants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE apps (
    app_id      TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    secret      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX apps_merchant ON apps (merchant_id);

CREATE TABLE channel_accounts (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    channel     TEXT NOT NULL,
    config      JSONB NOT NULL,
    sandbox     BOOLEAN NOT NULL,
    enabled     BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX channel_accounts_lookup ON channel_accounts (merchant_id, channel, created_at);

CREATE TABLE payments (
    id                 TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL REFERENCES merchants (id),
    merchant_order_no  TEXT NOT NULL,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    channel            TEXT NOT NULL,
    method             TEXT NOT NULL,
    status             TEXT NOT NULL,
    description        TEXT NOT NULL,
    notify_url         TEXT NOT NULL,
    payer              JSONB NOT NULL,
    metadata           JSONB NOT NULL,
    request_hash       TEXT NOT NULL,
    channel_account_id TEXT NOT NULL REFERENCES channel_accounts (id),
    pay_params         JSONB,
    channel_trade_no   TEXT,
    paid_at            TIMESTAMPTZ,
    expires_at         TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (merchant_id, merchant_order_no)
);

-- Sweepers look for open payments by status, then by expiry.
CREATE INDEX payments_status ON payments (status, expires_at);

-- The outbox. `locked_until` is the lease of the worker delivering the event.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    event_type      TEXT NOT NULL,
    payload         JSONB NOT NULL,
    notify_url      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ,
    dead            BOOLEAN NOT NULL DEFAULT FALSE,
    last_error      TEXT,
    locked_until    TIMESTAMPTZ
);

CREATE INDEX events_due ON events (delivered_at, dead, next_attempt_at);
CREATE INDEX events_payment ON events (payment_id, created_at);

CREATE TABLE nonces (
    app_id     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app_id, nonce)
);

CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE idempotency_keys (
    merchant_id  TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
