ALTER TABLE users DROP COLUMN session_epoch;
ALTER TABLE agents DROP COLUMN origin;
