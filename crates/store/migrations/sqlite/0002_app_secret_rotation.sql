-- An app may keep its previous secret for a grace period after a rotation, so
-- merchants can roll the new secret out without a window of failed requests.
-- Both columns are NULL when there is no previous secret.
ALTER TABLE apps ADD COLUMN previous_secret TEXT;
ALTER TABLE apps ADD COLUMN previous_secret_expires_at INTEGER;
