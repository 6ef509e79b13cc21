//! How an instance's secrets are kept and handed out: sealed under the
//! master key and bound to the instance and the field, and the download
//! token's hash per artifact kind.

use agentry_auth::{MasterKey, SecretHash, hash_secret};
use agentry_store::ArtifactKind;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;

pub(super) fn seal_context(instance_id: Uuid, what: &str) -> Vec<u8> {
    format!("agentry instance {instance_id} {what}").into_bytes()
}

pub(super) fn seal_json(
    master: &MasterKey,
    instance_id: Uuid,
    what: &str,
    value: &Value,
) -> Vec<u8> {
    master.seal(
        value.to_string().as_bytes(),
        &seal_context(instance_id, what),
    )
}

pub(super) fn open_sealed(
    master: &MasterKey,
    instance_id: Uuid,
    what: &str,
    sealed: &[u8],
) -> Result<String, ApiError> {
    let plain = master
        .open(sealed, &seal_context(instance_id, what))
        .map_err(|error| {
            ApiError::internal(&format!("cannot open the instance's {what}: {error}"))
        })?;
    String::from_utf8(plain.to_vec())
        .map_err(|_| ApiError::internal(&format!("the instance's {what} is not text")))
}

/// One download token opens both files, each with its own attempts: the
/// website's row is keyed by a hash of the token and the kind.
pub(super) fn download_token_hash(token: &str, kind: ArtifactKind) -> SecretHash {
    match kind {
        ArtifactKind::Bundle => hash_secret(token),
        ArtifactKind::Website => hash_secret(&format!("{token}:website")),
    }
}
