ALTER TABLE agent_limits ADD COLUMN document TEXT NOT NULL DEFAULT '{}';
UPDATE agent_limits SET document = coalesce((
    SELECT json_group_object(entry.limit_key, json_patch('{}', json_object(
        'max_budget', entry.max_budget_micros / 1000000.0,
        'max_requests_per_minute', entry.max_requests_per_minute)))
    FROM agent_limit_entries AS entry
    WHERE entry.tenant_id = agent_limits.tenant_id
), '{}');
DROP TABLE agent_limit_entries;
DROP TABLE agent_limits_version;
