use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a secret: what the database keeps instead of the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Compares in constant time, so a caller holding a near-miss learns
    /// nothing from how long the comparison took.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not a secret, but a prefix is enough to tell two apart.
        write!(
            f,
            "SecretHash({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A one-time token in its wire form: 64 lowercase hex digits (256 bits),
/// the format seed 003 gives bootstrap and download tokens.
pub fn mint_hex_token() -> String {
    hex(&random_bytes::<32>())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `sha256:<hex>`, the form seed 003 gives artifact hashes and Agentry
/// gives certificate fingerprints.
pub fn sha256_label(digest: &[u8]) -> String {
    format!("sha256:{}", hex(digest))
}

/// An invite token (seed 002): `inv_` and 64 hex digits, so a leaked one
/// is recognisable.
pub fn mint_invite_token() -> String {
    format!("inv_{}", mint_hex_token())
}

/// Whether `text` has the shape of [`mint_hex_token`]'s output.
pub fn is_hex_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn hash_secret(secret: &str) -> SecretHash {
    SecretHash(Sha256::digest(secret.as_bytes()).into())
}

/// `N` bytes from the operating system's random source. Failure to read it
/// is unrecoverable: minting a guessable secret is worse than stopping.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    #[expect(
        clippy::expect_used,
        reason = "without an OS random source no secret can be minted safely"
    )]
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source failed");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_and_compare_by_value() {
        let hash = hash_secret("abc");
        assert_eq!(
            hash.0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
        assert!(hash.matches(&hash_secret("abc")));
        assert!(!hash.matches(&hash_secret("abd")));
        assert_eq!(format!("{hash:?}"), "SecretHash(ba7816bf..)");
    }

    #[test]
    fn one_time_tokens_have_their_wire_shapes() {
        let token = mint_hex_token();
        assert!(is_hex_token(&token), "{token}");
        assert_ne!(token, mint_hex_token());
        let invite = mint_invite_token();
        assert!(invite.starts_with("inv_") && is_hex_token(&invite[4..]));
        assert!(!is_hex_token(&token.to_uppercase()));
        assert!(!is_hex_token(&token[1..]));
    }

    #[test]
    fn random_bytes_differ_between_calls() {
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
    }
}
