-- SQLite (3.35+) drops a column that no index or constraint of another
-- column names; its own REFERENCES clause goes with it.
ALTER TABLE provisioning_instances DROP COLUMN agent_id;
DROP TABLE certificate_authorities;
