-- The audit trail (交易留痕): every change to merchants, apps, channel
-- accounts, payments and refunds, and every merchant event made, delivered,
-- given up on or retried, appends a row here, written by triggers in
-- the same transaction as the change, so no change can happen without its
-- row. Secrets are never copied: an app or account row says only which
-- kinds of field changed.
--
-- Rows are chained afterwards by the sealer (`chain_pos`, `prev_hash`,
-- `hash` = SHA-256 over the previous hash and the row), in the order it
-- seals them; `paymux audit verify` recomputes the chain, so editing,
-- deleting or reordering a sealed row is found.
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    action       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    chain_pos    INTEGER UNIQUE,
    prev_hash    TEXT,
    hash         TEXT
) STRICT;

CREATE INDEX audit_log_unsealed ON audit_log (seq) WHERE chain_pos IS NULL;
CREATE INDEX audit_log_subject ON audit_log (subject_id);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TRIGGER audit_merchant_created AFTER INSERT ON merchants
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'merchant', NEW.id, 'created', json_object('name', NEW.name));
END;

CREATE TRIGGER audit_app_created AFTER INSERT ON apps
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'app', NEW.app_id, 'created', json_object('merchant_id', NEW.merchant_id));
END;

CREATE TRIGGER audit_app_updated AFTER UPDATE ON apps
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'app', NEW.app_id, 'updated',
            json_object('secret_rotated', json(CASE WHEN OLD.secret IS NOT NEW.secret THEN 'true' ELSE 'false' END),
                        'request_key', NEW.request_key_alg,
                        'client_cert_sha256', NEW.client_cert_sha256));
END;

CREATE TRIGGER audit_channel_account_created AFTER INSERT ON channel_accounts
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'channel_account', NEW.id, 'created',
            json_object('merchant_id', NEW.merchant_id, 'channel', NEW.channel,
                        'sandbox', json(CASE NEW.sandbox WHEN 1 THEN 'true' ELSE 'false' END)));
END;

CREATE TRIGGER audit_channel_account_updated AFTER UPDATE ON channel_accounts
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'channel_account', NEW.id, 'updated',
            json_object('enabled', json(CASE NEW.enabled WHEN 1 THEN 'true' ELSE 'false' END),
                        'config_changed', json(CASE WHEN OLD.config IS NOT NEW.config THEN 'true' ELSE 'false' END)));
END;

CREATE TRIGGER audit_payment_created AFTER INSERT ON payments
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'payment', NEW.id, 'created',
            json_object('merchant_id', NEW.merchant_id, 'status', NEW.status,
                        'amount', NEW.amount_minor, 'currency', NEW.currency,
                        'channel', NEW.channel, 'method', NEW.method));
END;

CREATE TRIGGER audit_payment_moved AFTER UPDATE OF status ON payments
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'payment', NEW.id, 'status',
            json_object('from', OLD.status, 'to', NEW.status,
                        'channel_trade_no', NEW.channel_trade_no));
END;

CREATE TRIGGER audit_refund_created AFTER INSERT ON refunds
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'refund', NEW.id, 'created',
            json_object('payment_id', NEW.payment_id, 'status', NEW.status,
                        'amount', NEW.amount_minor, 'currency', NEW.currency));
END;

CREATE TRIGGER audit_refund_moved AFTER UPDATE OF status ON refunds
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'refund', NEW.id, 'status',
            json_object('from', OLD.status, 'to', NEW.status,
                        'channel_refund_no', NEW.channel_refund_no));
END;

CREATE TRIGGER audit_event_created AFTER INSERT ON events
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'event', NEW.id, 'created',
            json_object('type', NEW.event_type, 'payment_id', NEW.payment_id,
                        'refund_id', NEW.refund_id));
END;

CREATE TRIGGER audit_event_delivered AFTER UPDATE OF delivered_at ON events
WHEN OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'event', NEW.id, 'delivered', json_object('attempts', NEW.attempts));
END;

CREATE TRIGGER audit_event_dead AFTER UPDATE OF dead ON events
WHEN OLD.dead IS NOT NEW.dead
BEGIN
    INSERT INTO audit_log (at, subject_kind, subject_id, action, detail)
    VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
            'event', NEW.id, CASE NEW.dead WHEN 1 THEN 'dead' ELSE 'retried' END,
            json_object('attempts', NEW.attempts));
END;
