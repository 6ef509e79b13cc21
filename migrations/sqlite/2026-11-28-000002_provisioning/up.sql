-- Seed 003 machine provisioning. Kept in step with the PostgreSQL migration
-- of the same name; a test compares the two.
--
-- Instance-wide (every tenant's machines chain to it): the certificate
-- authority that signs machine client certificates. The private key is
-- sealed under the master key by the caller. The current CA is the newest
-- one not retired; a retired CA stays so the certificates it signed can be
-- verified until they expire.
CREATE TABLE certificate_authorities (
    id BLOB PRIMARY KEY NOT NULL,
    cert_pem TEXT NOT NULL,
    key_sealed BLOB NOT NULL,
    not_after TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);

-- The agent a machine's client certificate authenticates as on the
-- /v1/agent/* self endpoints. Deleting the agent unlinks the machine (it
-- then authenticates as nobody) rather than being refused.
ALTER TABLE provisioning_instances
    ADD COLUMN agent_id BLOB REFERENCES agents (id) ON DELETE SET NULL;
