-- The ledger: every movement of money as balanced double-entry postings,
-- written in the transaction of the state change that causes it. A ledger
-- transaction (`txn_id`, e.g. `capture:pay_…`, `refund:ref_…`) has one row
-- per account it touches; its debits equal its credits. The primary key
-- makes posting the same transaction twice impossible.
CREATE TABLE ledger_postings (
    txn_id             TEXT NOT NULL,
    account            TEXT NOT NULL,
    merchant_id        TEXT NOT NULL REFERENCES merchants (id),
    channel_account_id TEXT NOT NULL,
    currency           TEXT NOT NULL,
    debit_minor        BIGINT NOT NULL CHECK (debit_minor >= 0),
    credit_minor       BIGINT NOT NULL CHECK (credit_minor >= 0),
    payment_id         TEXT NOT NULL REFERENCES payments (id),
    refund_id          TEXT REFERENCES refunds (id),
    created_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (txn_id, account),
    CHECK ((debit_minor = 0) <> (credit_minor = 0))
);

CREATE INDEX ledger_postings_merchant ON ledger_postings (merchant_id, channel_account_id);
CREATE INDEX ledger_postings_payment ON ledger_postings (payment_id);

-- Opening entries for money that moved before the ledger existed.
INSERT INTO ledger_postings
SELECT 'capture:' || id, 'channel_receivable', merchant_id, channel_account_id, currency,
       amount_minor, 0, id, NULL, COALESCE(paid_at, updated_at)
FROM payments WHERE status = 'succeeded';
INSERT INTO ledger_postings
SELECT 'capture:' || id, 'merchant_revenue', merchant_id, channel_account_id, currency,
       0, amount_minor, id, NULL, COALESCE(paid_at, updated_at)
FROM payments WHERE status = 'succeeded';
INSERT INTO ledger_postings
SELECT 'refund:' || r.id, 'merchant_refunds', r.merchant_id, p.channel_account_id, r.currency,
       r.amount_minor, 0, r.payment_id, r.id, COALESCE(r.refunded_at, r.updated_at)
FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.status = 'succeeded';
INSERT INTO ledger_postings
SELECT 'refund:' || r.id, 'channel_receivable', r.merchant_id, p.channel_account_id, r.currency,
       0, r.amount_minor, r.payment_id, r.id, COALESCE(r.refunded_at, r.updated_at)
FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.status = 'succeeded';
