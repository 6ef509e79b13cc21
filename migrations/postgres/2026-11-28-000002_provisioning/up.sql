-- Seed 003 machine provisioning. Kept in step with the SQLite migration of
-- the same name; a test compares the two.
--
-- Instance-wide (every tenant's machines chain to it): the certificate
-- authority that signs machine client certificates. The private key is
-- sealed under the master key by the caller. The current CA is the newest
-- one not retired; a retired CA stays so the certificates it signed can be
-- verified until they expire.
CREATE TABLE certificate_authorities (
    id UUID PRIMARY KEY,
    cert_pem TEXT NOT NULL,
    key_sealed BYTEA NOT NULL,
    not_after TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ
);

-- The agent a machine's client certificate authenticates as on the
-- /v1/agent/* self endpoints. Deleting the agent unlinks the machine (it
-- then authenticates as nobody) rather than being refused.
ALTER TABLE provisioning_instances
    ADD COLUMN agent_id UUID REFERENCES agents (id) ON DELETE SET NULL;
