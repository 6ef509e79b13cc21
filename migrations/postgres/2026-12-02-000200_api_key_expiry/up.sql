-- Seed 002's agent keys may expire (`expires_at`); NULL never expires.
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMPTZ;
