//! Tenants and their API keys.

use agentry_domain::{AgentId, ApiKeyRole, TenantId};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;

use crate::changes::{Change, NotifyChange};
use crate::db::{read, write_one, write_tx};
use crate::schema::{api_keys, tenants};
use crate::types::{DbTime, DbUuid};
use crate::{ApiKeyRecord, Store, StoreError, new_id};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: OffsetDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = tenants)]
pub(crate) struct TenantRow {
    pub(crate) id: DbUuid,
    pub(crate) name: String,
    pub(crate) created_at: DbTime,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Tenant {
            id: TenantId::from_uuid(row.id.0),
            name: row.name,
            created_at: row.created_at.get(),
        }
    }
}

/// A key to store. The plaintext never reaches the store: only its hash.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// A tenant key has a role; an agent's own key names the agent instead.
    pub role: Option<ApiKeyRole>,
    pub agent_id: Option<AgentId>,
    pub key_hash: [u8; 32],
    pub label: Option<String>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct ApiKeyRow {
    pub(crate) id: DbUuid,
    pub(crate) tenant_id: DbUuid,
    pub(crate) agent_id: Option<DbUuid>,
    pub(crate) role: Option<String>,
    pub(crate) key_hash: Vec<u8>,
    pub(crate) label: Option<String>,
    pub(crate) created_at: DbTime,
    pub(crate) last_used_at: Option<DbTime>,
    pub(crate) revoked_at: Option<DbTime>,
    pub(crate) expires_at: Option<DbTime>,
}

impl TenantRow {
    pub(crate) fn new(name: &str, now: OffsetDateTime) -> Self {
        TenantRow {
            id: DbUuid(new_id()),
            name: name.to_owned(),
            created_at: now.into(),
        }
    }
}

impl ApiKeyRow {
    pub(crate) fn new(tenant: DbUuid, key: NewApiKey, now: OffsetDateTime) -> Self {
        ApiKeyRow {
            id: DbUuid(new_id()),
            tenant_id: tenant,
            agent_id: key.agent_id.map(|id| DbUuid(id.as_uuid())),
            role: key.role.map(|role| role.as_str().to_owned()),
            key_hash: key.key_hash.to_vec(),
            label: key.label,
            created_at: now.into(),
            last_used_at: None,
            revoked_at: None,
            expires_at: None,
        }
    }
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        let role = row
            .role
            .map(|role| role.parse::<ApiKeyRole>())
            .transpose()
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        Ok(ApiKeyRecord {
            id: row.id.0,
            tenant_id: TenantId::from_uuid(row.tenant_id.0),
            role,
            agent_id: row.agent_id.map(|id| AgentId::from_uuid(id.0)),
            label: row.label,
            created_at: row.created_at.get(),
            revoked_at: row.revoked_at.map(DbTime::get),
            expires_at: row.expires_at.map(DbTime::get),
            last_used_at: row.last_used_at.map(DbTime::get),
        })
    }
}

impl Store {
    pub async fn create_tenant(
        &self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Tenant, StoreError> {
        let row = TenantRow::new(name, now);
        write_one!(self, |conn| {
            diesel::insert_into(tenants::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "tenant"))
        })?;
        Ok(row.into())
    }

    /// On an empty instance, creates the first tenant and its first key in
    /// one transaction and returns the tenant; on any other, returns `None`
    /// and writes nothing. Two replicas starting at once cannot both do it:
    /// tenant names are unique.
    pub async fn create_first_tenant(
        &self,
        name: &str,
        key: NewApiKey,
        now: OffsetDateTime,
    ) -> Result<Option<Tenant>, StoreError> {
        let tenant = TenantRow::new(name, now);
        let key_row = ApiKeyRow::new(tenant.id, key, now);
        let created = write_tx!(self, |conn| {
            let existing: i64 = tenants::table.count().get_result(conn).await?;
            if existing > 0 {
                return Ok(false);
            }
            diesel::insert_into(tenants::table)
                .values(&tenant)
                .execute(conn)
                .await?;
            diesel::insert_into(api_keys::table)
                .values(&key_row)
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(true)
        });
        match created {
            Ok(true) => Ok(Some(tenant.into())),
            Ok(false) | Err(StoreError::Conflict(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn find_tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        let row: Option<TenantRow> = read!(self, |conn| {
            tenants::table
                .filter(tenants::name.eq(name))
                .select(TenantRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(Tenant::from))
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantRow> = read!(self, |conn| {
            tenants::table
                .order(tenants::created_at.asc())
                .select(TenantRow::as_select())
                .load(conn)
                .await
        })?;
        Ok(rows.into_iter().map(Tenant::from).collect())
    }

    pub async fn count_tenants(&self) -> Result<i64, StoreError> {
        Ok(read!(self, |conn| tenants::table
            .count()
            .get_result::<i64>(conn)
            .await)?)
    }

    pub async fn insert_api_key(
        &self,
        tenant: TenantId,
        key: NewApiKey,
        now: OffsetDateTime,
    ) -> Result<ApiKeyRecord, StoreError> {
        let row = ApiKeyRow::new(DbUuid(tenant.as_uuid()), key, now);
        write_one!(self, |conn| {
            diesel::insert_into(api_keys::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "API key"))
        })?;
        row.try_into()
    }

    /// The key whose SHA-256 is `key_hash`, revoked or not (the caller
    /// decides what a revoked key means). The lookup is by an index on the
    /// hash of a 256-bit secret, so its timing reveals nothing usable.
    pub async fn find_api_key(
        &self,
        key_hash: &[u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = read!(self, |conn| {
            api_keys::table
                .filter(api_keys::key_hash.eq(key_hash.as_slice()))
                .select(ApiKeyRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(ApiKeyRecord::try_from).transpose()
    }

    /// A key by its id, in any tenant: for operators' tools only, never for
    /// request handling (which always knows the tenant).
    pub async fn api_key_by_id(&self, id: uuid::Uuid) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row: Option<ApiKeyRow> = read!(self, |conn| {
            api_keys::table
                .find(DbUuid(id))
                .select(ApiKeyRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(ApiKeyRecord::try_from).transpose()
    }

    /// Revokes a key of `tenant`; revoking twice is fine and keeps the first
    /// time.
    pub async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let found = write_tx!(self, |conn| {
            let target = api_keys::table
                .filter(api_keys::id.eq(DbUuid(id)))
                .filter(api_keys::tenant_id.eq(DbUuid(tenant.as_uuid())));
            let exists: i64 = target.count().get_result(conn).await?;
            diesel::update(target.filter(api_keys::revoked_at.is_null()))
                .set(api_keys::revoked_at.eq(DbTime::new(now)))
                .execute(conn)
                .await?;
            conn.notify_change(Change::ApiKey(id)).await?;
            Ok::<_, StoreError>(exists > 0)
        })?;
        if found {
            self.publish(Change::ApiKey(id));
            Ok(())
        } else {
            Err(StoreError::NotFound("API key"))
        }
    }
}

impl Store {
    /// A further key of an agent of `tenant` (seed 002's
    /// `/api/v1/agents/{id}/keys`), labelled `name`, working until
    /// `expires_at` when one is given.
    pub async fn insert_agent_key(
        &self,
        tenant: TenantId,
        agent: AgentId,
        key_hash: [u8; 32],
        name: String,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut row = ApiKeyRow::new(
            DbUuid(tenant.as_uuid()),
            NewApiKey {
                role: None,
                agent_id: Some(agent),
                key_hash,
                label: Some(name),
            },
            now,
        );
        row.expires_at = expires_at.map(DbTime::new);
        write_one!(self, |conn| {
            diesel::insert_into(api_keys::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "API key"))
        })?;
        row.try_into()
    }

    /// The keys an agent of `tenant` holds and has not revoked, oldest
    /// first (expired ones included: the client sees they expired).
    pub async fn agent_keys(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<ApiKeyRow> = read!(self, |conn| {
            api_keys::table
                .filter(api_keys::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(api_keys::agent_id.eq(DbUuid(agent.as_uuid())))
                .filter(api_keys::revoked_at.is_null())
                .order(api_keys::id.asc())
                .select(ApiKeyRow::as_select())
                .load(conn)
                .await
        })?;
        rows.into_iter().map(ApiKeyRecord::try_from).collect()
    }
}

/// Maps a unique violation to a conflict naming what was duplicated.
pub(crate) fn conflict_as(error: diesel::result::Error, what: &'static str) -> StoreError {
    match StoreError::from(error) {
        StoreError::Conflict(_) => StoreError::Conflict(what),
        other => other,
    }
}
