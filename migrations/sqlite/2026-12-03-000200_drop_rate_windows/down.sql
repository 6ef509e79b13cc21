CREATE TABLE rate_windows (
    agent_id BLOB PRIMARY KEY NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    minute BIGINT NOT NULL,
    count BIGINT NOT NULL
);
