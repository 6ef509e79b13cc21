-- Seed 004's revokedAt is set at every termination (a registry revoke, a
-- lifecycle move to terminated, a parent's reclaim, an ancestor's
-- termination, an expiry), no longer at registry revokes alone. Agents
-- terminated before by another route get the time of their termination
-- from their lifecycle history (one move to terminated, which is final),
-- or their last update when the history has none.
UPDATE agents
SET revoked_at = COALESCE(
    (SELECT MAX(events.at) FROM lifecycle_events events
     WHERE events.agent_id = agents.id AND events.to_state = 'terminated'),
    updated_at)
WHERE lifecycle_state = 'terminated' AND revoked_at IS NULL;
