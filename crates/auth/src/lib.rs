//! Who is calling, and may they?
//!
//! This crate owns every credential Agentry mints or checks. Today that is
//! API keys and the secret hashing they share with one-time tokens; agent
//! JWTs and the JWKS, passwords, the CA and the role table follow with the
//! auth issue.
//!
//! It must never depend on actix, diesel or tokio: the HTTP extractors live in
//! `agentry-http` and persistence in `agentry-store`, so the rules here can be
//! tested and embedded without a server or a database.

mod api_key;
mod secret;

pub use api_key::{ApiKey, ApiKeyError, ApiKeyKind};
pub use secret::{SecretHash, hash_secret, random_bytes};
