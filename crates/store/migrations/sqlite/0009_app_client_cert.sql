-- An app bound to a client certificate (mutual TLS) is served only over a
-- connection that presented it: the SHA-256 of its DER, lowercase hex.
ALTER TABLE apps ADD COLUMN client_cert_sha256 TEXT;
