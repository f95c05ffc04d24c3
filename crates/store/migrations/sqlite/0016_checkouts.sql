-- Checkouts (收银台): one merchant order that the payer may try to pay
-- through several channels. Each try is a payment (an attempt) naming its
-- checkout. The first attempt to succeed wins the checkout, in the same
-- transaction as its success; an attempt that succeeds after another won
-- is recorded in `checkout_duplicates`, in that same transaction, and
-- refunded from there. So no paid attempt is ever forgotten.
CREATE TABLE checkouts (
    id                 TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL REFERENCES merchants (id),
    app_id             TEXT NOT NULL,
    merchant_order_no  TEXT NOT NULL,
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    description        TEXT NOT NULL,
    notify_url         TEXT NOT NULL,
    return_url         TEXT,
    metadata           TEXT NOT NULL,
    request_hash       TEXT NOT NULL,
    -- The secret in the checkout's cashier URL: whoever has the URL may pay.
    cashier_token      TEXT NOT NULL,
    winner_payment_id  TEXT,
    won_at             INTEGER,
    -- Set once every other attempt is final after a winner.
    attempts_closed_at INTEGER,
    expires_at         INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (merchant_id, merchant_order_no)
) STRICT;

CREATE INDEX checkouts_to_close ON checkouts (won_at)
    WHERE winner_payment_id IS NOT NULL AND attempts_closed_at IS NULL;

ALTER TABLE payments ADD COLUMN checkout_id TEXT REFERENCES checkouts (id);
CREATE INDEX payments_checkout ON payments (checkout_id) WHERE checkout_id IS NOT NULL;

CREATE TABLE checkout_duplicates (
    payment_id  TEXT PRIMARY KEY REFERENCES payments (id),
    checkout_id TEXT NOT NULL REFERENCES checkouts (id),
    refund_id   TEXT REFERENCES refunds (id),
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER
) STRICT;

CREATE INDEX checkout_duplicates_open ON checkout_duplicates (created_at)
    WHERE resolved_at IS NULL;

CREATE TRIGGER audit_checkout_created AFTER INSERT ON checkouts
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'checkout', NEW.id, 'created',
            json_object('merchant_id', NEW.merchant_id, 'amount', NEW.amount_minor,
                        'currency', NEW.currency));
END;

CREATE TRIGGER audit_checkout_won AFTER UPDATE OF winner_payment_id ON checkouts
WHEN OLD.winner_payment_id IS NULL AND NEW.winner_payment_id IS NOT NULL
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'checkout', NEW.id, 'won', json_object('payment_id', NEW.winner_payment_id));
END;

CREATE TRIGGER audit_checkout_duplicate AFTER INSERT ON checkout_duplicates
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'checkout', NEW.checkout_id, 'duplicate', json_object('payment_id', NEW.payment_id));
END;
