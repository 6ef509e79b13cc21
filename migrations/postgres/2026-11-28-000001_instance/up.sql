-- The instance bootstrap of seed 002 happens once: the single row of this
-- table is what a second (or concurrent) bootstrap collides with.
CREATE TABLE instance (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    instance_id UUID NOT NULL UNIQUE,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    bootstrapped_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE channels ADD COLUMN topic TEXT;
