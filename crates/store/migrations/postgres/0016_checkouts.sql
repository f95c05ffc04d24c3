-- Checkouts (收银台): one merchant order that the payer may try to pay
-- through several channels. Each try is a payment (an attempt) naming its
-- checkout. The first attempt to succeed wins the checkout, in the same
-- statement as its success; an attempt that succeeds after another won is
-- recorded in `checkout_duplicates`, in that same statement, and refunded
-- from there. So no paid attempt is ever forgotten.
CREATE TABLE checkouts (
    id                 TEXT PRIMARY KEY,
    merchant_id        TEXT NOT NULL REFERENCES merchants (id),
    app_id             TEXT NOT NULL,
    merchant_order_no  TEXT NOT NULL,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    description        TEXT NOT NULL,
    notify_url         TEXT NOT NULL,
    return_url         TEXT,
    metadata           JSONB NOT NULL,
    request_hash       TEXT NOT NULL,
    -- The secret in the checkout's cashier URL: whoever has the URL may pay.
    cashier_token      TEXT NOT NULL,
    winner_payment_id  TEXT,
    won_at             TIMESTAMPTZ,
    -- Set once every other attempt is final after a winner.
    attempts_closed_at TIMESTAMPTZ,
    expires_at         TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (merchant_id, merchant_order_no)
);

CREATE INDEX checkouts_to_close ON checkouts (won_at)
    WHERE winner_payment_id IS NOT NULL AND attempts_closed_at IS NULL;

ALTER TABLE payments ADD COLUMN checkout_id TEXT REFERENCES checkouts (id);
CREATE INDEX payments_checkout ON payments (checkout_id) WHERE checkout_id IS NOT NULL;

CREATE TABLE checkout_duplicates (
    payment_id  TEXT PRIMARY KEY REFERENCES payments (id),
    checkout_id TEXT NOT NULL REFERENCES checkouts (id),
    refund_id   TEXT REFERENCES refunds (id),
    created_at  TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ
);

CREATE INDEX checkout_duplicates_open ON checkout_duplicates (created_at)
    WHERE resolved_at IS NULL;

CREATE FUNCTION audit_checkouts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audit_row('checkout', NEW.id, 'created',
            jsonb_build_object('merchant_id', NEW.merchant_id, 'amount', NEW.amount_minor,
                               'currency', NEW.currency));
    ELSIF OLD.winner_payment_id IS NULL AND NEW.winner_payment_id IS NOT NULL THEN
        PERFORM audit_row('checkout', NEW.id, 'won',
            jsonb_build_object('payment_id', NEW.winner_payment_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION audit_checkout_duplicates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM audit_row('checkout', NEW.checkout_id, 'duplicate',
        jsonb_build_object('payment_id', NEW.payment_id));
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_checkouts AFTER INSERT OR UPDATE OF winner_payment_id ON checkouts
    FOR EACH ROW EXECUTE FUNCTION audit_checkouts();
CREATE TRIGGER audit_checkout_duplicates AFTER INSERT ON checkout_duplicates
    FOR EACH ROW EXECUTE FUNCTION audit_checkout_duplicates();
