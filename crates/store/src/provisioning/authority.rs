//! The instance-wide certificate authority's record: one current CA, even
//! when several processes start at once.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{advisory, read, write_tx_locked};
use crate::schema::certificate_authorities;
use crate::tenants::conflict_as;
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError};

/// The instance-wide CA that signs machine client certificates. Its private
/// key is sealed under the master key by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRecord {
    pub id: Uuid,
    pub cert_pem: String,
    pub key_sealed: Vec<u8>,
    pub not_after: OffsetDateTime,
    pub created_at: OffsetDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = certificate_authorities)]
struct CaRow {
    id: DbUuid,
    cert_pem: String,
    key_sealed: Vec<u8>,
    not_after: DbTime,
    created_at: DbTime,
    retired_at: Option<DbTime>,
}

impl From<CaRow> for CaRecord {
    fn from(row: CaRow) -> Self {
        CaRecord {
            id: row.id.0,
            cert_pem: row.cert_pem,
            key_sealed: row.key_sealed,
            not_after: row.not_after.get(),
            created_at: row.created_at.get(),
        }
    }
}

impl Store {
    /// The CA that signs new machine certificates: the newest one not
    /// retired, if any.
    pub async fn current_ca(&self) -> Result<Option<CaRecord>, StoreError> {
        let row: Option<CaRow> = read!(self, |conn| {
            certificate_authorities::table
                .filter(certificate_authorities::retired_at.is_null())
                .order((
                    certificate_authorities::created_at.desc(),
                    certificate_authorities::id.desc(),
                ))
                .select(CaRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(CaRecord::from))
    }

    /// Stores `record` as the CA unless one is current already, and returns
    /// whichever is current afterwards. Serialised (an advisory lock on
    /// PostgreSQL, the write lock on SQLite) because there is no row to lock
    /// yet: two processes starting at once must end up with one CA, each
    /// using the one that was stored.
    pub async fn insert_ca_if_none(&self, record: CaRecord) -> Result<CaRecord, StoreError> {
        let row = CaRow {
            id: DbUuid(record.id),
            cert_pem: record.cert_pem,
            key_sealed: record.key_sealed,
            not_after: DbTime::new(record.not_after),
            created_at: DbTime::new(record.created_at),
            retired_at: None,
        };
        write_tx_locked!(self, advisory::CERTIFICATE_AUTHORITY, |conn| {
            let current: Option<CaRow> = certificate_authorities::table
                .filter(certificate_authorities::retired_at.is_null())
                .order((
                    certificate_authorities::created_at.desc(),
                    certificate_authorities::id.desc(),
                ))
                .select(CaRow::as_select())
                .first(conn)
                .await
                .optional()?;
            if let Some(current) = current {
                return Ok(CaRecord::from(current));
            }
            diesel::insert_into(certificate_authorities::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "certificate authority"))?;
            Ok::<_, StoreError>(CaRecord {
                id: row.id.0,
                cert_pem: row.cert_pem.clone(),
                key_sealed: row.key_sealed.clone(),
                not_after: row.not_after.get(),
                created_at: row.created_at.get(),
            })
        })
    }
}
