-- Group buys (拼团): a deal that happens only when `size` buyers have paid
-- before `expires_at`. Each member is a payment naming the group. A seat is
-- taken in the transaction that inserts the member's payment, only while
-- the group is open and not full, and given back in the transaction that
-- closes or fails that payment; so the group never has more than `size`
-- members who may still pay. The member's success counts in its own
-- transaction, and the one that completes the group succeeds it there (with
-- its `group.succeeded` event). A group that expires short fails, and its
-- paid members are refunded (`settled_at` is set once that is done, and
-- cleared again if a member's payment succeeds after the failure).
CREATE TABLE group_buys (
    id                TEXT PRIMARY KEY,
    merchant_id       TEXT NOT NULL REFERENCES merchants (id),
    app_id            TEXT NOT NULL,
    merchant_group_no TEXT NOT NULL,
    size              INTEGER NOT NULL CHECK (size >= 2 AND size <= 1000),
    amount_minor      BIGINT CHECK (amount_minor IS NULL OR amount_minor > 0),
    currency          TEXT NOT NULL,
    notify_url        TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    status            TEXT NOT NULL,
    seats_taken       INTEGER NOT NULL DEFAULT 0 CHECK (seats_taken >= 0 AND seats_taken <= size),
    paid_count        INTEGER NOT NULL DEFAULT 0 CHECK (paid_count >= 0 AND paid_count <= size),
    expires_at        TIMESTAMPTZ NOT NULL,
    succeeded_at      TIMESTAMPTZ,
    failed_at         TIMESTAMPTZ,
    settled_at        TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (merchant_id, merchant_group_no)
);

CREATE INDEX group_buys_expiring ON group_buys (expires_at) WHERE status = 'open';
CREATE INDEX group_buys_to_settle ON group_buys (failed_at)
    WHERE status = 'failed' AND settled_at IS NULL;

ALTER TABLE payments ADD COLUMN group_id TEXT REFERENCES group_buys (id);
CREATE INDEX payments_group ON payments (group_id) WHERE group_id IS NOT NULL;

CREATE FUNCTION audit_group_buys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM audit_row('group', NEW.id, 'created',
            jsonb_build_object('merchant_id', NEW.merchant_id, 'size', NEW.size,
                               'amount', NEW.amount_minor, 'currency', NEW.currency));
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM audit_row('group', NEW.id, 'status',
            jsonb_build_object('from', OLD.status, 'to', NEW.status,
                               'paid_count', NEW.paid_count));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_group_buys AFTER INSERT OR UPDATE OF status ON group_buys
    FOR EACH ROW EXECUTE FUNCTION audit_group_buys();
