//! The keys that sign agent JWTs: instance-wide, private halves sealed by
//! the caller under the master key before they reach the store.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::changes::{Change, NotifyChange};
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
}
