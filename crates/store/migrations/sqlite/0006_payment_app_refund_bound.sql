-- The app that created a payment: its notifications are signed with that
-- app's secret (NULL for payments made before this column: the merchant's
-- oldest app signs those).
ALTER TABLE payments ADD COLUMN app_id TEXT REFERENCES apps (app_id);

-- A payment never has more refunded than it took, whatever writes it.
CREATE TRIGGER payments_refunded_within_amount
BEFORE UPDATE OF refunded_minor ON payments
WHEN NEW.refunded_minor < 0 OR NEW.refunded_minor > NEW.amount_minor
BEGIN
    SELECT RAISE(ABORT, 'payments.refunded_minor must stay between 0 and amount_minor');
END;
