-- Which route created an agent: seed 000's idempotent repeat answers only
-- for agents a bootstrap created (see docs/api.md).
ALTER TABLE agents ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';
-- Agents made before origins were kept: a top-level agent that a bootstrap
-- activated and that is no workspace account counts as bootstrapped.
UPDATE agents SET origin = 'bootstrap'
WHERE parent_id IS NULL
  AND id IN (SELECT agent_id FROM lifecycle_events WHERE cause = 'bootstrap')
  AND id NOT IN (SELECT agent_id FROM users WHERE agent_id IS NOT NULL);
UPDATE agents SET origin = 'delegation' WHERE parent_id IS NOT NULL;
-- A user's session tokens carry the epoch they were minted in; logout and a
-- password change move it on, so every older session dies at once.
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
