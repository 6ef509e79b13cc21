ALTER TABLE agents DROP COLUMN parent_slug;
