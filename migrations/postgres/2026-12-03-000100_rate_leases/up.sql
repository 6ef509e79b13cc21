-- The requests-per-minute count replicas share: how many of an agent's
-- requests in one UTC minute have been leased to replicas so far. A row per
-- agent and busy minute, pruned once its minute is over; no foreign keys, as
-- nothing else refers to it and every lease would pay for their checks.
CREATE TABLE rate_leases (
    tenant_id UUID NOT NULL,
    agent_id UUID NOT NULL,
    minute BIGINT NOT NULL,
    granted INTEGER NOT NULL,
    last_grant INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, minute)
);
