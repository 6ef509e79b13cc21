ALTER TABLE agent_limits ADD COLUMN document TEXT NOT NULL DEFAULT '{}';
UPDATE agent_limits SET document = coalesce((
    SELECT jsonb_object_agg(entry.limit_key, jsonb_strip_nulls(jsonb_build_object(
        'max_budget', entry.max_budget_micros / 1000000.0,
        'max_requests_per_minute', entry.max_requests_per_minute)))::text
    FROM agent_limit_entries AS entry
    WHERE entry.tenant_id = agent_limits.tenant_id
), '{}');
DROP TABLE agent_limit_entries;
DROP SEQUENCE agent_limits_version;
