-- The app whose secret signs the event's notification (the one that made
-- the payment), so the notifier need not read the payment to find it.
-- Empty for earlier events and for refunds: those fall back to the payment.
ALTER TABLE events ADD COLUMN app_id TEXT;
