//! The request guard: extractors that answer "who is calling, and may
//! they?" for every protected route.
//!
//! Credentials come from `Authorization: Bearer ...` or `X-API-Key`. A
//! string starting `agy_` is an API key; anything else is taken for a JWT.
//! On the mTLS listener a client certificate from our CA is a credential
//! too: a provisioning machine's (seed 003), which also lets the agent its
//! instance is bound to read its own state (seed 001).
//! A repeat request does no signature check and no database read: verified
//! tokens, API keys and agent snapshots are cached, and the store's change
//! feed drops whatever a revocation, rotation or lifecycle change made wrong.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use agentry_auth::{ApiKey, ApiKeyKind, Audience, Claims, JwtError, Permission, role_has};
use agentry_domain::{AgentId, ApiKeyRole, TenantId, WorkspaceAction, WorkspaceRole};
use agentry_lifecycle::{Access, AdmissionError, RequestScope};
use agentry_store::{AgentRecord, ApiKeyRecord, IssuedCertificateRecord, NewAuditEvent};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::{AgentSnapshot, AppState};
use crate::tls::PeerCertificates;

/// A credential as presented, before it is checked.
enum Presented {
    ApiKey(String),
    Jwt(String),
}

/// The credential text a request carries: the bearer token, else
/// `X-API-Key`; `None` when absent or empty.
fn credential_text(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let bearer = header("authorization").and_then(|value| {
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
    });
    bearer
        .or_else(|| header("x-api-key"))
        .filter(|credential| !credential.is_empty())
}

fn presented(request: &HttpRequest) -> Option<Presented> {
    let credential = credential_text(request.headers())?;
    Some(if credential.starts_with("agy_") {
        Presented::ApiKey(credential.to_owned())
    } else {
        Presented::Jwt(credential.to_owned())
    })
}

fn state(request: &HttpRequest) -> Result<AppState, ApiError> {
    request
        .app_data::<web::Data<AppState>>()
        .map(|data| data.get_ref().clone())
        .ok_or_else(|| ApiError::internal(&"AppState missing from the app"))
}

fn missing() -> ApiError {
    ApiError::unauthorized(
        "missing_credentials",
        "send an API key or agent token as 'Authorization: Bearer ...'",
    )
}

fn invalid_key() -> ApiError {
    ApiError::unauthorized("invalid_api_key", "the API key is invalid or revoked")
}

fn invalid_token() -> ApiError {
    ApiError::unauthorized("invalid_token", "the token is invalid, expired or revoked")
}

/// Records a refusal of `agent` in the audit trail without delaying the
/// answer; the same refusal again within the minute is not written twice.
fn audit_refusal(state: &AppState, agent: &AgentRecord, reason: &'static str) {
    if !state
        .refusals
        .first_this_minute(agent.id, reason, agentry_store::now())
    {
        return;
    }
    let name = format!("agent:{}", agent.slug);
    state.audit(
        agent.tenant_id,
        NewAuditEvent {
            actor: name.clone(),
            action: "auth.refused".into(),
            target: Some(name),
            outcome: "denied".into(),
            detail: serde_json::json!({ "reason": reason }),
        },
    );
}

/// Looks an API key up, through the cache; a key the database did not know
/// a moment ago is refused without asking it again.
async fn lookup_api_key(state: &AppState, key: &ApiKey) -> Result<ApiKeyRecord, ApiError> {
    let hash = key.hash().0;
    if let Some(record) = state.guard.api_key(&hash) {
        return usable_key(record);
    }
    let now = agentry_store::now();
    if state.guard.is_unknown_api_key(&hash, now) {
        return Err(invalid_key());
    }
    let generation = state.guard.generation();
    let record = state
        .store
        .detached(async move |store| store.find_api_key(&hash).await)
        .await?
        .ok_or_else(|| {
            state.guard.remember_unknown_api_key(hash, now);
            // No tenant to audit it under; the key itself is never logged.
            tracing::info!(kind = ?key.kind(), "refused an API key that does not exist");
            invalid_key()
        })?;
    state
        .guard
        .remember_api_key(generation, hash, record.clone());
    usable_key(record)
}

/// A revoked or expired key reads exactly like an unknown one. Expiry is
/// judged per request, so a cached key stops at its `expires_at`.
fn usable_key(record: ApiKeyRecord) -> Result<ApiKeyRecord, ApiError> {
    if record.usable_at(agentry_store::now()) {
        Ok(record)
    } else {
        Err(invalid_key())
    }
}

/// A caller holding a tenant API key.
#[derive(Debug, Clone)]
pub struct ApiKeyPrincipal {
    pub key_id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub role: ApiKeyRole,
}

impl ApiKeyPrincipal {
    /// 403 unless the key's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if role_has(self.role, permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "permission_denied",
                format!(
                    "a {} key may not do this (needs {})",
                    self.role,
                    permission.as_str()
                ),
            ))
        }
    }

    pub fn actor(&self) -> String {
        format!("api_key:{}", self.key_id)
    }
}

async fn api_key_principal(request: HttpRequest) -> Result<ApiKeyPrincipal, ApiError> {
    let state = state(&request)?;
    let Some(credential) = presented(&request) else {
        return Err(if peer_certificates(&request).is_some() {
            ApiError::forbidden(
                "api_key_required",
                "this endpoint takes a tenant API key, not a client certificate",
            )
        } else {
            missing()
        });
    };
    let key = match credential {
        Presented::Jwt(_) => {
            return Err(ApiError::forbidden(
                "api_key_required",
                "this endpoint takes a tenant API key, not an agent token",
            ));
        }
        Presented::ApiKey(text) => ApiKey::parse(&text)
            .map_err(|error| ApiError::unauthorized("invalid_api_key", error.to_string()))?,
    };
    let record = lookup_api_key(&state, &key).await?;
    let Some(role) = record.role else {
        return Err(ApiError::forbidden(
            "api_key_required",
            "this endpoint takes a tenant API key, not an agent's own key",
        ));
    };
    // A workspace's primary agent holds its tenant's admin role in its own
    // key (docs/api.md), for as long as the agent itself may act.
    if let Some(agent) = record.agent_id {
        let agent = load_agent(&state, record.tenant_id, agent)
            .await?
            .ok_or_else(invalid_key)?;
        Access::for_agent(&agent.record.lifecycle(), agentry_store::now())
            .permits(RequestScope::Other)
            .map_err(ApiError::from)?;
    }
    // After the lookup: only keys that exist get a budget, so made-up keys
    // cannot grow the limiter's map.
    state.api_key_rate.admit(record.id).map_err(|retry_after| {
        ApiError::too_many_requests(
            format!(
                "this API key has used its {} requests a minute (--api-key-rpm)",
                state.settings.api_key_rpm
            ),
            retry_after,
        )
    })?;
    Ok(ApiKeyPrincipal {
        key_id: record.id,
        tenant_id: record.tenant_id,
        role,
    })
}

impl FromRequest for ApiKeyPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(api_key_principal(request.clone()))
    }
}

/// How an agent proved who it is (`agentry-lifecycle` judges it).
pub use agentry_lifecycle::AgentCredential;

/// A caller that is an agent, admitted by its lifecycle state and its rate
/// limit. Admission covers reading its own state; anything more calls
/// [`AgentPrincipal::require_full_access`].
#[derive(Debug, Clone)]
pub struct AgentPrincipal {
    pub agent: Arc<AgentSnapshot>,
    pub credential: AgentCredential,
    pub access: Access,
    pub requests_this_minute: u32,
}

impl AgentPrincipal {
    pub fn record(&self) -> &AgentRecord {
        &self.agent.record
    }

    /// Quarantined agents may only read their own state (DESIGN.md §2),
    /// and a machine certificate only ever does.
    pub fn require_full_access(&self) -> Result<(), ApiError> {
        agentry_lifecycle::full_access(self.access, self.credential).map_err(|error| match error {
            AdmissionError::Denied(denial) => ApiError::from(denial),
            other => ApiError::forbidden("certificate_not_enough", other.to_string()),
        })
    }
}

/// What a verified token is remembered by: its signature segment. Hashing
/// the whole token per request cost a sixth of a `limits/me` (no SHA
/// instructions on the benchmark machine). A signature found in the cache
/// was produced by our key over the header and payload verified with it,
/// and the cache answers with those claims: a forged header or payload
/// carrying a copied signature gets the original token's claims, which
/// only the holder of that token (it is the secret part) could use anyway.
fn token_signature(token: &str) -> Option<&str> {
    token.rsplit_once('.').map(|(_, signature)| signature)
}

async fn verify_jwt(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<Claims, JwtError> {
    let signature = token_signature(token).unwrap_or_default();
    if let Some(claims) = state.guard.token(signature, now) {
        return Ok(claims);
    }
    let token_generation = state.guard.token_generation();
    let verified = state
        .issuer
        .verify(token, &state.keys.ring(), Audience::Agent, now);
    let claims = match verified {
        // A key we have not heard of may be a rotation whose announcement
        // has not reached us yet: reload once and try again.
        Err(JwtError::UnknownKey) if state.keys.may_reload_for_unknown_kid(now) => {
            let store = state.store.clone();
            let keys = state.keys.clone();
            let reloaded = store
                .detached(async move |store| {
                    keys.reload(&store, now)
                        .await
                        .map_err(|error| agentry_store::StoreError::Unavailable(error.to_string()))
                })
                .await;
            if reloaded.is_err() {
                return Err(JwtError::UnknownKey);
            }
            state
                .issuer
                .verify(token, &state.keys.ring(), Audience::Agent, now)?
        }
        other => other?,
    };
    state
        .guard
        .remember_token(token_generation, signature, claims.clone());
    Ok(claims)
}

/// The agent behind an id, through the cache.
async fn load_agent(
    state: &AppState,
    tenant: TenantId,
    id: AgentId,
) -> Result<Option<Arc<AgentSnapshot>>, ApiError> {
    if let Some(snapshot) = state.guard.agent(id) {
        return Ok((snapshot.record.tenant_id == tenant).then_some(snapshot));
    }
    let generation = state.guard.generation();
    let record = state
        .store
        .detached(async move |store| store.find_agent(tenant, id).await)
        .await?;
    let Some(record) = record else {
        return Ok(None);
    };
    let snapshot = Arc::new(state.snapshot(record).await?);
    state
        .guard
        .remember_agent(generation, Arc::clone(&snapshot));
    Ok(Some(snapshot))
}

async fn agent_principal(request: HttpRequest) -> Result<AgentPrincipal, ApiError> {
    let state = state(&request)?;
    let now = agentry_store::now();
    let Some(presented) = presented(&request) else {
        if peer_certificates(&request).is_none() {
            return Err(missing());
        }
        let machine = machine_certificate(request).await?;
        return certified_agent(&state, &machine, now).await;
    };
    let (agent, credential) = match presented {
        Presented::Jwt(token) => {
            let claims = verify_jwt(&state, &token, now).await.map_err(|error| {
                tracing::debug!(%error, "agent token refused");
                invalid_token()
            })?;
            let tenant = TenantId::from_uuid(claims.tid);
            let id = AgentId::from_uuid(claims.sub);
            // An agent of another tenant (or none) looks exactly like a bad token.
            let agent = load_agent(&state, tenant, id)
                .await?
                .ok_or_else(invalid_token)?;
            (agent, AgentCredential::Jwt(claims.epoch))
        }
        Presented::ApiKey(text) => {
            let key = ApiKey::parse(&text)
                .map_err(|error| ApiError::unauthorized("invalid_api_key", error.to_string()))?;
            if key.kind() != ApiKeyKind::Agent {
                return Err(ApiError::forbidden(
                    "agent_credentials_required",
                    "this endpoint takes an agent token or an agent's own API key, not a tenant key",
                ));
            }
            let record = lookup_api_key(&state, &key).await?;
            let id = record.agent_id.ok_or_else(invalid_key)?;
            let agent = load_agent(&state, record.tenant_id, id)
                .await?
                .ok_or_else(invalid_key)?;
            (agent, AgentCredential::ApiKey)
        }
    };
    admit(&state, agent, credential, now)
}

/// The agent bound to the instance of a machine certificate.
async fn certified_agent(
    state: &AppState,
    machine: &MachineCertificate,
    now: OffsetDateTime,
) -> Result<AgentPrincipal, ApiError> {
    machine.require_completed_session(state).await?;
    let instance_id = machine.certificate.instance_id;
    let tenant = machine.certificate.tenant_id;
    let agent_id = state
        .store
        .detached(async move |store| store.machine_instance(instance_id).await)
        .await?
        .and_then(|instance| instance.agent_id)
        .ok_or_else(|| {
            ApiError::forbidden(
                "certificate_not_bound",
                "this machine's instance is not bound to an agent",
            )
        })?;
    let agent = load_agent(state, tenant, agent_id)
        .await?
        .ok_or_else(invalid_certificate)?;
    admit(state, agent, AgentCredential::Certificate, now)
}

/// Admits a known agent: lifecycle first, then the token's epoch, then the
/// rate limit.
fn admit(
    state: &AppState,
    agent: Arc<AgentSnapshot>,
    credential: AgentCredential,
    now: OffsetDateTime,
) -> Result<AgentPrincipal, ApiError> {
    let record = &agent.record;
    let access = match agentry_lifecycle::admit(
        &record.lifecycle(),
        record.credential_epoch,
        credential,
        now,
    ) {
        Ok(access) => access,
        Err(AdmissionError::Denied(denial)) => {
            let refusal = ApiError::from(denial);
            audit_refusal(state, record, refusal.code);
            return Err(refusal);
        }
        Err(_) => {
            audit_refusal(state, record, "revoked_token");
            return Err(invalid_token());
        }
    };
    let requests_this_minute = match state.rate.admit(record.id, agent.enforced.rpm, now) {
        Ok(count) => count,
        Err(limited) => {
            audit_refusal(state, record, "rate_limited");
            return Err(ApiError::too_many_requests(
                limited.to_string(),
                limited.retry_after.whole_seconds().unsigned_abs(),
            ));
        }
    };
    state.sightings.saw(record.tenant_id, record.id, now);
    Ok(AgentPrincipal {
        agent,
        credential,
        access,
        requests_this_minute,
    })
}

impl FromRequest for AgentPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(agent_principal(request.clone()))
    }
}

/// Either kind of caller, for routes both may use.
#[derive(Debug, Clone)]
pub enum Principal {
    ApiKey(ApiKeyPrincipal),
    Agent(AgentPrincipal),
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let is_tenant_key = matches!(
                presented(&request),
                Some(Presented::ApiKey(ref text))
                    if ApiKey::parse(text).is_ok_and(|key| key.kind() != ApiKeyKind::Agent)
            );
            if is_tenant_key {
                api_key_principal(request).await.map(Principal::ApiKey)
            } else {
                agent_principal(request).await.map(Principal::Agent)
            }
        })
    }
}

/// A human (or the primary agent's account) holding a session token of
/// seed 002.
#[derive(Debug, Clone)]
pub struct SessionPrincipal {
    pub user_id: uuid::Uuid,
    pub tenant_id: TenantId,
}

/// The claims of the bearer token, checked for `audience`: for tokens the
/// guard does not cache (sessions, callbacks), which need no database.
/// `absent` is the answer when no credential was sent.
fn bearer_claims(
    request: &HttpRequest,
    audience: Audience,
    absent: impl FnOnce() -> ApiError,
) -> Result<Claims, ApiError> {
    let state = state(request)?;
    let Presented::Jwt(token) = presented(request).ok_or_else(absent)? else {
        return Err(invalid_token());
    };
    state
        .issuer
        .verify(&token, &state.keys.ring(), audience, agentry_store::now())
        .map_err(|_| invalid_token())
}

/// A live session: the token verifies and carries its user's current
/// session epoch (logout and a password change move it on, on every
/// replica at once, since it is read from the database). Sessions are
/// human-paced, so the read costs nothing that matters.
async fn live_session(state: &AppState, claims: Claims) -> Result<SessionPrincipal, ApiError> {
    let user = live_user(state, claims).await?;
    Ok(SessionPrincipal {
        user_id: user.id,
        tenant_id: user.tenant_id,
    })
}

/// The user behind a session, if the session is live: one read that the
/// session check and the caller's role both use.
async fn live_user(
    state: &AppState,
    claims: Claims,
) -> Result<agentry_store::UserRecord, ApiError> {
    let tenant = TenantId::from_uuid(claims.tid);
    let user_id = claims.sub;
    let user = state
        .store
        .detached(async move |store| store.user(tenant, user_id).await)
        .await?;
    match user {
        Some(user) if agentry_lifecycle::token_is_current(claims.epoch, user.session_epoch) => {
            Ok(user)
        }
        _ => Err(invalid_token()),
    }
}

async fn session_principal(request: &HttpRequest) -> Result<SessionPrincipal, ApiError> {
    let claims = bearer_claims(request, Audience::Session, missing)?;
    live_session(&state(request)?, claims).await
}

impl FromRequest for SessionPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { session_principal(&request).await })
    }
}

/// A caller of seed 002's workspace API (Agent United's `/api/v1/agents`,
/// `/api/v1/channels`): a human's or the primary agent's session, or a
/// workspace agent's token or own key.
#[derive(Debug, Clone)]
pub struct WorkspacePrincipal {
    pub tenant_id: TenantId,
    /// The caller's account: a human's, or the primary agent's.
    pub user_id: Option<uuid::Uuid>,
    /// The agent calling, when it is one.
    pub agent_id: Option<AgentId>,
    pub role: WorkspaceRole,
}

impl WorkspacePrincipal {
    /// 403 `insufficient_role` unless the caller's role permits `action`.
    pub fn require(&self, action: WorkspaceAction) -> Result<(), ApiError> {
        if self.role.permits(action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "insufficient_role",
                format!(
                    "a workspace {} may not do this (only the workspace admin manages agents and channels)",
                    self.role
                ),
            ))
        }
    }

    pub fn actor(&self) -> String {
        match (self.agent_id, self.user_id) {
            (Some(agent), _) => format!("agent:{agent}"),
            (None, Some(user)) => format!("user:{user}"),
            (None, None) => "workspace".into(),
        }
    }
}

/// Whether a request to a route both seed 002 and seed 004 serve
/// (`/api/v1/agents...`) is seed 002's: a credential is presented, it is
/// not a tenant API key, and no `X-Bulwark-Tenant` header names a tenant.
/// Everything else (a tenant key, the header, no credential) is seed 004's
/// registry, as before (docs/api.md).
pub(crate) fn is_workspace_request(request: &actix_web::dev::RequestHead) -> bool {
    if request.headers.contains_key("x-bulwark-tenant") {
        return false;
    }
    match credential_text(&request.headers) {
        None => false,
        Some(credential) if credential.starts_with("agy_") => {
            ApiKey::parse(credential).is_ok_and(|key| key.kind() == ApiKeyKind::Agent)
        }
        Some(_) => true,
    }
}

fn workspace_credentials_required() -> ApiError {
    ApiError::forbidden(
        "workspace_credentials_required",
        "this endpoint takes a workspace session, or a token or key of an agent of the workspace",
    )
}

async fn workspace_principal(request: HttpRequest) -> Result<WorkspacePrincipal, ApiError> {
    let state = state(&request)?;
    let instance = state
        .store
        .detached(async move |store| store.instance_tenant().await)
        .await?;
    let role_of = |user: &agentry_store::UserRecord| {
        user.role
            .parse::<WorkspaceRole>()
            .map_err(|error| ApiError::internal(&error))
    };
    if let Ok(claims) = bearer_claims(&request, Audience::Session, missing) {
        let user = live_user(&state, claims).await?;
        let tenant = user.tenant_id;
        if instance != Some(tenant) {
            return Err(workspace_credentials_required());
        }
        return Ok(WorkspacePrincipal {
            tenant_id: tenant,
            user_id: Some(user.id),
            agent_id: user.agent_id,
            role: role_of(&user)?,
        });
    }
    let agent = match agent_principal(request).await {
        Ok(agent) => agent,
        Err(error) if error.code == "agent_credentials_required" => {
            return Err(workspace_credentials_required());
        }
        Err(error) => return Err(error),
    };
    agent.require_full_access()?;
    let (tenant, id) = (agent.record().tenant_id, agent.record().id);
    if instance != Some(tenant) {
        return Err(workspace_credentials_required());
    }
    let user = state
        .store
        .detached(async move |store| store.user_of_agent(tenant, id).await)
        .await?;
    Ok(WorkspacePrincipal {
        tenant_id: tenant,
        user_id: user.as_ref().map(|user| user.id),
        agent_id: Some(id),
        role: match &user {
            Some(user) => role_of(user)?,
            None => WorkspaceRole::Member,
        },
    })
}

impl FromRequest for WorkspacePrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(workspace_principal(request.clone()))
    }
}

/// The certificates the caller presented: from the TLS connection, or put
/// on the request by in-process code (tests); never from a header.
pub(crate) fn peer_certificates(request: &HttpRequest) -> Option<PeerCertificates> {
    request
        .conn_data::<PeerCertificates>()
        .cloned()
        .or_else(|| request.extensions().get::<PeerCertificates>().cloned())
}

fn invalid_certificate() -> ApiError {
    ApiError::unauthorized(
        "invalid_client_certificate",
        "the client certificate is not one this service issued, or it has expired or been revoked",
    )
}

/// A provisioning machine (seed 003) holding a client certificate that
/// chains to our CA, is unexpired, and is one we issued and have not
/// revoked. Which instance it may speak for is the handler's check.
#[derive(Debug, Clone)]
pub struct MachineCertificate {
    pub certificate: IssuedCertificateRecord,
}

impl MachineCertificate {
    /// Beyond `/secrets`, a certificate speaks for its machine only once
    /// its session has handed the secrets out: certificates of sessions
    /// that never completed (a `/cert` called many times) stay powerless.
    pub(crate) async fn require_completed_session(&self, state: &AppState) -> Result<(), ApiError> {
        let session_id = self.certificate.session_id;
        let completed = state
            .store
            .detached(async move |store| store.machine_session(session_id).await)
            .await?
            .is_some_and(|session| session.completed_at.is_some());
        if completed {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "certificate_session_incomplete",
                "this certificate's session has not completed /internal/bootstrap/secrets",
            ))
        }
    }
}

async fn machine_certificate(request: HttpRequest) -> Result<MachineCertificate, ApiError> {
    let state = state(&request)?;
    let presented = peer_certificates(&request).ok_or_else(|| {
        ApiError::unauthorized(
            "client_certificate_required",
            "present the client certificate from /internal/bootstrap/cert over mTLS",
        )
    })?;
    let now = agentry_store::now();
    if let Err(refused) = state.keys.ca().verify(&presented.0, now) {
        tracing::info!(%refused, "refused a client certificate");
        return Err(invalid_certificate());
    }
    let fingerprint = agentry_auth::ca::fingerprint(&presented.0[0]);
    let certificate = state
        .store
        .detached(async move |store| store.certificate_by_fingerprint(&fingerprint).await)
        .await?
        .ok_or_else(invalid_certificate)?;
    if certificate.revoked_at.is_some() || certificate.not_after <= now {
        return Err(invalid_certificate());
    }
    Ok(MachineCertificate { certificate })
}

impl FromRequest for MachineCertificate {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(machine_certificate(request.clone()))
    }
}

/// A provisioning machine holding the callback token `/secrets` gave it.
#[derive(Debug, Clone)]
pub struct CallbackPrincipal {
    pub instance_id: uuid::Uuid,
    pub tenant_id: TenantId,
}

impl FromRequest for CallbackPrincipal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let claims = bearer_claims(&request, Audience::Callback, || {
                ApiError::unauthorized(
                    "missing_credentials",
                    "send the callback_jwt from /internal/bootstrap/secrets as 'Authorization: Bearer ...'",
                )
            })?;
            Ok(CallbackPrincipal {
                instance_id: claims.sub,
                tenant_id: TenantId::from_uuid(claims.tid),
            })
        })
    }
}
