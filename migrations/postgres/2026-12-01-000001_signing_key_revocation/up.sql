-- A signing key can be revoked (the day it leaks): unlike a retired key,
-- whose tokens stay valid until they expire, a revoked key verifies
-- nothing and leaves the JWKS at once.
ALTER TABLE signing_keys ADD COLUMN revoked_at TIMESTAMPTZ;
