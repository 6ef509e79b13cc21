//! The signing keys this process uses: the current one (to mint) and the
//! ring of public keys (to verify and to publish as JWKS), unsealed from the
//! store with the master key and reloaded when a rotation is announced; and
//! the machine CA of seed 003, sealed the same way. A revocation heard on
//! the change feed takes its key out of the ring at once, before any
//! reload.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use agentry_auth::{
    CertificateAuthority, JwtPublicKey, JwtSigningKey, KeyRing, MasterKey, random_bytes,
};
use agentry_store::{CaRecord, KidDigest, SigningKeyRecord, Store, StoreError};

use crate::tls::MachineCa;
use time::{Duration, OffsetDateTime};

/// Why the keys could not be loaded; fatal at start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {kid} cannot be opened: {reason}")]
    Sealed { kid: String, reason: String },
    #[error("the store holds no current signing key")]
    NoCurrentKey,
    #[error("the machine CA cannot be loaded: {0}")]
    Ca(String),
}

struct Loaded {
    /// `None` between the revocation of the current key and the reload
    /// that brings its replacement: minting then fails (503) rather than
    /// hand out tokens nobody will accept.
    current: Option<Arc<JwtSigningKey>>,
    ring: Arc<KeyRing>,
}

impl Loaded {
    /// Drops every key whose kid is in `revoked`.
    fn without(mut self, revoked: &HashSet<KidDigest>) -> Self {
        if self
            .current
            .as_ref()
            .is_some_and(|current| revoked.contains(&KidDigest::of(current.kid())))
        {
            self.current = None;
        }
        let gone: Vec<String> = self
            .ring
            .kids()
            .filter(|kid| revoked.contains(&KidDigest::of(kid)))
            .map(str::to_owned)
            .collect();
        for kid in gone {
            self.ring = Arc::new(self.ring.without(&kid));
        }
        self
    }
}

/// Least time between two reloads asked for by tokens naming an unknown
/// key: anyone can send such a token, and a reload reads and unseals keys.
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::seconds(10);

/// Shared by all workers; cheap to clone.
#[derive(Clone)]
pub struct Keys {
    master: MasterKey,
    /// Unix time of the last reload an unknown `kid` triggered.
    last_unknown_kid_reload: Arc<std::sync::atomic::AtomicI64>,
    /// Tokens live at most this long, so a key retired longer ago than this
    /// can have signed nothing still valid, and leaves the JWKS.
    max_token_lifetime: Duration,
    loaded: Arc<RwLock<Loaded>>,
    /// Every revocation this process knows of: those in the database at
    /// each load, and those heard on the change feed. A reload that read the
    /// database just before a revocation committed must not put the key
    /// back, so what it installs is filtered by this set. Revocations are
    /// rare operator acts: the set stays tiny.
    revoked: Arc<Mutex<HashSet<KidDigest>>>,
    ca: Arc<MachineCa>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

fn context(kid: &str) -> Vec<u8> {
    format!("agentry signing key {kid}").into_bytes()
}

/// A new key record, sealed, ready for `Store::rotate_signing_key`.
pub fn new_signing_key(master: &MasterKey, now: OffsetDateTime) -> SigningKeyRecord {
    let kid = format!("key-{}", uuid::Uuid::now_v7().simple());
    let key = JwtSigningKey::from_secret(kid.clone(), random_bytes::<32>());
    let public_jwk = serde_json::to_string(&key.public().to_jwk()).unwrap_or_default();
    SigningKeyRecord {
        private_sealed: master.seal(key.secret().as_slice(), &context(&kid)),
        kid,
        algorithm: "EdDSA".into(),
        public_jwk,
        created_at: now,
        retired_at: None,
        revoked_at: None,
    }
}

fn unseal(master: &MasterKey, record: &SigningKeyRecord) -> Result<JwtSigningKey, KeyError> {
    let sealed = |reason: &str| KeyError::Sealed {
        kid: record.kid.clone(),
        reason: reason.to_owned(),
    };
    let secret = master
        .open(&record.private_sealed, &context(&record.kid))
        .map_err(|error| sealed(&error.to_string()))?;
    let secret: [u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| sealed("the key is not 32 bytes"))?;
    Ok(JwtSigningKey::from_secret(record.kid.clone(), secret))
}

impl Keys {
    /// Loads the keys, creating the first one on an instance that has none.
    pub async fn load(
        store: &Store,
        master: MasterKey,
        max_token_lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        if store
            .signing_keys()
            .await?
            .iter()
            .all(|key| key.retired_at.is_some() || key.revoked_at.is_some())
        {
            store
                .rotate_signing_key(new_signing_key(&master, now), now)
                .await?;
        }
        let (loaded, revoked) = Self::read(store, &master, max_token_lifetime, now).await?;
        let ca = Arc::new(load_ca(store, &master, now).await?);
        Ok(Self {
            master,
            last_unknown_kid_reload: Arc::default(),
            max_token_lifetime,
            loaded: Arc::new(RwLock::new(loaded)),
            revoked: Arc::new(Mutex::new(revoked)),
            ca,
        })
    }

    async fn read(
        store: &Store,
        master: &MasterKey,
        max_token_lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<(Loaded, HashSet<KidDigest>), KeyError> {
        let records = store.signing_keys().await?;
        let revoked = records
            .iter()
            .filter(|record| record.revoked_at.is_some())
            .map(|record| KidDigest::of(&record.kid))
            .collect();
        let current = records
            .iter()
            .find(|record| record.retired_at.is_none() && record.revoked_at.is_none())
            .ok_or(KeyError::NoCurrentKey)?;
        let current = Arc::new(unseal(master, current)?);
        let mut publics: Vec<JwtPublicKey> = Vec::new();
        for record in &records {
            let still_trusted = record.revoked_at.is_none()
                && record
                    .retired_at
                    .is_none_or(|retired_at| retired_at + max_token_lifetime > now);
            // Only the current key is unsealed; the others are needed for
            // their public halves, which are stored in the clear.
            if still_trusted {
                let public = serde_json::from_str(&record.public_jwk)
                    .ok()
                    .and_then(|jwk| JwtPublicKey::from_jwk(&jwk))
                    .ok_or_else(|| KeyError::Sealed {
                        kid: record.kid.clone(),
                        reason: "its stored public key is not an Ed25519 JWK".into(),
                    })?;
                publics.push(public);
            }
        }
        Ok((
            Loaded {
                current: Some(current),
                ring: Arc::new(KeyRing::new(publics)),
            },
            revoked,
        ))
    }

    /// Re-reads the keys after a rotation (or when a token names a key we do
    /// not know yet). A failure keeps the keys we have.
    pub async fn reload(&self, store: &Store, now: OffsetDateTime) -> Result<(), KeyError> {
        let (loaded, revoked) =
            Self::read(store, &self.master, self.max_token_lifetime, now).await?;
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(revoked);
        if let Ok(mut slot) = self.loaded.write() {
            // Under the write lock, so a revocation heard meanwhile either
            // is in the set already or removes its key after this.
            *slot = loaded.without(&self.revoked_kids());
        }
        Ok(())
    }

    /// Whether the signing key of this digest was revoked, as far as this
    /// process knows: those revoked before it loaded its keys, at each
    /// reload, and each revocation the change feed brought.
    pub fn is_revoked(&self, digest: KidDigest) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&digest)
    }

    fn revoked_kids(&self) -> HashSet<KidDigest> {
        self.revoked
            .lock()
            .map(|revoked| revoked.clone())
            .unwrap_or_default()
    }

    /// Takes the revoked key out of the ring (and out of use for minting,
    /// if it was current) now, synchronously: called from the change feed,
    /// so the very next verification refuses its tokens. The replacement
    /// key comes with the reload the background task starts on the same
    /// change.
    pub fn forget_revoked(&self, digest: KidDigest) {
        // A poisoned set still holds valid digests; forgetting one would
        // let its key back in at the next reload.
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(digest);
        let mut loaded = self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = Loaded {
            current: loaded.current.take(),
            ring: Arc::clone(&loaded.ring),
        };
        *loaded = current.without(&HashSet::from([digest]));
    }

    /// Whether a token naming an unknown key may trigger a reload now; at
    /// most one such reload per interval, whoever asks.
    pub fn may_reload_for_unknown_kid(&self, now: OffsetDateTime) -> bool {
        use std::sync::atomic::Ordering;
        let now = now.unix_timestamp();
        let last = self.last_unknown_kid_reload.load(Ordering::Acquire);
        now - last >= UNKNOWN_KID_RELOAD_INTERVAL.whole_seconds()
            && self
                .last_unknown_kid_reload
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    pub fn current(&self) -> Option<Arc<JwtSigningKey>> {
        self.loaded
            .read()
            .ok()
            .and_then(|loaded| loaded.current.clone())
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        self.loaded
            .read()
            .map(|loaded| Arc::clone(&loaded.ring))
            .unwrap_or_default()
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The machine CA (seed 003).
    pub fn ca(&self) -> &MachineCa {
        &self.ca
    }
}

fn ca_context(id: uuid::Uuid) -> Vec<u8> {
    format!("agentry machine CA {id}").into_bytes()
}

/// The current machine CA, created on first use. Two processes starting at
/// once may both generate one; the store keeps the first and both use it.
async fn load_ca(
    store: &Store,
    master: &MasterKey,
    now: OffsetDateTime,
) -> Result<MachineCa, KeyError> {
    let failed = |reason: &dyn std::fmt::Display| KeyError::Ca(reason.to_string());
    let record = match store.current_ca().await? {
        Some(record) => record,
        None => {
            let (authority, key_pem) =
                CertificateAuthority::generate(now).map_err(|e| failed(&e))?;
            let id = uuid::Uuid::now_v7();
            store
                .insert_ca_if_none(CaRecord {
                    id,
                    cert_pem: authority.cert_pem().to_owned(),
                    key_sealed: master.seal(key_pem.as_bytes(), &ca_context(id)),
                    not_after: now + agentry_auth::ca::CA_LIFETIME,
                    created_at: now,
                })
                .await?
        }
    };
    let key_pem = master
        .open(&record.key_sealed, &ca_context(record.id))
        .map_err(|e| failed(&e))?;
    let key_pem = std::str::from_utf8(&key_pem).map_err(|e| failed(&e))?;
    let authority =
        CertificateAuthority::from_pem(&record.cert_pem, key_pem).map_err(|e| failed(&e))?;
    MachineCa::new(authority).map_err(|e| failed(&e))
}
