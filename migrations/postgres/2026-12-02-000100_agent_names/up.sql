-- An agent's name as the client wrote it (seeds 002 and 004 allow mixed
-- case and more); NULL when it is the slug itself. The slug stays the
-- tenant-unique key, derived from the lowercased name (docs/api.md).
ALTER TABLE agents ADD COLUMN name TEXT;
