-- The app that created a payment: its notifications are signed with that
-- app's secret (NULL for payments made before this column: the merchant's
-- oldest app signs those).
ALTER TABLE payments ADD COLUMN app_id TEXT REFERENCES apps (app_id);

-- A payment never has more refunded than it took, whatever writes it.
ALTER TABLE payments ADD CONSTRAINT payments_refunded_within_amount
    CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor);
