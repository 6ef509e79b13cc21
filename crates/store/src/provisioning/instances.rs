//! Machine instances (their documents, sealed secrets and bootstrap
//! token) and the artifacts attached to them.

use agentry_domain::{AgentId, TenantId};
use agentry_lifecycle::ArtifactKind;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use super::INSTANCE;
use crate::db::{read, write_tx};
use crate::schema::{agents, artifacts, callback_states, one_time_tokens, provisioning_instances};
use crate::tenants::conflict_as;
use crate::tokens::{NewToken, TokenPurpose, TokenRecord, TokenRow};
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// A machine to provision, validated (and its secrets sealed, its token
/// hashed) by the caller.
#[derive(Debug, Clone)]
pub struct NewMachineInstance {
    /// Chosen by the caller (a UUID v7): the sealed values are bound to it.
    pub id: Uuid,
    pub name: String,
    /// The agent the machine's certificate authenticates as; must be an
    /// agent of the same tenant.
    pub agent_id: Option<AgentId>,
    pub agent_config: serde_json::Value,
    pub agent_secrets_sealed: Option<Vec<u8>>,
    pub skill_lockfile: serde_json::Value,
    pub decryption_key_sealed: Option<Vec<u8>>,
    /// Its purpose and subject are set by the store (bootstrap, the new
    /// instance's id), which the caller cannot know before the insert.
    pub bootstrap_token: NewToken,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MachineInstance {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub agent_id: Option<AgentId>,
    pub agent_config: serde_json::Value,
    pub agent_secrets_sealed: Option<Vec<u8>>,
    pub skill_lockfile: serde_json::Value,
    pub decryption_key_sealed: Option<Vec<u8>>,
    pub created_at: OffsetDateTime,
}

/// What to change on an instance; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MachineInstancePatch {
    pub agent_config: Option<serde_json::Value>,
    pub agent_secrets_sealed: Option<Vec<u8>>,
    pub skill_lockfile: Option<serde_json::Value>,
    pub decryption_key_sealed: Option<Vec<u8>>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = provisioning_instances)]
pub(super) struct InstanceRow {
    id: DbUuid,
    tenant_id: DbUuid,
    name: String,
    agent_config: String,
    agent_secrets_sealed: Option<Vec<u8>>,
    skill_lockfile: String,
    decryption_key_sealed: Option<Vec<u8>>,
    created_at: DbTime,
    agent_id: Option<DbUuid>,
}

/// The columns a patch writes; `None` fields are left out of the UPDATE.
#[derive(AsChangeset)]
#[diesel(table_name = provisioning_instances)]
struct InstanceChanges {
    agent_config: Option<String>,
    agent_secrets_sealed: Option<Vec<u8>>,
    skill_lockfile: Option<String>,
    decryption_key_sealed: Option<Vec<u8>>,
}

impl InstanceChanges {
    fn is_empty(&self) -> bool {
        self.agent_config.is_none()
            && self.agent_secrets_sealed.is_none()
            && self.skill_lockfile.is_none()
            && self.decryption_key_sealed.is_none()
    }
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("provisioning instance {what}: {error}")))
}

impl TryFrom<InstanceRow> for MachineInstance {
    type Error = StoreError;

    fn try_from(row: InstanceRow) -> Result<Self, StoreError> {
        Ok(MachineInstance {
            id: row.id.0,
            tenant_id: TenantId::from_uuid(row.tenant_id.0),
            name: row.name,
            agent_id: row.agent_id.map(|id| AgentId::from_uuid(id.0)),
            agent_config: parse_json(&row.agent_config, "agent_config")?,
            agent_secrets_sealed: row.agent_secrets_sealed,
            skill_lockfile: parse_json(&row.skill_lockfile, "skill_lockfile")?,
            decryption_key_sealed: row.decryption_key_sealed,
            created_at: row.created_at.get(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub instance_id: Uuid,
    pub kind: ArtifactKind,
    /// Where the caller stored the file; the store never touches files.
    pub storage_path: String,
    pub size_bytes: i64,
    pub cipher_hash: Option<String>,
    pub plain_hash: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = artifacts)]
struct ArtifactRow {
    instance_id: DbUuid,
    storage_path: String,
    size_bytes: i64,
    cipher_hash: Option<String>,
    plain_hash: Option<String>,
    created_at: DbTime,
}

impl Store {
    /// Creates a machine instance in one transaction with its bootstrap
    /// token (purpose bootstrap, subject the new instance) and an empty
    /// callback state, so the first callback has a row to lock and a
    /// half-created instance can never be bootstrapped. An `agent_id` that
    /// is not an agent of `tenant` is `NotFound("agent")`.
    pub async fn create_machine_instance(
        &self,
        tenant: TenantId,
        new: NewMachineInstance,
        now: OffsetDateTime,
    ) -> Result<(MachineInstance, TokenRecord), StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let created_at = DbTime::new(now);
        let row = InstanceRow {
            id: DbUuid(new.id),
            tenant_id,
            name: new.name,
            agent_config: new.agent_config.to_string(),
            agent_secrets_sealed: new.agent_secrets_sealed,
            skill_lockfile: new.skill_lockfile.to_string(),
            decryption_key_sealed: new.decryption_key_sealed,
            created_at,
            agent_id: new.agent_id.map(|id| DbUuid(id.as_uuid())),
        };
        let token = TokenRow::new(
            tenant,
            NewToken {
                purpose: TokenPurpose::Bootstrap,
                subject_id: row.id.0,
                ..new.bootstrap_token
            },
            now,
        );
        write_tx!(self, |conn| {
            if let Some(agent_id) = row.agent_id {
                let found: i64 = agents::table
                    .filter(agents::tenant_id.eq(tenant_id))
                    .filter(agents::id.eq(agent_id))
                    .count()
                    .get_result(conn)
                    .await?;
                if found == 0 {
                    return Err(StoreError::NotFound("agent"));
                }
            }
            diesel::insert_into(provisioning_instances::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, INSTANCE))?;
            diesel::insert_into(one_time_tokens::table)
                .values(&token)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "token"))?;
            diesel::insert_into(callback_states::table)
                .values((
                    callback_states::instance_id.eq(row.id),
                    callback_states::tenant_id.eq(tenant_id),
                    callback_states::last_seq.eq(None::<i64>),
                    callback_states::stage.eq(None::<String>),
                    callback_states::message.eq(None::<String>),
                    callback_states::updated_at.eq(created_at),
                ))
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(())
        })?;
        Ok((MachineInstance::try_from(row)?, TokenRecord::from(token)))
    }

    /// The tenant's instance `id`; `None` when it has none by that id (the
    /// machine's credential, a certificate or a token, names both).
    pub async fn machine_instance(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<MachineInstance>, StoreError> {
        let row: Option<InstanceRow> = read!(self, |conn| {
            provisioning_instances::table
                .filter(provisioning_instances::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(provisioning_instances::id.eq(DbUuid(id)))
                .select(InstanceRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(MachineInstance::try_from).transpose()
    }

    /// Changes the fields `patch` sets, and only those (a concurrent patch
    /// of other fields is not overwritten); `None` when `tenant` has no such
    /// instance.
    pub async fn update_machine_instance(
        &self,
        tenant: TenantId,
        id: Uuid,
        patch: MachineInstancePatch,
    ) -> Result<Option<MachineInstance>, StoreError> {
        let changes = InstanceChanges {
            agent_config: patch.agent_config.map(|value| value.to_string()),
            agent_secrets_sealed: patch.agent_secrets_sealed,
            skill_lockfile: patch.skill_lockfile.map(|value| value.to_string()),
            decryption_key_sealed: patch.decryption_key_sealed,
        };
        let row: Option<InstanceRow> = write_tx!(self, |conn| {
            let target = provisioning_instances::table
                .filter(provisioning_instances::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(provisioning_instances::id.eq(DbUuid(id)));
            let found = if changes.is_empty() {
                // diesel refuses an empty SET; read the row as it is.
                target.count().get_result::<i64>(conn).await? > 0
            } else {
                diesel::update(target).set(&changes).execute(conn).await? > 0
            };
            if !found {
                return Ok(None);
            }
            let row = target.select(InstanceRow::as_select()).first(conn).await?;
            Ok::<_, StoreError>(Some(row))
        })?;
        row.map(MachineInstance::try_from).transpose()
    }

    /// Records an artifact, replacing the instance's previous one of the
    /// same kind, under the instance's row lock so two uploads cannot both
    /// insert. Returns the replaced artifact's storage path, for the caller
    /// to delete the old file; `None` when there was none or it was stored
    /// at the same path (deleting it would delete the new file).
    /// `NotFound` when `tenant` has no such instance.
    pub async fn put_artifact(
        &self,
        tenant: TenantId,
        record: ArtifactRecord,
    ) -> Result<Option<String>, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let instance_id = DbUuid(record.instance_id);
        let kind = record.kind.as_str();
        let created_at = DbTime::new(record.created_at);
        write_tx!(self, |conn| {
            // The portable row lock (see `change_lifecycle`), which also
            // checks the instance is the tenant's.
            let locked = diesel::update(
                provisioning_instances::table
                    .filter(provisioning_instances::tenant_id.eq(tenant_id))
                    .filter(provisioning_instances::id.eq(instance_id)),
            )
            .set(provisioning_instances::name.eq(provisioning_instances::name))
            .execute(conn)
            .await?;
            if locked == 0 {
                return Err(StoreError::NotFound(INSTANCE));
            }
            let target = artifacts::table
                .filter(artifacts::instance_id.eq(instance_id))
                .filter(artifacts::kind.eq(kind));
            let previous: Option<String> = target
                .select(artifacts::storage_path)
                .first(conn)
                .await
                .optional()?;
            let values = (
                artifacts::storage_path.eq(&record.storage_path),
                artifacts::size_bytes.eq(record.size_bytes),
                artifacts::cipher_hash.eq(&record.cipher_hash),
                artifacts::plain_hash.eq(&record.plain_hash),
                artifacts::created_at.eq(created_at),
            );
            if previous.is_some() {
                diesel::update(target).set(values).execute(conn).await?;
            } else {
                diesel::insert_into(artifacts::table)
                    .values((
                        artifacts::id.eq(DbUuid(new_id())),
                        artifacts::tenant_id.eq(tenant_id),
                        artifacts::instance_id.eq(instance_id),
                        artifacts::kind.eq(kind),
                        values,
                    ))
                    .execute(conn)
                    .await
                    .map_err(|error| conflict_as(error, "artifact"))?;
            }
            Ok::<_, StoreError>(previous.filter(|path| *path != record.storage_path))
        })
    }

    /// The tenant's instance's artifact of `kind`, if one was stored.
    pub async fn artifact(
        &self,
        tenant: TenantId,
        instance_id: Uuid,
        kind: ArtifactKind,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        let row: Option<ArtifactRow> = read!(self, |conn| {
            artifacts::table
                .filter(artifacts::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(artifacts::instance_id.eq(DbUuid(instance_id)))
                .filter(artifacts::kind.eq(kind.as_str()))
                .select(ArtifactRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(|row| ArtifactRecord {
            instance_id: row.instance_id.0,
            kind,
            storage_path: row.storage_path,
            size_bytes: row.size_bytes,
            cipher_hash: row.cipher_hash,
            plain_hash: row.plain_hash,
            created_at: row.created_at.get(),
        }))
    }
}
