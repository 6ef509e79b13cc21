//! Who is calling, and may they?
//!
//! This crate owns every credential Agentry mints or checks, and the rules
//! about them: API keys (`api_key`), one-time tokens and secret hashing
//! (`secret`), passwords (`password`), agent JWTs and the JWKS (`jwt`),
//! sealing of secrets at rest under the master key (`sealing`), and the table
//! from roles to permissions (`permissions`). Reading the clock is the
//! caller's job: every time-dependent check takes `now`.
//!
//! It must never depend on actix, diesel or tokio: the HTTP extractors live in
//! `agentry-http` and persistence in `agentry-store`, so the rules here can be
//! tested and embedded without a server or a database.
//!
//! It also owns the built-in certificate authority of seed 003 (`ca`),
//! which signs machines' CSRs and the mTLS listener's certificate.

mod api_key;
pub mod ca;
mod jwt;
mod password;
mod permissions;
mod sealing;
mod secret;

pub use api_key::{ApiKey, ApiKeyError, ApiKeyKind};
pub use ca::{AgentIdentity, BoughtWith, CaError, CertificateAuthority, IssuedCertificate};
pub use jwt::{
    Audience, Claims, Jwk, Jwks, JwtError, JwtIssuer, JwtPublicKey, JwtSigningKey, KeyRing, LEEWAY,
    header_kid,
};
pub use password::{
    HashingMemory, hash_password, verify_password, verify_password_for_unknown_account,
};
pub use permissions::{Permission, permissions, role_has};
pub use sealing::{MasterKey, SealError};
pub use secret::{
    SecretHash, hash_secret, hex, is_hex_token, mint_hex_token, mint_invite_token, random_bytes,
    sha256_label,
};
