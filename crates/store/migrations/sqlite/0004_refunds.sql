-- Refunds. A refund is reserved against its payment in the transaction that
-- inserts it: refunds not `failed` never add up to more than the payment.
-- Its id is the channel's out_refund_no, so a repeated call never refunds twice.
-- `next_poll_at` / `poll_attempts` / `poll_locked_until` schedule and lease
-- status checks of refunds still processing, as for payments.
CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL REFERENCES merchants (id),
    payment_id         TEXT NOT NULL REFERENCES payments (id),
    merchant_refund_no TEXT NOT NULL,
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL,
    reason             TEXT,
    notify_url         TEXT NOT NULL,
    request_hash       TEXT NOT NULL,
    channel_refund_no  TEXT,
    failure_reason     TEXT,
    refunded_at        INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    next_poll_at       INTEGER,
    poll_attempts      INTEGER NOT NULL DEFAULT 0,
    poll_locked_until  INTEGER,
    UNIQUE (merchant_id, merchant_refund_no)
) STRICT;

CREATE INDEX refunds_payment ON refunds (payment_id);
CREATE INDEX refunds_poll ON refunds (status, next_poll_at);

-- Events about a refund name it too (`payment_id` stays its payment's).
ALTER TABLE events ADD COLUMN refund_id TEXT REFERENCES refunds (id);
