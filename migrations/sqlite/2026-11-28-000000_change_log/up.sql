-- Changes that invalidate cached credential decisions, for processes that
-- cannot hear pg_notify: on SQLite an operator's CLI (another process)
-- writes here and the server polls. Kept in step with the PostgreSQL
-- migration of the same name.
CREATE TABLE change_log (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    change TEXT NOT NULL,
    at TEXT NOT NULL
);
