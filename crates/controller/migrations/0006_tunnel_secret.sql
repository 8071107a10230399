-- The SHA-256 of the tunnel secret gatehouse chose when it created the tunnel (hex): when a
-- create's answer is lost and the retry meets "name already exists", the tunnel found is
-- adopted only if its token carries this secret.
ALTER TABLE tunnels ADD COLUMN secret_sha256 TEXT NOT NULL DEFAULT '';
