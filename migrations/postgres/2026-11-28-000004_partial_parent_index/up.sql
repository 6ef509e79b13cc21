-- Only delegated agents have a parent, and only they are looked up by it.
-- Indexed over every agent, (tenant_id, parent_id) also matched any lookup
-- by tenant: PostgreSQL's plan for finding an agent by slug, prepared while
-- the table was small and then reused, walked this index over all of the
-- tenant's agents (30 million index entries read for 8,000 bootstraps in
-- one benchmark run). Partial, it serves only `parent_id = ...`.
DROP INDEX agents_parent;
CREATE INDEX agents_parent ON agents (tenant_id, parent_id) WHERE parent_id IS NOT NULL;
