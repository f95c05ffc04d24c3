-- How much of a payment was refunded (refunds that succeeded), in minor
-- units; raised in the transaction that marks a refund succeeded.
ALTER TABLE payments ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0;
