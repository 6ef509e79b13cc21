use std::fmt;

use agentry_domain::ApiKeyRole;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::{SecretHash, hash_secret, random_bytes};

/// Lowercase RFC 4648 base32: unambiguous in logs and safe in URLs and
/// shell arguments.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BODY_BYTES: usize = 32;
const BODY_CHARS: usize = 52; // ceil(256 / 5)
const CHECK_CHARS: usize = 8; // 40 bits of SHA-256

/// Whose key it is, written into the key itself so a leaked key found by a
/// scanner tells what it grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyKind {
    Tenant(ApiKeyRole),
    /// An agent's own key (seeds 002 and 004).
    Agent,
}

impl ApiKeyKind {
    fn label(self) -> &'static str {
        match self {
            ApiKeyKind::Tenant(role) => role.as_str(),
            ApiKeyKind::Agent => "agent",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        if label == "agent" {
            return Some(ApiKeyKind::Agent);
        }
        label.parse().ok().map(ApiKeyKind::Tenant)
    }
}

/// Why a string is not an Agentry API key. Checked before any database
/// lookup, so a typo costs nothing and is told apart from a revoked key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("not an Agentry API key (they start with agy_)")]
    Prefix,
    #[error("the API key is malformed")]
    Malformed,
    #[error("the API key's checksum does not match; it was probably mistyped or truncated")]
    Checksum,
}

/// A freshly minted key (shown once) or a key presented by a caller.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    kind: ApiKeyKind,
    plaintext: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(agy_{}_<redacted>)", self.kind.label())
    }
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn checksum(prefixed_body: &str) -> String {
    let digest = Sha256::digest(prefixed_body.as_bytes());
    encode(&digest[..5])
}

impl ApiKey {
    /// A new key with 256 bits from the operating system's random source.
    pub fn mint(kind: ApiKeyKind) -> Self {
        let body = encode(&random_bytes::<BODY_BYTES>());
        let prefixed = format!("agy_{}_{body}", kind.label());
        let check = checksum(&prefixed);
        Self {
            kind,
            plaintext: format!("{prefixed}{check}"),
        }
    }

    /// Checks the shape and checksum of a presented key.
    pub fn parse(presented: &str) -> Result<Self, ApiKeyError> {
        let rest = presented.strip_prefix("agy_").ok_or(ApiKeyError::Prefix)?;
        let (label, tail) = rest.split_once('_').ok_or(ApiKeyError::Malformed)?;
        let kind = ApiKeyKind::from_label(label).ok_or(ApiKeyError::Malformed)?;
        if tail.len() != BODY_CHARS + CHECK_CHARS || !tail.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(ApiKeyError::Malformed);
        }
        let (body, check) = tail.split_at(BODY_CHARS);
        let prefixed = format!("agy_{label}_{body}");
        let expected = checksum(&prefixed);
        if !bool::from(check.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiKeyError::Checksum);
        }
        Ok(Self {
            kind,
            plaintext: presented.to_owned(),
        })
    }

    pub fn kind(&self) -> ApiKeyKind {
        self.kind
    }

    /// What the store keeps and looks keys up by.
    pub fn hash(&self) -> SecretHash {
        hash_secret(&self.plaintext)
    }

    /// The key itself, for showing once to whoever minted it.
    pub fn expose(&self) -> &str {
        &self.plaintext
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minted_keys_describe_themselves_and_parse_back() {
        let key = ApiKey::mint(ApiKeyKind::Tenant(ApiKeyRole::Provisioner));
        assert!(key.expose().starts_with("agy_provisioner_"));
        assert_eq!(key.expose().len(), "agy_provisioner_".len() + 60);
        let parsed = ApiKey::parse(key.expose()).unwrap();
        assert_eq!(parsed.kind(), ApiKeyKind::Tenant(ApiKeyRole::Provisioner));
        assert!(parsed.hash().matches(&key.hash()));
        assert_ne!(
            ApiKey::mint(ApiKeyKind::Agent).expose(),
            ApiKey::mint(ApiKeyKind::Agent).expose()
        );
        assert_eq!(format!("{key:?}"), "ApiKey(agy_provisioner_<redacted>)");
    }

    #[test]
    fn rejects_strangers_before_any_lookup() {
        assert_eq!(ApiKey::parse("sk-live-123"), Err(ApiKeyError::Prefix));
        assert_eq!(ApiKey::parse("agy_root_abc"), Err(ApiKeyError::Malformed));
        assert_eq!(ApiKey::parse("agy_agent_abc"), Err(ApiKeyError::Malformed));
        let key = ApiKey::mint(ApiKeyKind::Agent);
        let truncated = &key.expose()[..key.expose().len() - 1];
        assert_eq!(ApiKey::parse(truncated), Err(ApiKeyError::Malformed));
        let upper = key
            .expose()
            .to_uppercase()
            .replacen("AGY_AGENT_", "agy_agent_", 1);
        assert_eq!(ApiKey::parse(&upper), Err(ApiKeyError::Malformed));
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        assert_eq!(encode(b"f"), "my");
        assert_eq!(encode(b"foobar"), "mzxw6ytboi");
    }

    proptest! {
        /// Any single-character change to a minted key is refused: the
        /// checksum or the shape catches it.
        #[test]
        fn any_single_change_is_rejected(position in 0usize..76, replacement in proptest::char::any()) {
            let key = ApiKey::mint(ApiKeyKind::Tenant(ApiKeyRole::Admin));
            let text = key.expose();
            let position = position % text.len();
            let original = text.as_bytes()[position] as char;
            prop_assume!(replacement != original);
            let mut changed: Vec<char> = text.chars().collect();
            changed[position] = replacement;
            let changed: String = changed.into_iter().collect();
            prop_assert!(ApiKey::parse(&changed).is_err(), "{changed} was accepted");
        }
    }
}
