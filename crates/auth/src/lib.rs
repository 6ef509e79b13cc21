//! Who is calling, and may they?
//!
//! This crate will own every credential Agentry mints or checks (API keys,
//! one-time tokens, passwords, agent JWTs and the JWKS, the built-in CA) and
//! the table from roles to permissions. It is being filled in by the auth
//! issue; today it holds nothing but this contract.
//!
//! It must never depend on actix, diesel or tokio: the HTTP extractors live in
//! `agentry-http` and persistence in `agentry-store`, so the rules here can be
//! tested and embedded without a server or a database.
