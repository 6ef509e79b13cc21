//! The keys that sign agent JWTs: instance-wide, private halves sealed by
//! the caller under the master key before they reach the store.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::changes::{Change, KidDigest, NotifyChange};
use crate::db::{read, write_tx};
use crate::schema::signing_keys;
use crate::types::DbTime;
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub algorithm: String,
    /// The public half as a JWK (JSON text).
    pub public_jwk: String,
    /// The private half, sealed under the master key.
    pub private_sealed: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// When a newer key took over; tokens it signed stay valid until they
    /// expire.
    pub retired_at: Option<OffsetDateTime>,
    /// When the key was revoked: from then on it verifies nothing.
    pub revoked_at: Option<OffsetDateTime>,
}

/// What [`Store::revoke_signing_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKeyRevocation {
    /// The key is revoked now; `replaced_by` names the key made current in
    /// the same transaction when the revoked one was current.
    Revoked { replaced_by: Option<String> },
    /// It was revoked before; nothing changed.
    AlreadyRevoked,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys)]
struct SigningKeyRow {
    kid: String,
    algorithm: String,
    public_jwk: String,
    private_sealed: Vec<u8>,
    created_at: DbTime,
    retired_at: Option<DbTime>,
    revoked_at: Option<DbTime>,
}

impl From<SigningKeyRow> for SigningKeyRecord {
    fn from(row: SigningKeyRow) -> Self {
        SigningKeyRecord {
            kid: row.kid,
            algorithm: row.algorithm,
            public_jwk: row.public_jwk,
            private_sealed: row.private_sealed,
            created_at: row.created_at.get(),
            retired_at: row.retired_at.map(DbTime::get),
            revoked_at: row.revoked_at.map(DbTime::get),
        }
    }
}

impl Store {
    /// Every signing key, current ones first, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows: Vec<SigningKeyRow> = read!(self, |conn| {
            signing_keys::table
                .order((
                    signing_keys::retired_at.is_not_null(),
                    signing_keys::created_at.desc(),
                ))
                .select(SigningKeyRow::as_select())
                .load(conn)
                .await
        })?;
        Ok(rows.into_iter().map(SigningKeyRecord::from).collect())
    }

    /// Adds `key` as the current signing key and retires the ones before it,
    /// in one transaction, so there is always exactly one current key after
    /// a rotation.
    pub async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let now = DbTime::new(now);
        let row = SigningKeyRow {
            kid: key.kid,
            algorithm: key.algorithm,
            public_jwk: key.public_jwk,
            private_sealed: key.private_sealed,
            created_at: now,
            retired_at: None,
            revoked_at: None,
        };
        write_tx!(self, |conn| {
            diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
                .set(signing_keys::retired_at.eq(now))
                .execute(conn)
                .await?;
            diesel::insert_into(signing_keys::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| crate::tenants::conflict_as(error, "signing key"))?;
            conn.notify_change(Change::SigningKeys).await?;
            Ok::<_, StoreError>(())
        })?;
        self.publish(Change::SigningKeys);
        Ok(())
    }

    /// Revokes the key `kid`, for the day it leaks: it verifies nothing
    /// from now on, on every replica (the change feed carries
    /// [`Change::SigningKeyRevoked`]). When it is the current key,
    /// `replacement` becomes current in the same transaction, so minting
    /// never stops; otherwise `replacement` is not used. Revoking a revoked
    /// key changes nothing; an unknown `kid` is `NotFound`.
    pub async fn revoke_signing_key(
        &self,
        kid: &str,
        replacement: SigningKeyRecord,
        now: OffsetDateTime,
    ) -> Result<SigningKeyRevocation, StoreError> {
        let now = DbTime::new(now);
        let digest = KidDigest::of(kid);
        let replacement = SigningKeyRow {
            kid: replacement.kid,
            algorithm: replacement.algorithm,
            public_jwk: replacement.public_jwk,
            private_sealed: replacement.private_sealed,
            created_at: now,
            retired_at: None,
            revoked_at: None,
        };
        let outcome = write_tx!(self, |conn| {
            // Locks the row, so two revocations of the current key cannot
            // both install a replacement.
            let found: Option<(Option<DbTime>, Option<DbTime>)> =
                diesel::update(signing_keys::table.filter(signing_keys::kid.eq(kid)))
                    .set(signing_keys::kid.eq(kid))
                    .returning((signing_keys::retired_at, signing_keys::revoked_at))
                    .get_result(conn)
                    .await
                    .optional()?;
            let Some((retired_at, revoked_at)) = found else {
                return Err(StoreError::NotFound("signing key"));
            };
            if revoked_at.is_some() {
                return Ok(SigningKeyRevocation::AlreadyRevoked);
            }
            let was_current = retired_at.is_none();
            diesel::update(signing_keys::table.filter(signing_keys::kid.eq(kid)))
                .set((
                    signing_keys::revoked_at.eq(now),
                    signing_keys::retired_at.eq(retired_at.unwrap_or(now)),
                ))
                .execute(conn)
                .await?;
            let replaced_by = if was_current {
                diesel::insert_into(signing_keys::table)
                    .values(&replacement)
                    .execute(conn)
                    .await
                    .map_err(|error| crate::tenants::conflict_as(error, "signing key"))?;
                Some(replacement.kid.clone())
            } else {
                None
            };
            conn.notify_change(Change::SigningKeyRevoked(digest))
                .await?;
            Ok::<_, StoreError>(SigningKeyRevocation::Revoked { replaced_by })
        })?;
        if matches!(outcome, SigningKeyRevocation::Revoked { .. }) {
            self.publish(Change::SigningKeyRevoked(digest));
        }
        Ok(outcome)
    }
}
