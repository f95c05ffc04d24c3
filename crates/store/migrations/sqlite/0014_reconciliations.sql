-- Reconciliation runs: one channel account's bill of one China-time day
-- matched against paymux's payments and refunds. `discrepancies` is a JSON
-- array of what differed (the first 10,000; `discrepancy_count` counts them
-- all). The daily worker's run (`trigger_kind = 'daily'`) is unique per
-- account and day: that is how several nodes agree on who makes it.
CREATE TABLE reconciliations (
    id                 TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL REFERENCES merchants (id),
    channel_account_id TEXT NOT NULL REFERENCES channel_accounts (id),
    channel            TEXT NOT NULL,
    bill_date          TEXT NOT NULL,
    trigger_kind       TEXT NOT NULL,
    status             TEXT NOT NULL,
    matched            INTEGER NOT NULL DEFAULT 0,
    discrepancy_count  INTEGER NOT NULL DEFAULT 0,
    discrepancies      TEXT NOT NULL DEFAULT '[]',
    error              TEXT,
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER
) STRICT;

CREATE UNIQUE INDEX reconciliations_daily ON reconciliations (channel_account_id, bill_date)
    WHERE trigger_kind = 'daily';
CREATE INDEX reconciliations_account ON reconciliations (channel_account_id, bill_date);

-- What a channel account settled in a day, for the matching's other side.
CREATE INDEX payments_settled ON payments (channel_account_id, paid_at);
CREATE INDEX refunds_settled ON refunds (status, refunded_at);
