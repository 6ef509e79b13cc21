//! Password hashing: argon2id in PHC string form (seed 002's accounts).
//!
//! Each hash works in 19 MiB of memory. The `argon2` crate allocates and
//! frees that block per hash, and glibc's allocator, seeing a block that
//! large come and go, raises its threshold for handing such blocks back and
//! keeps them: a flood of wrong passwords grew the server by a hundred MB.
//! So the caller owns the memory ([`HashingMemory`], one per hashing
//! thread), and every hash reuses it.

use std::cell::RefCell;
use std::sync::OnceLock;

use agentry_domain::Password;
use argon2::password_hash::{
    Decimal, Ident, Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, Salt,
    SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::secret::random_bytes;

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

/// The working memory of argon2, kept between hashes. Empty until the
/// first hash; then as large as the largest parameters it has served.
#[derive(Default)]
pub struct HashingMemory(Vec<Block>);

impl std::fmt::Debug for HashingMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashingMemory({} blocks)", self.0.len())
    }
}

/// argon2 as a `PasswordHasher` that works in borrowed memory, so that
/// `password-hash`'s verification (which re-hashes with the stored
/// parameters and compares in constant time) runs in it too.
struct InMemory<'m> {
    memory: RefCell<&'m mut HashingMemory>,
}

impl PasswordHasher for InMemory<'_> {
    type Params = Params;

    fn hash_password_customized<'a>(
        &self,
        password: &[u8],
        algorithm: Option<Ident<'a>>,
        version: Option<Decimal>,
        params: Params,
        salt: impl Into<Salt<'a>>,
    ) -> argon2::password_hash::Result<PasswordHash<'a>> {
        let algorithm = algorithm
            .map(Algorithm::try_from)
            .transpose()?
            .unwrap_or_default();
        let version = version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let salt = salt.into();
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let blocks = params.block_count();
        let mut memory = self.memory.borrow_mut();
        if memory.0.len() < blocks {
            memory.0.resize(blocks, Block::default());
        }
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let output = Output::init_with(output_len, |out| {
            Ok(argon2.hash_password_into_with_memory(
                password,
                salt_bytes,
                out,
                &mut memory.0[..blocks],
            )?)
        })?;
        Ok(PasswordHash {
            algorithm: algorithm.ident(),
            version: Some(version.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(salt),
            hash: Some(output),
        })
    }

    fn hash_password<'a>(
        &self,
        password: &[u8],
        salt: impl Into<Salt<'a>>,
    ) -> argon2::password_hash::Result<PasswordHash<'a>> {
        self.hash_password_customized(
            password,
            Some(Algorithm::Argon2id.ident()),
            Some(Version::V0x13.into()),
            params(),
            salt,
        )
    }
}

/// The PHC string to store for `password`, with a fresh random salt.
pub fn hash_password(password: &Password, memory: &mut HashingMemory) -> String {
    #[expect(
        clippy::expect_used,
        reason = "16 bytes is within the salt length bounds (4 to 48)"
    )]
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("a 16-byte salt encodes");
    InMemory {
        memory: RefCell::new(memory),
    }
    .hash_password(password.expose().as_bytes(), &salt)
    .map(|hash| hash.to_string())
    .unwrap_or_default()
}

/// Whether `plaintext` matches the stored PHC string. Malformed stored
/// hashes never match, nor do ones asking for more memory or passes than
/// ours (only our own hashes are stored; one with a made-up cost could
/// otherwise ask for any amount of memory).
pub fn verify_password(stored: &str, plaintext: &str, memory: &mut HashingMemory) -> bool {
    let ours = params();
    PasswordHash::new(stored)
        .ok()
        .filter(|parsed| {
            Params::try_from(parsed).is_ok_and(|asked| {
                asked.m_cost() <= ours.m_cost() && asked.t_cost() <= ours.t_cost()
            })
        })
        .map(|parsed| {
            InMemory {
                memory: RefCell::new(memory),
            }
            .verify_password(plaintext.as_bytes(), &parsed)
            .is_ok()
        })
        .unwrap_or(false)
}

/// Does the work of one verification against a hash nobody can match, so a
/// login for an unknown account takes as long as one with a wrong password.
pub fn verify_password_for_unknown_account(plaintext: &str, memory: &mut HashingMemory) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        // The salt is random, so no plaintext is known to match this hash.
        let filler = Password::new("timing equaliser, never a real password".to_owned());
        filler
            .map(|filler| hash_password(&filler, &mut HashingMemory::default()))
            .unwrap_or_default()
    });
    let _ = verify_password(dummy, plaintext, memory);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify() {
        let memory = &mut HashingMemory::default();
        let password = Password::new("correct horse battery staple".into()).unwrap();
        let stored = hash_password(&password, memory);
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert_eq!(memory.0.len(), 19 * 1024, "the memory is kept");
        assert!(verify_password(
            &stored,
            "correct horse battery staple",
            memory
        ));
        assert!(!verify_password(
            &stored,
            "correct horse battery stapler",
            memory
        ));
        assert_ne!(stored, hash_password(&password, memory), "salted");
        assert!(!verify_password("not a phc string", "anything", memory));
        let greedy = stored.replace("m=19456", "m=4000000");
        assert!(
            !verify_password(&greedy, "correct horse battery staple", memory),
            "a stored cost above ours is refused before any work"
        );
        assert_eq!(memory.0.len(), 19 * 1024, "and allocates nothing");
        verify_password_for_unknown_account("anything", memory);
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own() {
        let memory = &mut HashingMemory::default();
        // Ours verifies the crate's, and the crate verifies ours, with
        // other parameters than ours too.
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        for params in [params(), Params::new(8 * 1024, 1, 1, Some(24)).unwrap()] {
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"a passphrase", &salt)
                .unwrap()
                .to_string();
            assert!(verify_password(&theirs, "a passphrase", memory), "{theirs}");
            assert!(!verify_password(&theirs, "a passphrase!", memory));
        }
        let ours = hash_password(&Password::new("a passphrase".into()).unwrap(), memory);
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"a passphrase", &parsed)
                .is_ok()
        );
    }
}
