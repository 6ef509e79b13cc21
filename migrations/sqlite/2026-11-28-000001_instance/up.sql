-- The instance bootstrap of seed 002 happens once: the single row of this
-- table is what a second (or concurrent) bootstrap collides with. BIGINT,
-- not INTEGER: an INTEGER PRIMARY KEY would be the rowid, without the unique
-- index PostgreSQL has.
CREATE TABLE instance (
    singleton BIGINT PRIMARY KEY NOT NULL CHECK (singleton = 1),
    instance_id BLOB NOT NULL UNIQUE,
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    bootstrapped_at TEXT NOT NULL
);
ALTER TABLE channels ADD COLUMN topic TEXT;
