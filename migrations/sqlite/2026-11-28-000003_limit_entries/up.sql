-- The agent-limits map as one row per entry; see the PostgreSQL migration.
-- SQLite has no sequences: versions come from a one-row counter, which
-- costs nothing more here since SQLite runs one writer at a time anyway.
CREATE TABLE agent_limits_version (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO agent_limits_version (id, value)
SELECT 1, coalesce(max(version), 0) FROM agent_limits;

CREATE TABLE agent_limit_entries (
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
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
       CAST(round(json_extract(entry.value, '$.max_budget') * 1000000) AS INTEGER),
       json_extract(entry.value, '$.max_requests_per_minute'),
       limits.version
FROM agent_limits AS limits, json_each(limits.document) AS entry;

ALTER TABLE agent_limits DROP COLUMN document;
