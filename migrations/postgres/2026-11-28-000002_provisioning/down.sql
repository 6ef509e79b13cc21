ALTER TABLE provisioning_instances DROP COLUMN agent_id;
DROP TABLE certificate_authorities;
