-- An app may sign its requests with its own key pair instead of the shared
-- secret: the algorithm (`ed25519` or `rsa-sha256`) and the public key
-- (SubjectPublicKeyInfo PEM). NULL: the app signs with HMAC-SHA256.
ALTER TABLE apps ADD COLUMN request_key_alg TEXT;
ALTER TABLE apps ADD COLUMN request_key_pem TEXT;
