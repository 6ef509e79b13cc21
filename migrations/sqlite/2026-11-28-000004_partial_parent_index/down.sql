DROP INDEX agents_parent;
CREATE INDEX agents_parent ON agents (tenant_id, parent_id);
