-- The pollers claim due payments and refunds through indexes that hold
-- them in due order, first polls included (created_at), so a claim reads
-- about as many rows as it takes however many are open.
DROP INDEX payments_poll;
CREATE INDEX payments_poll ON payments (status, next_poll_at, created_at);
DROP INDEX refunds_poll;
CREATE INDEX refunds_poll ON refunds (status, next_poll_at, created_at);
-- The notifier's claim passes over merchants whose delivery slots are full
-- and events leased to a delivery in flight; with both columns in the index
-- it does so without reading the rows.
DROP INDEX events_due;
CREATE INDEX events_due ON events (delivered_at, dead, next_attempt_at, merchant_id, locked_until);
