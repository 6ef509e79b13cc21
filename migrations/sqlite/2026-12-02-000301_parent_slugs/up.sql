-- The parent's slug beside its id, for a delegated agent: seed 001's
-- profile `parentAgentId` is the parent's `agent_id`, as in the child's
-- metadata. Slugs never change, so it is written once with the child.
ALTER TABLE agents ADD COLUMN parent_slug TEXT;
UPDATE agents
SET parent_slug = (SELECT parents.slug FROM agents parents WHERE parents.id = agents.parent_id)
WHERE parent_id IS NOT NULL;
