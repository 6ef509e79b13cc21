//! Seed 003 machine provisioning: the instance's certificate authority,
//! machine instances with their bootstrap tokens, the bootstrap sessions and
//! the client certificates issued in them, built artifacts, the callback
//! state machine and the provisioning log.
//!
//! Secrets reach the store sealed (under the master key) or hashed by the
//! caller; the store keeps bytes and decides races: one CA, one completed
//! session per bootstrap token, callbacks in order.

use agentry_domain::{AgentId, TenantId};
use agentry_lifecycle::CallbackStage;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{advisory, read, write_tx, write_tx_locked};
use crate::schema::{
    agents, artifacts, callback_states, certificate_authorities, issued_certificates,
    one_time_tokens, provision_logs, provisioning_instances, provisioning_sessions,
};
use crate::tenants::conflict_as;
use crate::tokens::{NewToken, TokenPurpose, TokenRecord, TokenRow};
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

// ---------------------------------------------------------------------------
// Certificate authority

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

// ---------------------------------------------------------------------------
// Machine instances

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
struct InstanceRow {
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

// ---------------------------------------------------------------------------
// Artifacts

/// What a stored artifact is; an instance has at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    Bundle,
    Website,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Bundle => "bundle",
            ArtifactKind::Website => "website",
        }
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

// ---------------------------------------------------------------------------
// Sessions and certificates

/// A bootstrap session being opened: the caller has checked the bootstrap
/// token and issues a client certificate in it.
#[derive(Debug, Clone)]
pub struct NewMachineSession {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub tenant_id: TenantId,
    /// The instance's bootstrap token, consumed when the session completes.
    pub token_id: Uuid,
    pub expires_at: OffsetDateTime,
}

/// The client certificate issued in a session, identified by the caller's
/// serial and fingerprint.
#[derive(Debug, Clone)]
pub struct NewIssuedCertificate {
    pub serial: String,
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificateRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub instance_id: Uuid,
    pub session_id: Uuid,
    pub serial: String,
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = issued_certificates)]
struct CertificateRow {
    id: DbUuid,
    tenant_id: DbUuid,
    instance_id: DbUuid,
    session_id: DbUuid,
    serial: String,
    fingerprint: String,
    not_before: DbTime,
    not_after: DbTime,
    revoked_at: Option<DbTime>,
    created_at: DbTime,
}

impl From<CertificateRow> for IssuedCertificateRecord {
    fn from(row: CertificateRow) -> Self {
        IssuedCertificateRecord {
            id: row.id.0,
            tenant_id: TenantId::from_uuid(row.tenant_id.0),
            instance_id: row.instance_id.0,
            session_id: row.session_id.0,
            serial: row.serial,
            fingerprint: row.fingerprint,
            not_before: row.not_before.get(),
            not_after: row.not_after.get(),
            revoked_at: row.revoked_at.map(DbTime::get),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSession {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub instance_id: Uuid,
    pub token_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = provisioning_sessions)]
struct SessionRow {
    id: DbUuid,
    tenant_id: DbUuid,
    instance_id: DbUuid,
    token_id: DbUuid,
    expires_at: DbTime,
    completed_at: Option<DbTime>,
    created_at: DbTime,
}

impl From<SessionRow> for MachineSession {
    fn from(row: SessionRow) -> Self {
        MachineSession {
            id: row.id.0,
            tenant_id: TenantId::from_uuid(row.tenant_id.0),
            instance_id: row.instance_id.0,
            token_id: row.token_id.0,
            expires_at: row.expires_at.get(),
            completed_at: row.completed_at.map(DbTime::get),
        }
    }
}

/// Why a session cannot be completed. Callers answer `Expired` and
/// `AlreadyComplete` alike to the machine if they wish; the detail is for
/// audit.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("unknown provisioning session")]
    Unknown,
    #[error("the provisioning session has expired")]
    Expired,
    /// The session is complete, or the bootstrap token was consumed by
    /// another session, or it expired: the instance cannot bootstrap again.
    #[error("the provisioning session is already complete")]
    AlreadyComplete,
    #[error(transparent)]
    Store(#[from] StoreError),
}

// ---------------------------------------------------------------------------
// Callbacks and logs

/// The last accepted callback of an instance (`None` before the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackState {
    pub last: Option<(u8, CallbackStage)>,
    pub message: Option<String>,
    pub updated_at: OffsetDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = callback_states)]
struct CallbackRow {
    tenant_id: DbUuid,
    last_seq: Option<i64>,
    stage: Option<String>,
    message: Option<String>,
    updated_at: DbTime,
}

impl CallbackRow {
    fn last(&self) -> Result<Option<(u8, CallbackStage)>, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("callback state: {what}"));
        match (self.last_seq, self.stage.as_deref()) {
            (None, None) => Ok(None),
            (Some(seq), Some(stage)) => {
                let seq = u8::try_from(seq).map_err(|_| corrupt("seq out of range"))?;
                let stage = stage
                    .parse::<CallbackStage>()
                    .map_err(|_| corrupt("unknown stage"))?;
                Ok(Some((seq, stage)))
            }
            _ => Err(corrupt("seq and stage must be set together")),
        }
    }

    fn into_state(self) -> Result<CallbackState, StoreError> {
        Ok(CallbackState {
            last: self.last()?,
            message: self.message,
            updated_at: self.updated_at.get(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionLog {
    pub id: Uuid,
    pub instance_id: Uuid,
    /// A callback stage's name, or another label the caller chose.
    pub stage: String,
    pub level: String,
    pub message: String,
    pub at: OffsetDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = provision_logs)]
struct LogRow {
    id: DbUuid,
    tenant_id: DbUuid,
    instance_id: DbUuid,
    stage: String,
    level: String,
    message: String,
    at: DbTime,
}

impl LogRow {
    fn new(
        tenant_id: DbUuid,
        instance_id: Uuid,
        stage: &str,
        level: &str,
        message: &str,
        at: OffsetDateTime,
    ) -> Self {
        LogRow {
            id: DbUuid(new_id()),
            tenant_id,
            instance_id: DbUuid(instance_id),
            stage: stage.to_owned(),
            level: level.to_owned(),
            message: message.to_owned(),
            at: DbTime::new(at),
        }
    }
}

impl From<LogRow> for ProvisionLog {
    fn from(row: LogRow) -> Self {
        ProvisionLog {
            id: row.id.0,
            instance_id: row.instance_id.0,
            stage: row.stage,
            level: row.level,
            message: row.message,
            at: row.at.get(),
        }
    }
}

const INSTANCE: &str = "provisioning instance";

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

    /// An instance by id, whatever its tenant: a machine presents only the
    /// instance id (its certificate or token says which), so callers check
    /// the tenant themselves where a tenant is known.
    pub async fn machine_instance(&self, id: Uuid) -> Result<Option<MachineInstance>, StoreError> {
        let row: Option<InstanceRow> = read!(self, |conn| {
            provisioning_instances::table
                .find(DbUuid(id))
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

    /// The instance's artifact of `kind`, if one was stored.
    pub async fn artifact(
        &self,
        instance_id: Uuid,
        kind: ArtifactKind,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        let row: Option<ArtifactRow> = read!(self, |conn| {
            artifacts::table
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

    /// The instance's bootstrap token with its stored hash. A machine
    /// presents the instance id and the token; the caller compares the
    /// token's hash with this one in constant time (a lookup by hash would
    /// leak through timing which hashes exist).
    pub async fn bootstrap_token_of(
        &self,
        instance_id: Uuid,
    ) -> Result<Option<(TokenRecord, [u8; 32])>, StoreError> {
        let row: Option<TokenRow> = read!(self, |conn| {
            one_time_tokens::table
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Bootstrap.as_str()))
                .filter(one_time_tokens::subject_id.eq(DbUuid(instance_id)))
                .order((
                    one_time_tokens::created_at.desc(),
                    one_time_tokens::id.desc(),
                ))
                .select(TokenRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(|row| {
            let hash = <[u8; 32]>::try_from(row.token_hash.as_slice())
                .map_err(|_| StoreError::Corrupt("a token hash is not 32 bytes".into()))?;
            Ok((TokenRecord::from(row), hash))
        })
        .transpose()
    }

    /// Opens a bootstrap session and records the certificate issued in it,
    /// in one transaction, so no certificate exists without its session.
    /// The session's token must be the instance's bootstrap token in its
    /// tenant (`NotFound("bootstrap token")` otherwise): completing the
    /// session consumes exactly that token. A reused serial or fingerprint
    /// is `Conflict("certificate")`.
    pub async fn open_machine_session(
        &self,
        session: NewMachineSession,
        cert: NewIssuedCertificate,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let created_at = DbTime::new(now);
        let tenant_id = DbUuid(session.tenant_id.as_uuid());
        let session_row = SessionRow {
            id: DbUuid(session.id),
            tenant_id,
            instance_id: DbUuid(session.instance_id),
            token_id: DbUuid(session.token_id),
            expires_at: DbTime::new(session.expires_at),
            completed_at: None,
            created_at,
        };
        let cert_row = CertificateRow {
            id: DbUuid(new_id()),
            tenant_id,
            instance_id: session_row.instance_id,
            session_id: session_row.id,
            serial: cert.serial,
            fingerprint: cert.fingerprint,
            not_before: DbTime::new(cert.not_before),
            not_after: DbTime::new(cert.not_after),
            revoked_at: None,
            created_at,
        };
        write_tx!(self, |conn| {
            let tokens: i64 = one_time_tokens::table
                .filter(one_time_tokens::id.eq(session_row.token_id))
                .filter(one_time_tokens::tenant_id.eq(tenant_id))
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Bootstrap.as_str()))
                .filter(one_time_tokens::subject_id.eq(session_row.instance_id))
                .count()
                .get_result(conn)
                .await?;
            if tokens == 0 {
                return Err(StoreError::NotFound("bootstrap token"));
            }
            diesel::insert_into(provisioning_sessions::table)
                .values(&session_row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "provisioning session"))?;
            diesel::insert_into(issued_certificates::table)
                .values(&cert_row)
                .execute(conn)
                .await
                .map_err(|error| conflict_as(error, "certificate"))?;
            Ok::<_, StoreError>(())
        })
    }

    /// The certificate with this fingerprint, for authenticating a machine's
    /// TLS client certificate (the caller checks `revoked_at` and validity).
    pub async fn certificate_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<IssuedCertificateRecord>, StoreError> {
        let row: Option<CertificateRow> = read!(self, |conn| {
            issued_certificates::table
                .filter(issued_certificates::fingerprint.eq(fingerprint))
                .select(CertificateRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(IssuedCertificateRecord::from))
    }

    /// A session by id, whatever its tenant: the machine names it when it
    /// completes, and the caller checks it belongs to the machine's instance.
    pub async fn machine_session(&self, id: Uuid) -> Result<Option<MachineSession>, StoreError> {
        let row: Option<SessionRow> = read!(self, |conn| {
            provisioning_sessions::table
                .find(DbUuid(id))
                .select(SessionRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(MachineSession::from))
    }

    /// Completes a bootstrap session in one transaction: under the session's
    /// row lock, refuses a complete or expired session, consumes the
    /// bootstrap token (one conditional UPDATE, so of the instance's
    /// sessions only one ever completes), marks the session complete and
    /// stores the download tokens (in the session's tenant). Of any number
    /// of concurrent callers exactly one succeeds; a refusal writes nothing.
    pub async fn complete_machine_session(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
        download_tokens: Vec<NewToken>,
    ) -> Result<MachineInstance, SessionError> {
        self.try_complete_machine_session(session_id, now, download_tokens)
            .await?
    }

    /// [`Store::complete_machine_session`] with its refusals as `Ok(Err(..))`:
    /// each is decided before anything but the no-op lock is written, so
    /// committing then writes nothing.
    async fn try_complete_machine_session(
        &self,
        session_id: Uuid,
        now: OffsetDateTime,
        download_tokens: Vec<NewToken>,
    ) -> Result<Result<MachineInstance, SessionError>, StoreError> {
        let db_now = DbTime::new(now);
        let session_id = DbUuid(session_id);
        write_tx!(self, |conn| {
            let target = provisioning_sessions::table.find(session_id);
            // The portable row lock (see `change_lifecycle`): concurrent
            // completions of one session queue here.
            let locked = diesel::update(target)
                .set(provisioning_sessions::completed_at.eq(provisioning_sessions::completed_at))
                .execute(conn)
                .await?;
            if locked == 0 {
                return Ok(Err(SessionError::Unknown));
            }
            let session: SessionRow = target.select(SessionRow::as_select()).first(conn).await?;
            if session.completed_at.is_some() {
                return Ok(Err(SessionError::AlreadyComplete));
            }
            if session.expires_at <= db_now {
                return Ok(Err(SessionError::Expired));
            }
            let consumed = diesel::update(
                one_time_tokens::table
                    .filter(one_time_tokens::id.eq(session.token_id))
                    .filter(one_time_tokens::purpose.eq(TokenPurpose::Bootstrap.as_str()))
                    .filter(one_time_tokens::consumed_at.is_null())
                    .filter(one_time_tokens::expires_at.gt(db_now)),
            )
            .set(one_time_tokens::consumed_at.eq(db_now))
            .execute(conn)
            .await?;
            if consumed == 0 {
                return Ok(Err(SessionError::AlreadyComplete));
            }
            diesel::update(target)
                .set(provisioning_sessions::completed_at.eq(db_now))
                .execute(conn)
                .await?;
            let tenant = TenantId::from_uuid(session.tenant_id.0);
            // Row by row: diesel's SQLite backend has no multi-row VALUES.
            for token in &download_tokens {
                diesel::insert_into(one_time_tokens::table)
                    .values(&TokenRow::new(tenant, token.clone(), now))
                    .execute(conn)
                    .await
                    .map_err(|error| conflict_as(error, "token"))?;
            }
            let instance: InstanceRow = provisioning_instances::table
                .find(session.instance_id)
                .select(InstanceRow::as_select())
                .first(conn)
                .await?;
            Ok::<_, StoreError>(Ok(MachineInstance::try_from(instance)?))
        })
    }

    /// Records a provisioning callback in one transaction: under the lock
    /// of the instance's callback state, `decide` (normally
    /// `CallbackSequence::resume(last).accept(..)`) judges it against the
    /// last accepted one; an accepted callback is stored with its message
    /// and logged (stage name, `level`, the message or ""). A refusal is
    /// handed back as `Ok(Err(..))` and writes nothing. Concurrent callbacks
    /// of one instance are judged one after the other. An unknown instance
    /// is `NotFound("provisioning instance")`.
    pub async fn record_callback<F, E>(
        &self,
        instance_id: Uuid,
        now: OffsetDateTime,
        decide: F,
        message: Option<String>,
        level: &str,
    ) -> Result<Result<CallbackState, E>, StoreError>
    where
        F: FnOnce(Option<(u8, CallbackStage)>) -> Result<(u8, CallbackStage), E> + Send,
        E: Send,
    {
        let updated_at = DbTime::new(now);
        let id = DbUuid(instance_id);
        write_tx!(self, |conn| {
            let target = callback_states::table.find(id);
            let locked = diesel::update(target)
                .set(callback_states::updated_at.eq(callback_states::updated_at))
                .execute(conn)
                .await?;
            if locked == 0 {
                return Err(StoreError::NotFound(INSTANCE));
            }
            let row: CallbackRow = target.select(CallbackRow::as_select()).first(conn).await?;
            let (seq, stage) = match decide(row.last()?) {
                Ok(next) => next,
                Err(refusal) => return Ok(Err(refusal)),
            };
            diesel::update(target)
                .set((
                    callback_states::last_seq.eq(Some(i64::from(seq))),
                    callback_states::stage.eq(Some(stage.as_str())),
                    callback_states::message.eq(&message),
                    callback_states::updated_at.eq(updated_at),
                ))
                .execute(conn)
                .await?;
            diesel::insert_into(provision_logs::table)
                .values(&LogRow::new(
                    row.tenant_id,
                    instance_id,
                    stage.as_str(),
                    level,
                    message.as_deref().unwrap_or(""),
                    now,
                ))
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(Ok(CallbackState {
                last: Some((seq, stage)),
                message: message.clone(),
                updated_at: updated_at.get(),
            }))
        })
    }

    /// The instance's last accepted callback; `None` for an unknown
    /// instance.
    pub async fn callback_state(
        &self,
        instance_id: Uuid,
    ) -> Result<Option<CallbackState>, StoreError> {
        let row: Option<CallbackRow> = read!(self, |conn| {
            callback_states::table
                .find(DbUuid(instance_id))
                .select(CallbackRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(CallbackRow::into_state).transpose()
    }

    /// Appends a line to the instance's provisioning log (the callbacks log
    /// themselves through [`Store::record_callback`]). `NotFound` when
    /// `tenant` has no such instance.
    pub async fn append_provision_log(
        &self,
        tenant: TenantId,
        instance_id: Uuid,
        stage: &str,
        level: &str,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let row = LogRow::new(tenant_id, instance_id, stage, level, message, now);
        write_tx!(self, |conn| {
            let found: i64 = provisioning_instances::table
                .filter(provisioning_instances::tenant_id.eq(tenant_id))
                .filter(provisioning_instances::id.eq(row.instance_id))
                .count()
                .get_result(conn)
                .await?;
            if found == 0 {
                return Err(StoreError::NotFound(INSTANCE));
            }
            diesel::insert_into(provision_logs::table)
                .values(&row)
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(())
        })
    }

    /// The last `limit` lines of the instance's provisioning log, oldest
    /// first (ties in time broken by id, which grows with insertion), and
    /// how many lines it has in all. The last, not the first: a chatty
    /// machine must not hide how its provisioning ended.
    pub async fn provision_logs(
        &self,
        instance_id: Uuid,
        limit: i64,
    ) -> Result<(Vec<ProvisionLog>, i64), StoreError> {
        let (mut rows, total): (Vec<LogRow>, i64) = read!(self, |conn| {
            let of_instance =
                provision_logs::table.filter(provision_logs::instance_id.eq(DbUuid(instance_id)));
            let rows = of_instance
                .order((provision_logs::at.desc(), provision_logs::id.desc()))
                .limit(limit.max(0))
                .select(LogRow::as_select())
                .load(conn)
                .await?;
            let total: i64 = of_instance.count().get_result(conn).await?;
            Ok::<_, diesel::result::Error>((rows, total))
        })?;
        rows.reverse();
        Ok((rows.into_iter().map(ProvisionLog::from).collect(), total))
    }
}
