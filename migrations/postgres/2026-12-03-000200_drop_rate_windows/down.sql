CREATE TABLE rate_windows (
    agent_id UUID PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    minute BIGINT NOT NULL,
    count BIGINT NOT NULL
);
