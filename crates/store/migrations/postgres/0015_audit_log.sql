-- The audit trail (交易留痕): every change to merchants, apps, channel
-- accounts, payments and refunds, and every merchant event made, delivered,
-- given up on or retried, appends a row here, written by triggers in
-- the same transaction as the change, so no change can happen without its
-- row. Secrets are never copied: an app or account row says only which
-- kinds of field changed.
--
-- Rows are chained afterwards by the sealer (`chain_pos`, `prev_hash`,
-- `hash` = SHA-256 over the previous hash and the row), in the order it
-- seals them (not `seq` order: transactions commit out of order); `paymux
-- audit verify` recomputes the chain, so editing, deleting or reordering a
-- sealed row is found.
CREATE TABLE audit_log (
    seq          BIGSERIAL PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    action       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    chain_pos    BIGINT UNIQUE,
    prev_hash    TEXT,
    hash         TEXT
);

CREATE INDEX audit_log_unsealed ON audit_log (seq) WHERE chain_pos IS NULL;
CREATE INDEX audit_log_subject ON audit_log (subject_id);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_row(kind TEXT, id TEXT, action TEXT, detail JSONB) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO audit_log (subject_kind, subject_id, action, detail)
    VALUES (kind, id, action, detail::text)
$$;

CREATE FUNCTION audit_merchants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM audit_row('merchant', NEW.id, 'created', jsonb_build_object('name', NEW.name));
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_apps() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audit_row('app', NEW.app_id, 'created',
            jsonb_build_object('merchant_id', NEW.merchant_id));
    ELSE
        PERFORM audit_row('app', NEW.app_id, 'updated',
            jsonb_build_object('secret_rotated', OLD.secret IS DISTINCT FROM NEW.secret,
                               'request_key', NEW.request_key_alg,
                               'client_cert_sha256', NEW.client_cert_sha256));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_channel_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audit_row('channel_account', NEW.id, 'created',
            jsonb_build_object('merchant_id', NEW.merchant_id, 'channel', NEW.channel,
                               'sandbox', NEW.sandbox));
    ELSE
        PERFORM audit_row('channel_account', NEW.id, 'updated',
            jsonb_build_object('enabled', NEW.enabled,
                               'config_changed', OLD.config IS DISTINCT FROM NEW.config));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_payments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audit_row('payment', NEW.id, 'created',
            jsonb_build_object('merchant_id', NEW.merchant_id, 'status', NEW.status,
                               'amount', NEW.amount_minor, 'currency', NEW.currency,
                               'channel', NEW.channel, 'method', NEW.method));
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM audit_row('payment', NEW.id, 'status',
            jsonb_build_object('from', OLD.status, 'to', NEW.status,
                               'channel_trade_no', NEW.channel_trade_no));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_refunds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audit_row('refund', NEW.id, 'created',
            jsonb_build_object('payment_id', NEW.payment_id, 'status', NEW.status,
                               'amount', NEW.amount_minor, 'currency', NEW.currency));
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM audit_row('refund', NEW.id, 'status',
            jsonb_build_object('from', OLD.status, 'to', NEW.status,
                               'channel_refund_no', NEW.channel_refund_no));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audit_row('event', NEW.id, 'created',
            jsonb_build_object('type', NEW.event_type, 'payment_id', NEW.payment_id,
                               'refund_id', NEW.refund_id));
    ELSIF OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL THEN
        PERFORM audit_row('event', NEW.id, 'delivered',
            jsonb_build_object('attempts', NEW.attempts));
    ELSIF OLD.dead IS DISTINCT FROM NEW.dead THEN
        PERFORM audit_row('event', NEW.id, CASE WHEN NEW.dead THEN 'dead' ELSE 'retried' END,
            jsonb_build_object('attempts', NEW.attempts));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_merchants AFTER INSERT ON merchants
    FOR EACH ROW EXECUTE FUNCTION audit_merchants();
CREATE TRIGGER audit_apps AFTER INSERT OR UPDATE ON apps
    FOR EACH ROW EXECUTE FUNCTION audit_apps();
CREATE TRIGGER audit_channel_accounts AFTER INSERT OR UPDATE ON channel_accounts
    FOR EACH ROW EXECUTE FUNCTION audit_channel_accounts();
CREATE TRIGGER audit_payments AFTER INSERT OR UPDATE OF status ON payments
    FOR EACH ROW EXECUTE FUNCTION audit_payments();
CREATE TRIGGER audit_refunds AFTER INSERT OR UPDATE OF status ON refunds
    FOR EACH ROW EXECUTE FUNCTION audit_refunds();
CREATE TRIGGER audit_events AFTER INSERT OR UPDATE OF delivered_at, dead ON events
    FOR EACH ROW EXECUTE FUNCTION audit_events();
