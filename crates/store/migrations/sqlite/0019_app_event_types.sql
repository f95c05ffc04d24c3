-- The event types an app receives (a JSON array of names), or NULL for the
-- default: every type but `payment.pending`.
ALTER TABLE apps ADD COLUMN event_types TEXT;
