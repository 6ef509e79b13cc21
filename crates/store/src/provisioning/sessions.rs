//! Bootstrap sessions and the client certificates issued in them: `/cert`
//! opens a session for a bootstrap token, `/secrets` completes one and uses
//! the token up. `agentry_lifecycle::BootstrapSession` decides both; this
//! file reads what it needs under the right locks and writes its answer.

use agentry_domain::TenantId;
use agentry_lifecycle::{
    ArtifactKind, BootstrapSession, OpenRefusal, ProvisioningPolicy, Readiness, SessionRefusal,
    SessionTerms, TokenRefusal,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use super::instances::{InstanceRow, MachineInstance};
use crate::db::{read, write_tx};
use crate::schema::{
    issued_certificates, one_time_tokens, provisioning_instances, provisioning_sessions,
};
use crate::tenants::conflict_as;
use crate::tokens::{NewToken, TokenPurpose, TokenRecord, TokenRow};
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

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

impl SessionRow {
    fn bootstrap_session(&self) -> BootstrapSession {
        BootstrapSession {
            expires_at: self.expires_at.get(),
            completed_at: self.completed_at.map(DbTime::get),
        }
    }
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

impl From<SessionRefusal> for SessionError {
    fn from(refusal: SessionRefusal) -> Self {
        match refusal {
            SessionRefusal::Expired => SessionError::Expired,
            SessionRefusal::AlreadyComplete => SessionError::AlreadyComplete,
        }
    }
}

/// A session `/cert` opened, with what the caller's `issue` made for it.
#[derive(Debug)]
pub struct OpenedSession<T> {
    pub instance: MachineInstance,
    pub session_id: Uuid,
    pub issued: T,
}

/// Why [`Store::open_bootstrap_session`] opened nothing.
#[derive(Debug, thiserror::Error)]
pub enum OpenSessionError<E> {
    /// No bootstrap token has this hash, or its instance is gone, or the
    /// token cannot be used (`Some` says why). Callers answer all alike.
    #[error("the bootstrap token is invalid")]
    InvalidToken(Option<TokenRefusal>),
    #[error("the bundle and its decryption key are not attached yet")]
    NotReady,
    /// The caller's `issue` refused (a bad CSR, say).
    #[error("the certificate cannot be issued: {0}")]
    Issue(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
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

    /// `/cert` as one command: finds the bootstrap token by its hash, reads
    /// its instance and whether the bundle is attached, and asks
    /// [`BootstrapSession::open`]. If it agrees, `issue` makes the client
    /// certificate for the new session (under the terms the policy gives),
    /// and the session is opened with it as by
    /// [`Store::open_machine_session`]. The token is not used up; nothing is
    /// written unless a session opens.
    pub async fn open_bootstrap_session<T, E>(
        &self,
        token_hash: &[u8; 32],
        policy: &ProvisioningPolicy,
        now: OffsetDateTime,
        issue: impl FnOnce(
            &MachineInstance,
            Uuid,
            &SessionTerms,
        ) -> Result<(NewIssuedCertificate, T), E>,
    ) -> Result<OpenedSession<T>, OpenSessionError<E>> {
        let token = self
            .find_token(TokenPurpose::Bootstrap, token_hash)
            .await?
            .ok_or(OpenSessionError::InvalidToken(None))?;
        let instance = self
            .machine_instance(token.tenant_id, token.subject_id)
            .await?
            .ok_or(OpenSessionError::InvalidToken(None))?;
        let bundle = self
            .artifact(instance.tenant_id, instance.id, ArtifactKind::Bundle)
            .await?;
        let readiness = Readiness {
            bundle_attached: bundle.is_some(),
            decryption_key_attached: instance.decryption_key_sealed.is_some(),
        };
        let terms = BootstrapSession::open(policy, &token.one_time_token(), readiness, now)
            .map_err(|refusal| match refusal {
                OpenRefusal::Token(refusal) => OpenSessionError::InvalidToken(Some(refusal)),
                OpenRefusal::NotReady => OpenSessionError::NotReady,
            })?;
        let session_id = new_id();
        let (certificate, issued) =
            issue(&instance, session_id, &terms).map_err(OpenSessionError::Issue)?;
        let session = NewMachineSession {
            id: session_id,
            instance_id: instance.id,
            tenant_id: instance.tenant_id,
            token_id: token.id,
            expires_at: terms.session.expires_at,
        };
        self.open_machine_session(session, certificate, now).await?;
        Ok(OpenedSession {
            instance,
            session_id,
            issued,
        })
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

    /// The tenant's session `id` (the machine names it when it completes;
    /// the caller checks it belongs to the machine's instance).
    pub async fn machine_session(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<MachineSession>, StoreError> {
        let row: Option<SessionRow> = read!(self, |conn| {
            provisioning_sessions::table
                .filter(provisioning_sessions::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(provisioning_sessions::id.eq(DbUuid(id)))
                .select(SessionRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(MachineSession::from))
    }

    /// Completes a bootstrap session in one transaction: under the session's
    /// row lock and then its bootstrap token's (which every session of the
    /// instance shares), [`BootstrapSession::complete`] judges the two as
    /// they are; if it agrees, the token is used up, the session marked
    /// complete and the download tokens stored (in the session's tenant).
    /// So of the instance's sessions only one ever completes, and of any
    /// number of concurrent callers exactly one succeeds; a refusal writes
    /// nothing.
    pub async fn complete_machine_session(
        &self,
        tenant: TenantId,
        session_id: Uuid,
        now: OffsetDateTime,
        download_tokens: Vec<NewToken>,
    ) -> Result<MachineInstance, SessionError> {
        self.try_complete_machine_session(tenant, session_id, now, download_tokens)
            .await?
    }

    /// [`Store::complete_machine_session`] with its refusals as `Ok(Err(..))`:
    /// each is decided before anything but the no-op locks is written, so
    /// committing then writes nothing.
    async fn try_complete_machine_session(
        &self,
        tenant: TenantId,
        session_id: Uuid,
        now: OffsetDateTime,
        download_tokens: Vec<NewToken>,
    ) -> Result<Result<MachineInstance, SessionError>, StoreError> {
        let (tenant_id, session_id) = (DbUuid(tenant.as_uuid()), DbUuid(session_id));
        write_tx!(self, |conn| {
            let target = provisioning_sessions::table
                .filter(provisioning_sessions::tenant_id.eq(tenant_id))
                .filter(provisioning_sessions::id.eq(session_id));
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
            // Completions of the instance's other sessions queue here.
            let token_target = one_time_tokens::table
                .filter(one_time_tokens::id.eq(session.token_id))
                .filter(one_time_tokens::purpose.eq(TokenPurpose::Bootstrap.as_str()));
            let locked = diesel::update(token_target)
                .set(one_time_tokens::consumed_at.eq(one_time_tokens::consumed_at))
                .execute(conn)
                .await?;
            if locked == 0 {
                return Ok(Err(SessionError::AlreadyComplete));
            }
            let token: TokenRow = token_target
                .select(TokenRow::as_select())
                .first(conn)
                .await?;
            let token = TokenRecord::from(token).one_time_token();
            let completion = match session.bootstrap_session().complete(&token, now) {
                Ok(completion) => completion,
                Err(refusal) => return Ok(Err(SessionError::from(refusal))),
            };
            diesel::update(token_target)
                .set(
                    one_time_tokens::consumed_at
                        .eq(completion.bootstrap_token.consumed_at.map(DbTime::new)),
                )
                .execute(conn)
                .await?;
            diesel::update(target)
                .set(
                    provisioning_sessions::completed_at
                        .eq(completion.session.completed_at.map(DbTime::new)),
                )
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
}
