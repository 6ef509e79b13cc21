-- Changes that invalidate cached credential decisions, for processes that
-- cannot hear pg_notify: on SQLite an operator's CLI (another process)
-- writes here and the server polls. PostgreSQL keeps the table for a
-- schema in step with SQLite but announces changes with pg_notify.
CREATE TABLE change_log (
    id BIGSERIAL PRIMARY KEY,
    change TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
