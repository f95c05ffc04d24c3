-- Listing a merchant's payments and refunds, newest first, page by page
-- (ids are ULIDs, so id order is creation order).
CREATE INDEX payments_merchant_newest ON payments (merchant_id, id COLLATE "C");
CREATE INDEX refunds_merchant_newest ON refunds (merchant_id, id COLLATE "C");
