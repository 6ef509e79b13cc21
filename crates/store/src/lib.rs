//! Persistence for Agentry's domain model.
//!
//! This crate will own the diesel schema, the repository functions and the
//! embedded migrations for both backends (SQLite by default, PostgreSQL in
//! production); the store issue fills it in. Every repository function takes
//! the tenant id, and every uniqueness or concurrency rule is the database's
//! job (constraints, transactions, version columns).
//!
//! It must never depend on actix or know about JSON wire formats; the rules it
//! enforces inside a transaction come from `agentry-lifecycle` and
//! `agentry-ledger`, never re-implemented in SQL.
