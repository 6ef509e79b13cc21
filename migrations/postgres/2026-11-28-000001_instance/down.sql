ALTER TABLE channels DROP COLUMN topic;
DROP TABLE instance;
