-- Aggregated QR codes (一码付): one static code a merchant prints; each
-- scan opens a checkout for it (of `amount_minor`, or of what the payer
-- enters when it is NULL) and its cashier page.
CREATE TABLE qr_codes (
    id           TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL REFERENCES merchants (id),
    app_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    amount_minor BIGINT CHECK (amount_minor IS NULL OR amount_minor > 0),
    currency     TEXT NOT NULL,
    notify_url   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX qr_codes_merchant ON qr_codes (merchant_id, id);
