//! Encryption at rest for the secrets Agentry must be able to read back
//! (JWT signing keys, the CA key, provisioning secrets), under one master
//! key that lives outside the database.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::Zeroizing;

use crate::secret::random_bytes;

/// Format version of a sealed blob, so the algorithm can change later.
const VERSION: u8 = 1;
const NONCE_BYTES: usize = 12;

/// The key that seals secrets at rest. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 64 hexadecimal characters (32 bytes)")]
    KeyFormat,
    #[error("the sealed value is damaged, or was sealed with another master key")]
    Open,
}

impl MasterKey {
    pub fn generate() -> Self {
        Self(Zeroizing::new(random_bytes::<32>()))
    }

    /// Reads the key from its text form: 64 hex digits (surrounding
    /// whitespace, such as a trailing newline in a key file, is ignored).
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(SealError::KeyFormat);
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (index, pair) in text.as_bytes().chunks(2).enumerate() {
            let digits = std::str::from_utf8(pair).map_err(|_| SealError::KeyFormat)?;
            bytes[index] = u8::from_str_radix(digits, 16).map_err(|_| SealError::KeyFormat)?;
        }
        Ok(Self(bytes))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// Encrypts `plaintext`, binding it to `context` (e.g. "signing-key:k1")
    /// so a sealed value cannot be swapped into another row unnoticed.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.0.as_slice()));
        let nonce = random_bytes::<NONCE_BYTES>();
        let payload = Payload {
            msg: plaintext,
            aad: context,
        };
        // Encryption with a valid key and nonce cannot fail for inputs of
        // this size; an empty result would only fail to open later.
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Open)?;
        if version != VERSION || rest.len() < NONCE_BYTES {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.0.as_slice()));
        let payload = Payload {
            msg: ciphertext,
            aad: context,
        };
        cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"private key bytes", b"signing-key:k1");
        assert_eq!(sealed[0], VERSION);
        assert_eq!(
            &*key.open(&sealed, b"signing-key:k1").unwrap(),
            b"private key bytes"
        );
        assert_eq!(key.open(&sealed, b"signing-key:k2"), Err(SealError::Open));
        assert_eq!(
            MasterKey::generate().open(&sealed, b"signing-key:k1"),
            Err(SealError::Open)
        );
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&damaged, b"signing-key:k1"), Err(SealError::Open));
        assert_eq!(key.open(&[], b""), Err(SealError::Open));
        assert_ne!(
            key.seal(b"x", b""),
            key.seal(b"x", b""),
            "fresh nonce each time"
        );
    }

    #[test]
    fn the_hex_form_round_trips_and_rejects_garbage() {
        let key = MasterKey::generate();
        let again = MasterKey::from_hex(&format!("{}\n", key.to_hex().as_str())).unwrap();
        let sealed = key.seal(b"x", b"");
        assert_eq!(&*again.open(&sealed, b"").unwrap(), b"x");
        assert_eq!(
            MasterKey::from_hex("abc").unwrap_err(),
            SealError::KeyFormat
        );
        assert_eq!(
            MasterKey::from_hex(&"zz".repeat(32)).unwrap_err(),
            SealError::KeyFormat
        );
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }
}
