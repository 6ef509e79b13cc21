ALTER TABLE signing_keys DROP COLUMN revoked_at;
