-- Back to revokedAt for registry revokes only.
UPDATE agents
SET revoked_at = NULL
WHERE lifecycle_state = 'terminated' AND NOT EXISTS (
    SELECT 1 FROM lifecycle_events events
    WHERE events.agent_id = agents.id AND events.to_state = 'terminated'
      AND events.cause = 'revoked');
