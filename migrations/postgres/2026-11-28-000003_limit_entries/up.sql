-- The agent-limits map as one row per entry instead of one JSON document
-- per tenant: a bootstrap adds its agent's entry without locking or
-- rewriting the whole map, and a reader fetches one entry by key. The map's
-- version is the highest of its header's and its entries' versions, all
-- drawn from one sequence, so it still grows with every change.
CREATE SEQUENCE agent_limits_version;
SELECT setval('agent_limits_version', coalesce((SELECT max(version) FROM agent_limits), 0) + 1, false);

CREATE TABLE agent_limit_entries (
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    limit_key TEXT NOT NULL,
    max_budget_micros BIGINT,
    max_requests_per_minute BIGINT,
    version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, limit_key)
);

INSERT INTO agent_limit_entries
    (tenant_id, limit_key, max_budget_micros, max_requests_per_minute, version)
SELECT limits.tenant_id,
       entry.key,
       round((entry.value ->> 'max_budget')::numeric * 1000000)::bigint,
       (entry.value ->> 'max_requests_per_minute')::bigint,
       limits.version
FROM agent_limits AS limits, jsonb_each(limits.document::jsonb) AS entry;

ALTER TABLE agent_limits DROP COLUMN document;
