//! Password hashing: argon2id in PHC string form (seed 002's accounts).

use std::sync::OnceLock;

use agentry_domain::Password;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::secret::random_bytes;

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string to store for `password`, with a fresh random salt.
pub fn hash_password(password: &Password) -> String {
    #[expect(
        clippy::expect_used,
        reason = "16 bytes is within the salt length bounds (4 to 48)"
    )]
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("a 16-byte salt encodes");
    hasher()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
}

/// Whether `plaintext` matches the stored PHC string. Malformed stored
/// hashes never match.
pub fn verify_password(stored: &str, plaintext: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            hasher()
                .verify_password(plaintext.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Does the work of one verification against a hash nobody can match, so a
/// login for an unknown account takes as long as one with a wrong password.
pub fn verify_password_for_unknown_account(plaintext: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        // The salt is random, so no plaintext is known to match this hash.
        let filler = Password::new("timing equaliser, never a real password".to_owned());
        filler
            .map(|filler| hash_password(&filler))
            .unwrap_or_default()
    });
    let _ = verify_password(dummy, plaintext);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify() {
        let password = Password::new("correct horse battery staple".into()).unwrap();
        let stored = hash_password(&password);
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify_password(&stored, "correct horse battery staple"));
        assert!(!verify_password(&stored, "correct horse battery stapler"));
        assert_ne!(stored, hash_password(&password), "salted");
        assert!(!verify_password("not a phc string", "anything"));
        verify_password_for_unknown_account("anything");
    }
}
