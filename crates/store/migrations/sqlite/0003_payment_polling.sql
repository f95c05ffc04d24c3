-- Status checks of open payments at their channel (polling and expiry).
-- `next_poll_at` is when the payment is checked next (NULL: not scheduled
-- yet, first check after the configured delay from creation), `poll_attempts`
-- how many checks were made, `poll_locked_until` the lease of the worker
-- checking it now, so two nodes never check one payment at once.
ALTER TABLE payments ADD COLUMN next_poll_at INTEGER;
ALTER TABLE payments ADD COLUMN poll_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN poll_locked_until INTEGER;

CREATE INDEX payments_poll ON payments (status, next_poll_at);
